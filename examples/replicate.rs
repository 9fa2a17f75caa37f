//! Derives an N-times larger copy of completejourney's transactions for scaling benchmarks:
//! copy k shifts customer, order and item ids by k·10^12, so copies share no baskets, customers
//! or items. Writes INT64 TIMESTAMP(NANOS) (the newer Parquet writer's form; the original is
//! INT96), so a scaling run also exercises that reader path.
//!
//!   cargo run --release --example replicate -- \
//!     ../shared/data/completejourney/transactions.parquet /tmp/cj16.parquet 16

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use cobuy::ingest::source::{self, Cell};
use parquet::data_type::{DoubleType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

const ID_COLUMNS: [&str; 3] = ["household_id", "basket_id", "product_id"];
const SHIFT: i64 = 1_000_000_000_000;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output, copies] = args.as_slice() else {
        bail!("usage: replicate INPUT.parquet OUTPUT.parquet COPIES");
    };
    let copies: i64 = copies.parse().context("COPIES must be a whole number")?;
    let mut src = source::open(&PathBuf::from(input), None)?;
    let names = [
        "household_id",
        "basket_id",
        "product_id",
        "quantity",
        "sales_value",
        "transaction_timestamp",
    ];
    let cols: Vec<usize> = names
        .iter()
        .map(|n| {
            src.column_index(n)
                .with_context(|| format!("no column {n}"))
        })
        .collect::<Result<_, _>>()?;
    let mut ints: [Vec<i64>; 4] = Default::default();
    let mut sales: Vec<f64> = Vec::new();
    let mut times: Vec<i64> = Vec::new();
    while src.advance()? {
        for (k, column) in ints.iter_mut().enumerate() {
            column.push(match src.cell(cols[k]) {
                Cell::Int(v) => v,
                Cell::Float(v) => v as i64,
                _ => 0,
            });
        }
        sales.push(match src.cell(cols[4]) {
            Cell::Float(v) => v,
            _ => 0.0,
        });
        times.push(match src.cell(cols[5]) {
            Cell::TimeNanos(v) => v,
            other => bail!("row {}: timestamp {other:?}", src.line()),
        });
    }
    let schema = Arc::new(parse_message_type(
        "message transactions {
            REQUIRED INT64 household_id;
            REQUIRED INT64 basket_id;
            REQUIRED INT64 product_id;
            REQUIRED INT64 quantity;
            REQUIRED DOUBLE sales_value;
            REQUIRED INT64 transaction_timestamp (TIMESTAMP(NANOS,false));
        }",
    )?);
    let file = std::fs::File::create(output).with_context(|| format!("creating {output}"))?;
    let props = WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .build();
    let mut writer = SerializedFileWriter::new(file, schema, Arc::new(props))?;
    for copy in 0..copies {
        let mut group = writer.next_row_group()?;
        let mut column = 0;
        while let Some(mut col) = group.next_column()? {
            match column {
                0..=2 => {
                    let shifted: Vec<i64> = ints[column].iter().map(|v| v + copy * SHIFT).collect();
                    col.typed::<Int64Type>().write_batch(&shifted, None, None)?;
                }
                3 => {
                    col.typed::<Int64Type>().write_batch(&ints[3], None, None)?;
                }
                4 => {
                    col.typed::<DoubleType>().write_batch(&sales, None, None)?;
                }
                _ => {
                    col.typed::<Int64Type>().write_batch(&times, None, None)?;
                }
            }
            col.close()?;
            column += 1;
        }
        group.close()?;
        eprintln!(
            "wrote copy {}/{copies} ({} rows; ids of {:?} shifted)",
            copy + 1,
            times.len(),
            ID_COLUMNS
        );
    }
    writer.close()?;
    Ok(())
}
