//! Dataset mappings: which column of a shop's export holds which canonical field, how
//! timestamps and prices are written, and which cleaning rules apply.
//!
//! Two types, as in ripgrep: [`RawMapping`] is what the TOML file (or the flags) said,
//! [`Mapping`] is the validated form the ingest runs on. Validation happens once, up front, so a
//! typo in a format string fails before a single row is read.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::MappingError;

/// A mapping file as written, e.g. `examples/datasets/online_retail.toml`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawMapping {
    pub orders: RawOrderColumns,
    #[serde(default)]
    pub catalog: Option<RawCatalogColumns>,
    #[serde(default)]
    pub cleaning: RawCleaning,
    #[serde(default)]
    pub model: crate::config::BuildConfig,
}

/// Column names of the order-line export.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawOrderColumns {
    pub order_id: String,
    #[serde(default)]
    pub customer_id: Option<String>,
    pub item_id: String,
    pub timestamp: String,
    /// `rfc3339`, `unix`, `unix_ms`, `days` (relative day number), `gap_days` (days since the
    /// customer's previous order, with `order_sequence`), or a chrono format string such as
    /// `%Y-%m-%d %H:%M:%S`. Parquet timestamp columns need no format.
    #[serde(default)]
    pub timestamp_format: Option<String>,
    /// With `gap_days`: the column numbering each customer's orders (1 = first).
    #[serde(default)]
    pub order_sequence: Option<String>,
    #[serde(default)]
    pub quantity: Option<String>,
    #[serde(default)]
    pub price: Option<String>,
    /// `unit` (price of one piece) or `line_total` (quantity times unit price).
    #[serde(default)]
    pub price_is: Option<String>,
    /// Optional item attributes carried on order lines, used when no catalog names the item.
    #[serde(default)]
    pub title: Option<String>,
    /// Field delimiter for CSV; defaults to `,` (`\t` for `.tsv`).
    #[serde(default)]
    pub delimiter: Option<String>,
}

/// Column names of the catalog export.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCatalogColumns {
    pub item_id: String,
    #[serde(default)]
    pub title: Option<String>,
    /// One or more columns forming the category path, broadest first.
    #[serde(default)]
    pub category: Vec<String>,
    #[serde(default)]
    pub brand: Option<String>,
    #[serde(default)]
    pub price: Option<String>,
    #[serde(default)]
    pub available: Option<String>,
    #[serde(default)]
    pub replenishable: Option<String>,
    #[serde(default)]
    pub delimiter: Option<String>,
}

/// Cleaning rules; every field has a production default.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCleaning {
    /// Order ids starting with this marker are cancellations (Online Retail: `C`).
    pub cancel_order_prefix: Option<String>,
    /// Negative quantities offset earlier lines of the same customer and item.
    pub offset_cancellations: bool,
    /// Item codes that are not products (postage, fees, manual adjustments).
    pub non_product_items: Vec<String>,
    pub drop_zero_quantity: bool,
    pub drop_duplicates: bool,
}

impl Default for RawCleaning {
    fn default() -> Self {
        Self {
            cancel_order_prefix: None,
            offset_cancellations: true,
            non_product_items: Vec::new(),
            drop_zero_quantity: true,
            drop_duplicates: true,
        }
    }
}

/// How a timestamp cell is turned into seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum TimestampFormat {
    /// RFC 3339 / ISO 8601 with offset.
    Rfc3339,
    /// Seconds since the Unix epoch.
    UnixSeconds,
    /// Milliseconds since the Unix epoch.
    UnixMillis,
    /// A relative day number (day 0 is arbitrary).
    RelativeDays,
    /// Days since the same customer's previous order; the order sequence column orders them.
    GapDays,
    /// A chrono `strftime` pattern, read as UTC (naive date-times) or midnight (dates).
    Pattern(String),
}

impl TimestampFormat {
    pub fn parse(spec: &str) -> Result<Self, MappingError> {
        let format = match spec {
            "rfc3339" | "iso8601" => Self::Rfc3339,
            "unix" | "unix_seconds" => Self::UnixSeconds,
            "unix_ms" | "unix_millis" => Self::UnixMillis,
            "days" | "relative_days" => Self::RelativeDays,
            "gap_days" => Self::GapDays,
            pattern if pattern.contains('%') => {
                validate_chrono_pattern(pattern)?;
                Self::Pattern(pattern.to_owned())
            }
            other => {
                return Err(MappingError::BadTimestampFormat {
                    format: other.to_owned(),
                    why: "expected rfc3339, unix, unix_ms, days, gap_days or a %-pattern".into(),
                });
            }
        };
        Ok(format)
    }
}

fn validate_chrono_pattern(pattern: &str) -> Result<(), MappingError> {
    use chrono::format::{Item, StrftimeItems};
    let bad = StrftimeItems::new(pattern).any(|item| matches!(item, Item::Error));
    if bad {
        return Err(MappingError::BadTimestampFormat {
            format: pattern.to_owned(),
            why: "not a valid chrono strftime pattern".into(),
        });
    }
    let has_date = ["%Y", "%F", "%D", "%y", "%s"]
        .iter()
        .any(|p| pattern.contains(p));
    if !has_date {
        return Err(MappingError::BadTimestampFormat {
            format: pattern.to_owned(),
            why: "the pattern has no year (%Y, %y, %F, %D or %s)".into(),
        });
    }
    Ok(())
}

/// Whether `price` is per piece or for the whole line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PriceKind {
    Unit,
    LineTotal,
}

/// Validated order columns.
#[derive(Debug, Clone, Serialize)]
pub struct OrderColumns {
    pub order_id: String,
    pub customer_id: Option<String>,
    pub item_id: String,
    pub timestamp: String,
    /// `None` when the source column is a native timestamp (Parquet) and needs no format.
    pub timestamp_format: Option<TimestampFormat>,
    pub order_sequence: Option<String>,
    pub quantity: Option<String>,
    pub price: Option<String>,
    pub price_kind: PriceKind,
    pub title: Option<String>,
    pub delimiter: Option<u8>,
}

/// Validated catalog columns.
#[derive(Debug, Clone, Serialize)]
pub struct CatalogColumns {
    pub item_id: String,
    pub title: Option<String>,
    pub category: Vec<String>,
    pub brand: Option<String>,
    pub price: Option<String>,
    pub available: Option<String>,
    pub replenishable: Option<String>,
    pub delimiter: Option<u8>,
}

/// Validated cleaning rules.
#[derive(Debug, Clone, Serialize)]
pub struct CleaningRules {
    pub cancel_order_prefix: Option<String>,
    pub offset_cancellations: bool,
    pub non_product_items: Vec<String>,
    pub drop_zero_quantity: bool,
    pub drop_duplicates: bool,
}

/// The validated mapping the ingest runs on.
#[derive(Debug, Clone, Serialize)]
pub struct Mapping {
    pub orders: OrderColumns,
    pub catalog: Option<CatalogColumns>,
    pub cleaning: CleaningRules,
    pub model: crate::config::BuildConfig,
}

impl Mapping {
    /// Reads and validates a TOML mapping file.
    pub fn from_file(path: &Path) -> Result<Self, MappingError> {
        let text = std::fs::read_to_string(path).map_err(|source| MappingError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let raw: RawMapping = toml::from_str(&text).map_err(|e| MappingError::Toml {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::validate(raw)
    }

    pub fn validate(raw: RawMapping) -> Result<Self, MappingError> {
        let o = raw.orders;
        let timestamp_format = o
            .timestamp_format
            .as_deref()
            .map(TimestampFormat::parse)
            .transpose()?;
        if timestamp_format == Some(TimestampFormat::GapDays) && o.order_sequence.is_none() {
            return Err(MappingError::Invalid(
                "orders.timestamp_format = \"gap_days\" needs orders.order_sequence".into(),
            ));
        }
        if timestamp_format == Some(TimestampFormat::GapDays) && o.customer_id.is_none() {
            return Err(MappingError::Invalid(
                "orders.timestamp_format = \"gap_days\" needs orders.customer_id".into(),
            ));
        }
        let price_kind = match o.price_is.as_deref() {
            None | Some("unit") => PriceKind::Unit,
            Some("line_total") => PriceKind::LineTotal,
            Some(other) => {
                return Err(MappingError::Invalid(format!(
                    "orders.price_is = {other:?}: expected \"unit\" or \"line_total\""
                )));
            }
        };
        let orders = OrderColumns {
            order_id: o.order_id,
            customer_id: o.customer_id.filter(|c| !c.is_empty()),
            item_id: o.item_id,
            timestamp: o.timestamp,
            timestamp_format,
            order_sequence: o.order_sequence,
            quantity: o.quantity,
            price: o.price,
            price_kind,
            title: o.title,
            delimiter: parse_delimiter(o.delimiter.as_deref(), "orders.delimiter")?,
        };
        let catalog = raw
            .catalog
            .map(|c| -> Result<CatalogColumns, MappingError> {
                Ok(CatalogColumns {
                    delimiter: parse_delimiter(c.delimiter.as_deref(), "catalog.delimiter")?,
                    item_id: c.item_id,
                    title: c.title,
                    category: c.category,
                    brand: c.brand,
                    price: c.price,
                    available: c.available,
                    replenishable: c.replenishable,
                })
            })
            .transpose()?;
        let c = raw.cleaning;
        let cleaning = CleaningRules {
            cancel_order_prefix: c.cancel_order_prefix.filter(|p| !p.is_empty()),
            offset_cancellations: c.offset_cancellations,
            non_product_items: c.non_product_items,
            drop_zero_quantity: c.drop_zero_quantity,
            drop_duplicates: c.drop_duplicates,
        };
        Ok(Self {
            orders,
            catalog,
            cleaning,
            model: raw.model.validate()?,
        })
    }
}

fn parse_delimiter(spec: Option<&str>, field: &str) -> Result<Option<u8>, MappingError> {
    match spec {
        None => Ok(None),
        Some("\\t") | Some("\t") | Some("tab") => Ok(Some(b'\t')),
        Some(s) if s.len() == 1 => Ok(Some(s.as_bytes()[0])),
        Some(s) => Err(MappingError::Invalid(format!(
            "{field} = {s:?}: expected one ASCII character"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(format: &str) -> RawMapping {
        RawMapping {
            orders: RawOrderColumns {
                order_id: "o".into(),
                item_id: "i".into(),
                timestamp: "t".into(),
                timestamp_format: Some(format.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn timestamp_formats_validate() {
        assert!(Mapping::validate(raw("%Y-%m-%d %H:%M:%S")).is_ok());
        assert!(Mapping::validate(raw("unix")).is_ok());
        let err = Mapping::validate(raw("%Q-%m")).unwrap_err();
        assert!(err.to_string().contains("%Q-%m"), "{err}");
        let err = Mapping::validate(raw("%m/%d")).unwrap_err();
        assert!(err.to_string().contains("no year"), "{err}");
        let err = Mapping::validate(raw("yesterday")).unwrap_err();
        assert!(err.to_string().contains("yesterday"), "{err}");
    }

    #[test]
    fn gap_days_needs_sequence() {
        let err = Mapping::validate(raw("gap_days")).unwrap_err();
        assert!(err.to_string().contains("order_sequence"), "{err}");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let text = "[orders]\norder_id='a'\nitem_id='b'\ntimestamp='c'\ncustomer='d'\n";
        let err = toml::from_str::<RawMapping>(text).unwrap_err();
        assert!(err.to_string().contains("customer"), "{err}");
    }
}
