//! Fixture paths and derived fixture files (gzip, Parquet) written from the CSV fixture.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int96, Int96Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn read_csv_rows(path: &Path) -> Vec<Vec<String>> {
    let mut reader = csv::Reader::from_path(path).expect("fixture csv");
    reader
        .records()
        .map(|r| r.expect("fixture row").iter().map(str::to_owned).collect())
        .collect()
}

/// The CSV fixture, gzip-compressed as two concatenated members (real exports do this).
pub fn write_gzip(csv: &Path, out: &Path) {
    let text = std::fs::read_to_string(csv).expect("fixture");
    let (first, second) = text.split_at(text.len() / 2);
    let split = first.rfind('\n').map_or(0, |i| i + 1);
    let (a, b) = (&text[..split], format!("{}{}", &first[split..], second));
    let mut file = std::fs::File::create(out).expect("create gz");
    for part in [a, b.as_str()] {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(part.as_bytes()).expect("gz");
        file.write_all(&enc.finish().expect("gz")).expect("gz");
    }
}

fn int96_from_seconds(seconds: i64) -> Int96 {
    const JULIAN_DAY_OF_EPOCH: i64 = 2_440_588;
    let day = seconds.div_euclid(86_400);
    let nanos_of_day = (seconds.rem_euclid(86_400) * 1_000_000_000) as u64;
    let mut v = Int96::new();
    v.set_data(
        nanos_of_day as u32,
        (nanos_of_day >> 32) as u32,
        (day + JULIAN_DAY_OF_EPOCH) as u32,
    );
    v
}

/// The CSV fixture as Parquet the way old pyarrow wrote completejourney: every column OPTIONAL,
/// the timestamp legacy INT96.
pub fn write_parquet(csv: &Path, out: &Path) {
    let rows = read_csv_rows(csv);
    let schema = Arc::new(
        parse_message_type(
            "message orders {
                OPTIONAL BYTE_ARRAY order (UTF8);
                OPTIONAL BYTE_ARRAY customer (UTF8);
                OPTIONAL BYTE_ARRAY item (UTF8);
                OPTIONAL INT96 time;
                OPTIONAL DOUBLE qty;
                OPTIONAL DOUBLE price;
                OPTIONAL BYTE_ARRAY title (UTF8);
            }",
        )
        .expect("schema"),
    );
    let file = std::fs::File::create(out).expect("create parquet");
    let mut writer =
        SerializedFileWriter::new(file, schema, Arc::new(WriterProperties::builder().build()))
            .expect("writer");
    let mut group = writer.next_row_group().expect("row group");
    let mut column = 0;
    while let Some(mut col) = group.next_column().expect("column") {
        let cells: Vec<&str> = rows.iter().map(|r| r[column].as_str()).collect();
        let defs: Vec<i16> = cells.iter().map(|c| i16::from(!c.is_empty())).collect();
        let present = cells.iter().filter(|c| !c.is_empty());
        match column {
            3 => {
                let values: Vec<Int96> = present
                    .map(|c| {
                        let t = chrono::NaiveDateTime::parse_from_str(c, "%Y-%m-%d %H:%M:%S")
                            .expect("time");
                        int96_from_seconds(t.and_utc().timestamp())
                    })
                    .collect();
                col.typed::<Int96Type>()
                    .write_batch(&values, Some(&defs), None)
                    .expect("write");
            }
            4 | 5 => {
                let values: Vec<f64> = present.map(|c| c.parse().expect("number")).collect();
                col.typed::<DoubleType>()
                    .write_batch(&values, Some(&defs), None)
                    .expect("write");
            }
            _ => {
                let values: Vec<ByteArray> = present.map(|c| ByteArray::from(*c)).collect();
                col.typed::<ByteArrayType>()
                    .write_batch(&values, Some(&defs), None)
                    .expect("write");
            }
        }
        col.close().expect("close column");
        column += 1;
    }
    group.close().expect("close group");
    writer.close().expect("close file");
}
