//! Turning cells into typed values: timestamps in seconds, numbers, ids, booleans.
//! Each function returns a short human reason on failure; the caller adds file, line and field.

use std::fmt::Write as _;

use chrono::{DateTime, NaiveDate, NaiveDateTime};

use super::source::Cell;
use crate::mapping::TimestampFormat;

const SECONDS_PER_DAY: f64 = 86_400.0;

/// Seconds since the epoch (or since day 0 for relative formats).
pub fn timestamp_seconds(cell: Cell<'_>, format: Option<&TimestampFormat>) -> Result<i64, String> {
    match (cell, format) {
        (Cell::Null, _) => Err("is empty".into()),
        (Cell::TimeNanos(n), _) => Ok(n.div_euclid(1_000_000_000)),
        (Cell::Int(n), Some(TimestampFormat::UnixMillis)) => Ok(n.div_euclid(1000)),
        (Cell::Int(n), Some(TimestampFormat::RelativeDays | TimestampFormat::GapDays)) => {
            Ok(n * 86_400)
        }
        (Cell::Int(n), Some(TimestampFormat::UnixSeconds) | None) => Ok(n),
        (Cell::Float(x), Some(TimestampFormat::UnixMillis)) => {
            finite(x).map(|x| (x / 1000.0).floor() as i64)
        }
        (Cell::Float(x), Some(TimestampFormat::RelativeDays | TimestampFormat::GapDays)) => {
            finite(x).map(|x| (x * SECONDS_PER_DAY).round() as i64)
        }
        (Cell::Float(x), Some(TimestampFormat::UnixSeconds) | None) => {
            finite(x).map(|x| x.floor() as i64)
        }
        (Cell::Str(s), Some(format)) => parse_text_timestamp(s, format),
        (Cell::Str(s), None) => parse_text_timestamp(s, &TimestampFormat::Rfc3339)
            .or_else(|_| {
                parse_text_timestamp(s, &TimestampFormat::Pattern("%Y-%m-%d %H:%M:%S".into()))
            })
            .map_err(|_| {
                format!(
                    "{s:?} is not RFC 3339 nor `%Y-%m-%d %H:%M:%S`; set orders.timestamp_format"
                )
            }),
        (
            Cell::Int(_) | Cell::Float(_),
            Some(TimestampFormat::Rfc3339 | TimestampFormat::Pattern(_)),
        ) => Err("is a number, but the mapping expects text".into()),
        (Cell::Bool(_), _) => Err("is a boolean, not a time".into()),
    }
}

fn finite(x: f64) -> Result<f64, String> {
    if x.is_finite() {
        Ok(x)
    } else {
        Err(format!("{x} is not a finite number"))
    }
}

fn parse_text_timestamp(s: &str, format: &TimestampFormat) -> Result<i64, String> {
    match format {
        TimestampFormat::Rfc3339 => DateTime::parse_from_rfc3339(s)
            .map(|t| t.timestamp())
            .map_err(|e| format!("{s:?} is not RFC 3339: {e}")),
        TimestampFormat::UnixSeconds
        | TimestampFormat::UnixMillis
        | TimestampFormat::RelativeDays
        | TimestampFormat::GapDays => {
            let x = parse_f64(s)?;
            timestamp_seconds(Cell::Float(x), Some(format))
        }
        TimestampFormat::Pattern(p) => NaiveDateTime::parse_from_str(s, p)
            .map(|t| t.and_utc().timestamp())
            .or_else(|_| {
                NaiveDate::parse_from_str(s, p)
                    .map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc().timestamp())
            })
            .or_else(|_| DateTime::parse_from_str(s, p).map(|t| t.timestamp()))
            .map_err(|e| format!("{s:?} does not match {p:?}: {e}")),
    }
}

pub fn parse_f64(s: &str) -> Result<f64, String> {
    let x: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    finite(x)
}

/// A number cell; `Ok(None)` for empty.
pub fn number(cell: Cell<'_>) -> Result<Option<f64>, String> {
    match cell {
        Cell::Null => Ok(None),
        Cell::Int(n) => Ok(Some(n as f64)),
        Cell::Float(x) => finite(x).map(Some),
        Cell::Str(s) => parse_f64(s).map(Some),
        Cell::Bool(b) => Ok(Some(f64::from(u8::from(b)))),
        Cell::TimeNanos(_) => Err("is a timestamp, not a number".into()),
    }
}

/// An id cell written into `buf` (integers without a fraction: `17850.0` reads as `17850`).
/// Returns `false` for an empty cell.
pub fn id_into(cell: Cell<'_>, buf: &mut String) -> Result<bool, String> {
    buf.clear();
    match cell {
        Cell::Null => return Ok(false),
        Cell::Str(s) => match s.strip_suffix(".0") {
            Some(int) if !int.is_empty() && int.bytes().all(|b| b.is_ascii_digit()) => {
                buf.push_str(int)
            }
            _ => buf.push_str(s),
        },
        Cell::Int(n) => {
            let _ = write!(buf, "{n}");
        }
        Cell::Float(x) if x.fract() == 0.0 && x.abs() < 9.0e15 => {
            let _ = write!(buf, "{}", x as i64);
        }
        Cell::Float(x) => {
            let _ = write!(buf, "{x}");
        }
        Cell::Bool(_) | Cell::TimeNanos(_) => return Err("is not an id".into()),
    }
    Ok(true)
}

/// A boolean cell: true/false, yes/no, 1/0, y/n, in stock/out of stock.
pub fn boolean(cell: Cell<'_>) -> Result<Option<bool>, String> {
    match cell {
        Cell::Null => Ok(None),
        Cell::Bool(b) => Ok(Some(b)),
        Cell::Int(n) => Ok(Some(n != 0)),
        Cell::Float(x) => Ok(Some(x != 0.0)),
        Cell::Str(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "t" | "yes" | "y" | "1" | "1.0" | "in stock" | "in_stock" | "available" => {
                Ok(Some(true))
            }
            "false" | "f" | "no" | "n" | "0" | "0.0" | "out of stock" | "out_of_stock"
            | "unavailable" => Ok(Some(false)),
            _ => Err(format!("{s:?} is not a boolean (true/false, yes/no, 1/0)")),
        },
        Cell::TimeNanos(_) => Err("is a timestamp, not a boolean".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_in_every_format() {
        let pattern = TimestampFormat::Pattern("%Y-%m-%d %H:%M:%S".into());
        assert_eq!(
            timestamp_seconds(Cell::Str("1970-01-02 00:00:01"), Some(&pattern)),
            Ok(86_401)
        );
        let date_only = TimestampFormat::Pattern("%d/%m/%Y".into());
        assert_eq!(
            timestamp_seconds(Cell::Str("02/01/1970"), Some(&date_only)),
            Ok(86_400)
        );
        assert_eq!(
            timestamp_seconds(
                Cell::Str("1970-01-01T01:00:00+01:00"),
                Some(&TimestampFormat::Rfc3339)
            ),
            Ok(0)
        );
        assert_eq!(
            timestamp_seconds(Cell::Str("1700000000"), Some(&TimestampFormat::UnixSeconds)),
            Ok(1_700_000_000)
        );
        assert_eq!(
            timestamp_seconds(
                Cell::Int(1_700_000_000_123),
                Some(&TimestampFormat::UnixMillis)
            ),
            Ok(1_700_000_000)
        );
        assert_eq!(
            timestamp_seconds(Cell::Str("3"), Some(&TimestampFormat::RelativeDays)),
            Ok(3 * 86_400)
        );
        assert_eq!(
            timestamp_seconds(Cell::TimeNanos(5_500_000_000), None),
            Ok(5)
        );
        let err = timestamp_seconds(Cell::Str("2011-13-01 00:00:00"), Some(&pattern)).unwrap_err();
        assert!(err.contains("does not match"), "{err}");
        assert!(timestamp_seconds(Cell::Null, Some(&pattern)).is_err());
    }

    #[test]
    fn ids_normalise_float_integers() {
        let mut buf = String::new();
        assert_eq!(id_into(Cell::Str("17850.0"), &mut buf), Ok(true));
        assert_eq!(buf, "17850");
        assert_eq!(id_into(Cell::Float(12.0), &mut buf), Ok(true));
        assert_eq!(buf, "12");
        assert_eq!(id_into(Cell::Str("85123A"), &mut buf), Ok(true));
        assert_eq!(buf, "85123A");
        assert_eq!(id_into(Cell::Null, &mut buf), Ok(false));
    }

    #[test]
    fn booleans_and_numbers() {
        assert_eq!(boolean(Cell::Str("Yes")), Ok(Some(true)));
        assert_eq!(boolean(Cell::Str("0")), Ok(Some(false)));
        assert!(boolean(Cell::Str("maybe")).is_err());
        assert_eq!(number(Cell::Str("1.0")), Ok(Some(1.0)));
        assert!(number(Cell::Str("abc")).is_err());
        assert!(number(Cell::Str("NaN")).is_err());
    }
}
