//! Typed errors, one enum per layer: mapping, ingest, model store, ranking requests.
//!
//! Ingest errors always name the file, the line (1-based, counting the header as line 1 for CSV)
//! and the field, because the person reading them has to find the row in a multi-gigabyte export.

use std::path::PathBuf;

/// A mapping file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    #[error("cannot read mapping {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("mapping {path}: {message}")]
    Toml { path: PathBuf, message: String },
    #[error("bad timestamp format {format:?}: {why}")]
    BadTimestampFormat { format: String, why: String },
    #[error("mapping: {0}")]
    Invalid(String),
}

/// Reading and cleaning order or catalog files.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path}: unsupported file type (expected .csv, .tsv, .jsonl, .ndjson, .parquet, optionally .gz)"
    )]
    UnsupportedFormat { path: PathBuf },
    #[error(
        "{path}: column {column:?} named in the mapping ({field}) is not in the file; columns are: {available}"
    )]
    UnknownColumn {
        path: PathBuf,
        field: &'static str,
        column: String,
        available: String,
    },
    #[error("{path}:{line}: {field}: {what}")]
    BadRow {
        path: PathBuf,
        line: u64,
        field: String,
        what: String,
    },
    #[error("{path}: {what}")]
    Format { path: PathBuf, what: String },
    #[error("too many bad rows ({count} > --max-bad-rows {max}); first: {first}")]
    TooManyBadRows {
        count: u64,
        max: u64,
        first: Box<IngestError>,
    },
    #[error("{path}: no order lines left after cleaning")]
    Empty { path: PathBuf },
    #[error(transparent)]
    Mapping(#[from] MappingError),
}

/// Writing, publishing, loading or verifying a model directory.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no CURRENT model (run `cobuy build` first)")]
    NoCurrent { path: PathBuf },
    #[error("{path}: checksum mismatch (expected {expected}, found {found})")]
    Checksum {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("{path}: cannot decode: {what}")]
    Decode { path: PathBuf, what: String },
    #[error("{path}: cannot encode: {what}")]
    Encode { path: PathBuf, what: String },
    #[error("model {path}: {what}")]
    Invalid { path: PathBuf, what: String },
}

impl StoreError {
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}

/// A request the ranking layer refuses; the server maps it to `INVALID_ARGUMENT`.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RequestError {
    #[error("{field}: {what}")]
    Invalid { field: &'static str, what: String },
}
