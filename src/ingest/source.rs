//! Row sources: one streaming reader per file format behind [`RowSource`], so the ingest logic
//! never knows whether a cell came from CSV text, a JSON value or a typed Parquet column.
//!
//! Memory: CSV and JSON Lines hold one record at a time; Parquet holds the requested columns of
//! one row group at a time.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parquet::basic::{LogicalType, TimeUnit, Type as PhysicalType};
use parquet::column::reader::ColumnReader;
use parquet::data_type::{ByteArray, Int96};
use parquet::file::reader::{FileReader, RowGroupReader};
use parquet::file::serialized_reader::SerializedFileReader;

use crate::error::IngestError;

/// One cell of the current row, borrowed from the source.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell<'a> {
    Null,
    Str(&'a str),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// A native timestamp (Parquet), in nanoseconds since the Unix epoch.
    TimeNanos(i64),
}

/// A streaming reader of rows with named columns.
pub trait RowSource {
    fn path(&self) -> &Path;
    /// The index of column `name`, or `None` if the file has no such column.
    fn column_index(&mut self, name: &str) -> Option<usize>;
    /// Column names, for error messages.
    fn column_names(&self) -> Vec<String>;
    /// Moves to the next row; `Ok(false)` at the end. A malformed row is an error naming its line;
    /// the source stays usable, so the caller may skip it.
    fn advance(&mut self) -> Result<bool, IngestError>;
    fn cell(&self, column: usize) -> Cell<'_>;
    /// The 1-based line of the current row (CSV counts its header as line 1; Parquet rows are
    /// numbered from 1).
    fn line(&self) -> u64;
    /// Work done and total, in the source's own unit (bytes of the file, or rows).
    fn progress(&self) -> (u64, u64);
}

/// Opens `path` by its extension: `.csv`, `.tsv`, `.txt`, `.jsonl`, `.ndjson`, `.parquet`, each
/// optionally `.gz` (not Parquet).
pub fn open(path: &Path, delimiter: Option<u8>) -> Result<Box<dyn RowSource>, IngestError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let (stem, gzipped) = match name.strip_suffix(".gz") {
        Some(stem) => (stem.to_owned(), true),
        None => (name.clone(), false),
    };
    let ext = stem.rsplit('.').next().unwrap_or_default();
    match (ext, gzipped) {
        ("csv" | "txt", _) => Ok(Box::new(CsvSource::open(
            path,
            gzipped,
            delimiter.unwrap_or(b','),
        )?)),
        ("tsv" | "tab", _) => Ok(Box::new(CsvSource::open(
            path,
            gzipped,
            delimiter.unwrap_or(b'\t'),
        )?)),
        ("jsonl" | "ndjson" | "json", _) => Ok(Box::new(JsonLinesSource::open(path, gzipped)?)),
        ("parquet" | "pq", false) => Ok(Box::new(ParquetSource::open(path)?)),
        _ => Err(IngestError::UnsupportedFormat {
            path: path.to_path_buf(),
        }),
    }
}

/// Counts bytes pulled from the file (before decompression), for progress.
struct CountingReader<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// A decompressed byte stream, a counter of the file bytes read so far, and the file size.
type CountedStream = (Box<dyn Read>, Arc<AtomicU64>, u64);

fn open_stream(path: &Path, gzipped: bool) -> Result<CountedStream, IngestError> {
    let file = File::open(path).map_err(|source| IngestError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let count = Arc::new(AtomicU64::new(0));
    let counted = CountingReader {
        inner: BufReader::with_capacity(1 << 16, file),
        count: Arc::clone(&count),
    };
    let reader: Box<dyn Read> = if gzipped {
        // MultiGzDecoder: a concatenated .gz holds several members; GzDecoder stops after one.
        Box::new(flate2::read::MultiGzDecoder::new(counted))
    } else {
        Box::new(counted)
    };
    Ok((reader, count, total))
}

/// CSV or TSV, plain or gzip, with a header row.
pub struct CsvSource {
    path: PathBuf,
    reader: csv::Reader<Box<dyn Read>>,
    header: Vec<String>,
    record: csv::StringRecord,
    line: u64,
    bytes: Arc<AtomicU64>,
    total: u64,
}

impl CsvSource {
    fn open(path: &Path, gzipped: bool, delimiter: u8) -> Result<Self, IngestError> {
        let (stream, bytes, total) = open_stream(path, gzipped)?;
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .has_headers(true)
            .from_reader(stream);
        let header = reader
            .headers()
            .map_err(|e| IngestError::Format {
                path: path.to_path_buf(),
                what: format!("cannot read header: {e}"),
            })?
            .iter()
            .map(|h| h.trim().to_owned())
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            reader,
            header,
            record: csv::StringRecord::new(),
            line: 1,
            bytes,
            total,
        })
    }
}

impl RowSource for CsvSource {
    fn path(&self) -> &Path {
        &self.path
    }

    fn column_index(&mut self, name: &str) -> Option<usize> {
        self.header.iter().position(|h| h == name)
    }

    fn column_names(&self) -> Vec<String> {
        self.header.clone()
    }

    fn advance(&mut self) -> Result<bool, IngestError> {
        match self.reader.read_record(&mut self.record) {
            Ok(more) => {
                self.line = self.record.position().map_or(self.line + 1, |p| p.line());
                Ok(more)
            }
            Err(e) => {
                let line = e.position().map_or(self.line + 1, |p| p.line());
                self.line = line;
                let what = match e.kind() {
                    csv::ErrorKind::UnequalLengths {
                        expected_len, len, ..
                    } => {
                        format!("has {len} fields, the header has {expected_len}")
                    }
                    csv::ErrorKind::Utf8 { .. } => "is not valid UTF-8".to_owned(),
                    _ => e.to_string(),
                };
                Err(IngestError::BadRow {
                    path: self.path.clone(),
                    line,
                    field: "<row>".into(),
                    what,
                })
            }
        }
    }

    fn cell(&self, column: usize) -> Cell<'_> {
        match self.record.get(column) {
            Some(s) if !s.trim().is_empty() => Cell::Str(s.trim()),
            _ => Cell::Null,
        }
    }

    fn line(&self) -> u64 {
        self.line
    }

    fn progress(&self) -> (u64, u64) {
        (self.bytes.load(Ordering::Relaxed), self.total)
    }
}

/// JSON Lines: one object per line; nested values are not read.
pub struct JsonLinesSource {
    path: PathBuf,
    reader: BufReader<Box<dyn Read>>,
    buf: String,
    columns: Vec<String>,
    known: Vec<String>,
    row: serde_json::Map<String, serde_json::Value>,
    line: u64,
    bytes: Arc<AtomicU64>,
    total: u64,
    peeked: Option<serde_json::Map<String, serde_json::Value>>,
}

impl JsonLinesSource {
    fn open(path: &Path, gzipped: bool) -> Result<Self, IngestError> {
        let (stream, bytes, total) = open_stream(path, gzipped)?;
        let mut source = Self {
            path: path.to_path_buf(),
            reader: BufReader::new(stream),
            buf: String::new(),
            columns: Vec::new(),
            known: Vec::new(),
            row: serde_json::Map::new(),
            line: 0,
            bytes,
            total,
            peeked: None,
        };
        // The first object's keys stand for the file's columns, so a mapping typo fails up front.
        if source.read_object()? {
            let first = std::mem::take(&mut source.row);
            source.known = first.keys().cloned().collect();
            source.peeked = Some(first);
        }
        Ok(source)
    }

    fn read_object(&mut self) -> Result<bool, IngestError> {
        loop {
            self.buf.clear();
            let n = self
                .reader
                .read_line(&mut self.buf)
                .map_err(|e| IngestError::BadRow {
                    path: self.path.clone(),
                    line: self.line + 1,
                    field: "<row>".into(),
                    what: e.to_string(),
                })?;
            if n == 0 {
                return Ok(false);
            }
            self.line += 1;
            if self.buf.trim().is_empty() {
                continue;
            }
            self.row = serde_json::from_str(&self.buf).map_err(|e| IngestError::BadRow {
                path: self.path.clone(),
                line: self.line,
                field: "<json>".into(),
                what: format!("not a JSON object: {e}"),
            })?;
            return Ok(true);
        }
    }
}

impl RowSource for JsonLinesSource {
    fn path(&self) -> &Path {
        &self.path
    }

    fn column_index(&mut self, name: &str) -> Option<usize> {
        if !self.known.iter().any(|k| k == name) {
            return None;
        }
        if let Some(i) = self.columns.iter().position(|c| c == name) {
            return Some(i);
        }
        self.columns.push(name.to_owned());
        Some(self.columns.len() - 1)
    }

    fn column_names(&self) -> Vec<String> {
        self.known.clone()
    }

    fn advance(&mut self) -> Result<bool, IngestError> {
        if let Some(first) = self.peeked.take() {
            self.row = first;
            return Ok(true);
        }
        self.read_object()
    }

    fn cell(&self, column: usize) -> Cell<'_> {
        use serde_json::Value;
        match self.columns.get(column).and_then(|name| self.row.get(name)) {
            Some(Value::String(s)) if !s.trim().is_empty() => Cell::Str(s.trim()),
            Some(Value::Number(n)) => n
                .as_i64()
                .map_or_else(|| Cell::Float(n.as_f64().unwrap_or(f64::NAN)), Cell::Int),
            Some(Value::Bool(b)) => Cell::Bool(*b),
            _ => Cell::Null,
        }
    }

    fn line(&self) -> u64 {
        self.line
    }

    fn progress(&self) -> (u64, u64) {
        (self.bytes.load(Ordering::Relaxed), self.total)
    }
}

/// The values of one column of one row group, with `row_to_value[r]` the value index of row
/// `r` (`u32::MAX` for null).
enum ColumnValues {
    Bool(Vec<bool>),
    Int(Vec<i64>),
    Float(Vec<f64>),
    Text(Vec<ByteArray>),
    TimeNanos(Vec<i64>),
}

struct LoadedColumn {
    values: ColumnValues,
    row_to_value: Vec<u32>,
}

/// Parquet, read one row group at a time through the typed column readers (the record API is
/// about 15x slower). Timestamps may be legacy INT96 or INT64 with a TIMESTAMP logical type.
pub struct ParquetSource {
    path: PathBuf,
    reader: SerializedFileReader<File>,
    leaf_names: Vec<String>,
    requested: Vec<usize>,
    loaded: Vec<LoadedColumn>,
    next_row_group: usize,
    rows_in_group: usize,
    row_in_group: usize,
    rows_before_group: u64,
    total_rows: u64,
}

impl ParquetSource {
    fn open(path: &Path) -> Result<Self, IngestError> {
        let file = File::open(path).map_err(|source| IngestError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let reader = SerializedFileReader::new(file).map_err(|e| IngestError::Format {
            path: path.to_path_buf(),
            what: format!("not a readable Parquet file: {e}"),
        })?;
        let meta = reader.metadata();
        let schema = meta.file_metadata().schema_descr();
        let leaf_names = (0..schema.num_columns())
            .map(|i| schema.column(i).path().string())
            .collect();
        let total_rows = u64::try_from(meta.file_metadata().num_rows()).unwrap_or(0);
        Ok(Self {
            path: path.to_path_buf(),
            reader,
            leaf_names,
            requested: Vec::new(),
            loaded: Vec::new(),
            next_row_group: 0,
            rows_in_group: 0,
            row_in_group: 0,
            rows_before_group: 0,
            total_rows,
        })
    }

    fn format_error(&self, what: String) -> IngestError {
        IngestError::Format {
            path: self.path.clone(),
            what,
        }
    }

    fn load_row_group(&mut self, index: usize) -> Result<(), IngestError> {
        let group = self
            .reader
            .get_row_group(index)
            .map_err(|e| self.format_error(format!("row group {index}: {e}")))?;
        let rows = usize::try_from(group.metadata().num_rows()).unwrap_or(0);
        let mut loaded = Vec::with_capacity(self.requested.len());
        for &leaf in &self.requested {
            loaded.push(self.load_column(group.as_ref(), leaf, rows)?);
        }
        self.loaded = loaded;
        self.rows_in_group = rows;
        self.row_in_group = 0;
        Ok(())
    }

    fn load_column(
        &self,
        group: &dyn RowGroupReader,
        leaf: usize,
        rows: usize,
    ) -> Result<LoadedColumn, IngestError> {
        let descr = group.metadata().column(leaf).column_descr_ptr();
        let max_def = descr.max_def_level();
        let name = &self.leaf_names[leaf];
        let reader = group
            .get_column_reader(leaf)
            .map_err(|e| self.format_error(format!("column {name}: {e}")))?;
        let mut def_levels: Vec<i16> = Vec::with_capacity(rows);
        macro_rules! read_all {
            ($reader:expr, $ty:ty) => {{
                let mut reader = $reader;
                let mut values: Vec<$ty> = Vec::with_capacity(rows);
                loop {
                    let defs = if max_def > 0 {
                        Some(&mut def_levels)
                    } else {
                        None
                    };
                    let (records, _, _) = reader
                        .read_records(rows.max(1), defs, None, &mut values)
                        .map_err(|e| self.format_error(format!("column {name}: {e}")))?;
                    if records == 0 {
                        break;
                    }
                }
                values
            }};
        }
        let timestamp_unit = match descr.logical_type_ref() {
            Some(LogicalType::Timestamp(t)) => Some(t.unit),
            _ => None,
        };
        let is_text = descr.physical_type() == PhysicalType::BYTE_ARRAY;
        let values = match reader {
            ColumnReader::BoolColumnReader(r) => ColumnValues::Bool(read_all!(r, bool)),
            ColumnReader::Int32ColumnReader(r) => {
                ColumnValues::Int(read_all!(r, i32).into_iter().map(i64::from).collect())
            }
            ColumnReader::Int64ColumnReader(r) => {
                let raw = read_all!(r, i64);
                match timestamp_unit {
                    Some(TimeUnit::MILLIS) => ColumnValues::TimeNanos(
                        raw.into_iter()
                            .map(|v| v.saturating_mul(1_000_000))
                            .collect(),
                    ),
                    Some(TimeUnit::MICROS) => ColumnValues::TimeNanos(
                        raw.into_iter().map(|v| v.saturating_mul(1_000)).collect(),
                    ),
                    Some(TimeUnit::NANOS) => ColumnValues::TimeNanos(raw),
                    None => ColumnValues::Int(raw),
                }
            }
            ColumnReader::Int96ColumnReader(r) => {
                ColumnValues::TimeNanos(read_all!(r, Int96).iter().map(Int96::to_nanos).collect())
            }
            ColumnReader::FloatColumnReader(r) => {
                ColumnValues::Float(read_all!(r, f32).into_iter().map(f64::from).collect())
            }
            ColumnReader::DoubleColumnReader(r) => ColumnValues::Float(read_all!(r, f64)),
            ColumnReader::ByteArrayColumnReader(r) if is_text => {
                ColumnValues::Text(read_all!(r, ByteArray))
            }
            _ => return Err(self.format_error(format!("column {name}: unsupported Parquet type"))),
        };
        let row_to_value = if max_def > 0 {
            let mut next = 0u32;
            def_levels
                .iter()
                .map(|&d| {
                    if d == max_def {
                        next += 1;
                        next - 1
                    } else {
                        u32::MAX
                    }
                })
                .collect()
        } else {
            (0..rows as u32).collect()
        };
        Ok(LoadedColumn {
            values,
            row_to_value,
        })
    }
}

impl RowSource for ParquetSource {
    fn path(&self) -> &Path {
        &self.path
    }

    fn column_index(&mut self, name: &str) -> Option<usize> {
        let leaf = self.leaf_names.iter().position(|n| n == name)?;
        if let Some(i) = self.requested.iter().position(|&l| l == leaf) {
            return Some(i);
        }
        debug_assert!(
            self.loaded.is_empty(),
            "columns must be requested before the first row"
        );
        self.requested.push(leaf);
        Some(self.requested.len() - 1)
    }

    fn column_names(&self) -> Vec<String> {
        self.leaf_names.clone()
    }

    fn advance(&mut self) -> Result<bool, IngestError> {
        if self.rows_in_group > 0 {
            self.row_in_group += 1;
        }
        while self.row_in_group >= self.rows_in_group {
            if self.next_row_group >= self.reader.num_row_groups() {
                return Ok(false);
            }
            self.rows_before_group += self.rows_in_group as u64;
            let index = self.next_row_group;
            self.next_row_group += 1;
            self.load_row_group(index)?;
        }
        Ok(true)
    }

    fn cell(&self, column: usize) -> Cell<'_> {
        let Some(col) = self.loaded.get(column) else {
            return Cell::Null;
        };
        let v = col.row_to_value[self.row_in_group];
        if v == u32::MAX {
            return Cell::Null;
        }
        let v = v as usize;
        match &col.values {
            ColumnValues::Bool(x) => Cell::Bool(x[v]),
            ColumnValues::Int(x) => Cell::Int(x[v]),
            ColumnValues::Float(x) => Cell::Float(x[v]),
            ColumnValues::TimeNanos(x) => Cell::TimeNanos(x[v]),
            ColumnValues::Text(x) => match std::str::from_utf8(x[v].data()) {
                Ok(s) if !s.trim().is_empty() => Cell::Str(s.trim()),
                Ok(_) => Cell::Null,
                Err(_) => Cell::Str("\u{fffd}"),
            },
        }
    }

    fn line(&self) -> u64 {
        self.rows_before_group + self.row_in_group as u64 + 1
    }

    fn progress(&self) -> (u64, u64) {
        (
            self.rows_before_group + self.row_in_group as u64,
            self.total_rows,
        )
    }
}
