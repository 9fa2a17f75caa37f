//! Ingest: streams order and catalog exports through a [`Mapping`] into an [`OrderLog`], the
//! cleaned, interned order lines the model build works on, and counts every row each cleaning
//! rule removed.
//!
//! Memory grows with distinct items, customers and orders plus 16 bytes per kept line, never with
//! the size of the text: rows are parsed one at a time from a streaming [`source::RowSource`].

pub mod cells;
mod clean;
pub mod source;

use std::path::{Path, PathBuf};

use rustc_hash::FxHashSet;
use serde::Serialize;

use crate::error::IngestError;
use crate::ids::Interner;
use crate::mapping::{CatalogColumns, Mapping, PriceKind, TimestampFormat};
use crate::progress::Progress;
use source::{Cell, RowSource};

/// Customer index of a guest order.
pub const GUEST: u32 = u32::MAX;

/// One kept order line. After cleaning there is one line per (order, item).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OrderLine {
    pub order: u32,
    pub item: u32,
    pub quantity: f32,
    /// Price of one piece; NaN when the export has none.
    pub unit_price: f32,
}

/// Who placed an order and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderHeader {
    /// [`GUEST`] for guest orders.
    pub customer: u32,
    /// Seconds since the epoch, or since day 0 for relative-time exports.
    pub timestamp: i64,
}

/// The cleaned order history.
#[derive(Debug, Default)]
pub struct OrderLog {
    pub items: Interner,
    pub customers: Interner,
    pub orders: Vec<OrderHeader>,
    /// Sorted by (order, item); one line per pair; every order has at least one line.
    pub lines: Vec<OrderLine>,
    /// Item titles carried on order lines (e.g. Online Retail's `Description`), by item index.
    pub line_titles: Vec<Option<String>>,
    /// True when timestamps are relative day numbers rather than calendar time.
    pub relative_time: bool,
}

/// One catalog row, by item index.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CatalogEntry {
    pub title: Option<String>,
    /// Category path, broadest first, joined with ` > `.
    pub category: Option<String>,
    pub brand: Option<String>,
    pub price: Option<f32>,
    pub available: Option<bool>,
    pub replenishable: Option<bool>,
}

/// What reading one file did.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct FileReport {
    pub path: PathBuf,
    pub rows: u64,
    pub bytes: u64,
}

/// Rows removed or changed by each cleaning rule.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct CleaningCounts {
    pub rows_read: u64,
    pub bad_rows_skipped: u64,
    pub non_product_lines: u64,
    pub zero_quantity_lines: u64,
    pub negative_price_lines: u64,
    /// Lines of orders carrying the cancellation marker.
    pub cancellation_lines: u64,
    /// Lines with a negative quantity in ordinary orders.
    pub return_lines: u64,
    /// Earlier lines whose whole quantity a cancellation or return offset.
    pub lines_fully_offset: u64,
    /// Cancellations or returns with no earlier purchase of the same customer and item.
    pub unmatched_cancellations: u64,
    pub duplicate_lines: u64,
    /// Lines of the same item in the same order, merged into one.
    pub merged_lines: u64,
    pub guest_lines: u64,
    pub orders_emptied: u64,
    pub kept_lines: u64,
    pub orders: u64,
    pub guest_orders: u64,
    pub customers: u64,
    pub items_in_orders: u64,
    pub catalog_rows: u64,
}

/// Everything the ingest reports.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct IngestReport {
    pub order_files: Vec<FileReport>,
    pub catalog_files: Vec<FileReport>,
    pub counts: CleaningCounts,
    /// The skipped bad rows, as `file:line: field: what` (at most [`MAX_LISTED_BAD_ROWS`]).
    pub bad_rows: Vec<String>,
}

pub const MAX_LISTED_BAD_ROWS: usize = 1000;

/// Ingest options that are not part of the dataset mapping.
#[derive(Debug, Clone, Copy, Default)]
pub struct IngestOptions {
    /// Bad rows to skip (and list) before failing; 0 fails on the first.
    pub max_bad_rows: u64,
}

/// Counts bad rows and decides when to give up.
struct BadRows<'a> {
    max: u64,
    report: &'a mut IngestReport,
}

impl BadRows<'_> {
    fn skip(&mut self, error: IngestError) -> Result<(), IngestError> {
        self.report.counts.bad_rows_skipped += 1;
        let count = self.report.counts.bad_rows_skipped;
        if count > self.max {
            if self.max == 0 {
                return Err(error);
            }
            return Err(IngestError::TooManyBadRows {
                count,
                max: self.max,
                first: Box::new(error),
            });
        }
        tracing::warn!(error = %error, "skipping bad row");
        if self.report.bad_rows.len() < MAX_LISTED_BAD_ROWS {
            self.report.bad_rows.push(error.to_string());
        }
        Ok(())
    }
}

/// Advances to the next readable row, skipping (and counting) unreadable ones; `Ok(false)` at
/// the end.
fn next_row(source: &mut dyn RowSource, bad: &mut BadRows<'_>) -> Result<bool, IngestError> {
    loop {
        match source.advance() {
            Ok(more) => return Ok(more),
            Err(e) => bad.skip(e)?,
        }
    }
}

fn resolve(
    source: &mut dyn RowSource,
    field: &'static str,
    column: &str,
) -> Result<usize, IngestError> {
    source
        .column_index(column)
        .ok_or_else(|| IngestError::UnknownColumn {
            path: source.path().to_path_buf(),
            field,
            column: column.to_owned(),
            available: source.column_names().join(", "),
        })
}

fn resolve_opt(
    source: &mut dyn RowSource,
    field: &'static str,
    column: Option<&str>,
) -> Result<Option<usize>, IngestError> {
    column.map(|c| resolve(source, field, c)).transpose()
}

struct OrderColumnIx {
    order: usize,
    customer: Option<usize>,
    item: usize,
    timestamp: usize,
    sequence: Option<usize>,
    quantity: Option<usize>,
    price: Option<usize>,
    title: Option<usize>,
}

/// A cancellation or return waiting to offset earlier purchases.
#[derive(Debug, Clone, Copy)]
struct Offset {
    customer: u32,
    item: u32,
    quantity: f32,
    timestamp: i64,
}

/// Lines as read, before the whole-history cleaning rules.
#[derive(Default)]
struct RawLog {
    log: OrderLog,
    order_ids: Interner,
    offsets: Vec<Offset>,
    /// For `gap_days` exports: (order sequence, days since the previous order) per order.
    gaps: Vec<(u32, f32)>,
}

/// Reads and cleans order files.
pub fn read_orders(
    paths: &[PathBuf],
    mapping: &Mapping,
    options: IngestOptions,
    progress: &Progress,
    report: &mut IngestReport,
) -> Result<OrderLog, IngestError> {
    let mut raw = RawLog::default();
    raw.log.relative_time = matches!(
        mapping.orders.timestamp_format,
        Some(TimestampFormat::RelativeDays | TimestampFormat::GapDays)
    );
    let non_products = NonProducts::new(&mapping.cleaning.non_product_items);
    for path in paths {
        let file_report = read_order_file(
            path,
            mapping,
            &non_products,
            options,
            progress,
            &mut raw,
            report,
        )?;
        report.order_files.push(file_report);
    }
    let first = paths
        .first()
        .map(PathBuf::as_path)
        .unwrap_or(Path::new("<none>"));
    let log = clean::finish(raw, &mapping.cleaning, &mut report.counts);
    if log.lines.is_empty() {
        return Err(IngestError::Empty {
            path: first.to_path_buf(),
        });
    }
    Ok(log)
}

/// Item codes that are not products: exact codes, or prefixes written as `CODE*`.
struct NonProducts {
    exact: FxHashSet<String>,
    prefixes: Vec<String>,
}

impl NonProducts {
    fn new(codes: &[String]) -> Self {
        let mut exact = FxHashSet::default();
        let mut prefixes = Vec::new();
        for code in codes {
            match code.strip_suffix('*') {
                Some(prefix) => prefixes.push(prefix.to_owned()),
                None => {
                    exact.insert(code.clone());
                }
            }
        }
        Self { exact, prefixes }
    }

    fn contains(&self, item: &str) -> bool {
        self.exact.contains(item) || self.prefixes.iter().any(|p| item.starts_with(p.as_str()))
    }
}

fn read_order_file(
    path: &Path,
    mapping: &Mapping,
    non_products: &NonProducts,
    options: IngestOptions,
    progress: &Progress,
    raw: &mut RawLog,
    report: &mut IngestReport,
) -> Result<FileReport, IngestError> {
    let m = &mapping.orders;
    let mut source = source::open(path, m.delimiter)?;
    let src = source.as_mut();
    let cols = OrderColumnIx {
        order: resolve(src, "orders.order_id", &m.order_id)?,
        customer: resolve_opt(src, "orders.customer_id", m.customer_id.as_deref())?,
        item: resolve(src, "orders.item_id", &m.item_id)?,
        timestamp: resolve(src, "orders.timestamp", &m.timestamp)?,
        sequence: resolve_opt(src, "orders.order_sequence", m.order_sequence.as_deref())?,
        quantity: resolve_opt(src, "orders.quantity", m.quantity.as_deref())?,
        price: resolve_opt(src, "orders.price", m.price.as_deref())?,
        title: resolve_opt(src, "orders.title", m.title.as_deref())?,
    };
    let gap_days = m.timestamp_format == Some(TimestampFormat::GapDays);
    let bar = progress.stage(&format!("read {}", path.display()), source.progress().1);
    let mut bad = BadRows {
        max: options.max_bad_rows,
        report,
    };
    let mut rows = 0u64;
    let mut bufs = RowBuffers::default();
    while next_row(source.as_mut(), &mut bad)? {
        rows += 1;
        if rows.is_multiple_of(65_536) {
            bar.set(source.progress().0);
        }
        let row = match parse_order_row(source.as_ref(), &cols, m, gap_days, &mut bufs) {
            Ok(row) => row,
            Err(e) => {
                bad.skip(e)?;
                continue;
            }
        };
        apply_row_rules(
            raw,
            row,
            &bufs,
            mapping,
            non_products,
            gap_days,
            &mut bad.report.counts,
        );
    }
    bad.report.counts.rows_read += rows;
    let (bytes, _) = source.progress();
    bar.finish(rows);
    Ok(FileReport {
        path: path.to_path_buf(),
        rows,
        bytes,
    })
}

#[derive(Default)]
struct RowBuffers {
    order: String,
    customer: String,
    item: String,
}

struct ParsedRow {
    has_customer: bool,
    timestamp: i64,
    sequence: u32,
    quantity: f64,
    unit_price: Option<f64>,
    title: Option<String>,
}

fn parse_order_row(
    src: &dyn RowSource,
    cols: &OrderColumnIx,
    m: &crate::mapping::OrderColumns,
    gap_days: bool,
    bufs: &mut RowBuffers,
) -> Result<ParsedRow, IngestError> {
    let bad = |field: &str, what: String| IngestError::BadRow {
        path: src.path().to_path_buf(),
        line: src.line(),
        field: field.to_owned(),
        what,
    };
    if !cells::id_into(src.cell(cols.order), &mut bufs.order).map_err(|w| bad(&m.order_id, w))? {
        return Err(bad(&m.order_id, "is empty".into()));
    }
    if !cells::id_into(src.cell(cols.item), &mut bufs.item).map_err(|w| bad(&m.item_id, w))? {
        return Err(bad(&m.item_id, "is empty".into()));
    }
    let has_customer = match cols.customer {
        Some(c) => cells::id_into(src.cell(c), &mut bufs.customer)
            .map_err(|w| bad(m.customer_id.as_deref().unwrap_or_default(), w))?,
        None => false,
    };
    let timestamp = if gap_days {
        // The first order of a customer has no gap: day 0 of that customer.
        match src.cell(cols.timestamp) {
            Cell::Null => 0,
            cell => cells::timestamp_seconds(cell, m.timestamp_format.as_ref())
                .map_err(|w| bad(&m.timestamp, w))?,
        }
    } else {
        cells::timestamp_seconds(src.cell(cols.timestamp), m.timestamp_format.as_ref())
            .map_err(|w| bad(&m.timestamp, w))?
    };
    let sequence = match cols.sequence {
        Some(c) => {
            let field = m.order_sequence.as_deref().unwrap_or_default();
            let x = cells::number(src.cell(c))
                .map_err(|w| bad(field, w))?
                .ok_or_else(|| bad(field, "is empty".into()))?;
            if !(0.0..=u32::MAX as f64).contains(&x) {
                return Err(bad(field, format!("{x} is not an order number")));
            }
            x as u32
        }
        None => 0,
    };
    let quantity = match cols.quantity {
        Some(c) => {
            let field = m.quantity.as_deref().unwrap_or_default();
            cells::number(src.cell(c))
                .map_err(|w| bad(field, w))?
                .unwrap_or(1.0)
        }
        None => 1.0,
    };
    let unit_price = match cols.price {
        Some(c) => {
            let field = m.price.as_deref().unwrap_or_default();
            let price = cells::number(src.cell(c)).map_err(|w| bad(field, w))?;
            match (price, m.price_kind) {
                (Some(p), PriceKind::LineTotal) if quantity != 0.0 => Some(p / quantity.abs()),
                (Some(_), PriceKind::LineTotal) => None,
                (p, PriceKind::Unit) => p,
                (None, _) => None,
            }
        }
        None => None,
    };
    let title = cols.title.and_then(|c| match src.cell(c) {
        Cell::Str(s) => Some(s.to_owned()),
        _ => None,
    });
    Ok(ParsedRow {
        has_customer,
        timestamp,
        sequence,
        quantity,
        unit_price,
        title,
    })
}

fn apply_row_rules(
    raw: &mut RawLog,
    row: ParsedRow,
    bufs: &RowBuffers,
    mapping: &Mapping,
    non_products: &NonProducts,
    gap_days: bool,
    counts: &mut CleaningCounts,
) {
    let rules = &mapping.cleaning;
    if non_products.contains(&bufs.item) {
        counts.non_product_lines += 1;
        return;
    }
    if row.quantity == 0.0 && rules.drop_zero_quantity {
        counts.zero_quantity_lines += 1;
        return;
    }
    let is_cancellation = rules
        .cancel_order_prefix
        .as_deref()
        .is_some_and(|p| bufs.order.starts_with(p));
    if is_cancellation || row.quantity < 0.0 {
        if is_cancellation {
            counts.cancellation_lines += 1;
        } else {
            counts.return_lines += 1;
        }
        if rules.offset_cancellations {
            let customer = if row.has_customer {
                raw.log.customers.intern(&bufs.customer)
            } else {
                GUEST
            };
            let item = raw.log.items.intern(&bufs.item);
            raw.offsets.push(Offset {
                customer,
                item,
                quantity: row.quantity.abs() as f32,
                timestamp: row.timestamp,
            });
        }
        return;
    }
    if row.unit_price.is_some_and(|p| p < 0.0) {
        counts.negative_price_lines += 1;
        return;
    }
    let item = raw.log.items.intern(&bufs.item);
    if let Some(title) = row.title {
        let titles = &mut raw.log.line_titles;
        if titles.len() <= item as usize {
            titles.resize(item as usize + 1, None);
        }
        if titles[item as usize].is_none() {
            titles[item as usize] = Some(title);
        }
    }
    let customer = if row.has_customer {
        raw.log.customers.intern(&bufs.customer)
    } else {
        GUEST
    };
    if customer == GUEST {
        counts.guest_lines += 1;
    }
    let order = raw.order_ids.intern(&bufs.order);
    if order as usize == raw.log.orders.len() {
        raw.log.orders.push(OrderHeader {
            customer,
            timestamp: row.timestamp,
        });
        if gap_days {
            raw.gaps
                .push((row.sequence, (row.timestamp as f64 / 86_400.0) as f32));
        }
    } else {
        // An order's time is its earliest line's.
        let header = &mut raw.log.orders[order as usize];
        header.timestamp = header.timestamp.min(row.timestamp);
    }
    raw.log.lines.push(OrderLine {
        order,
        item,
        quantity: row.quantity as f32,
        unit_price: row.unit_price.map_or(f32::NAN, |p| p as f32),
    });
}

/// Reads a catalog file into entries by item index, interning catalog-only items into `items`.
pub fn read_catalog(
    path: &Path,
    columns: &CatalogColumns,
    items: &mut Interner,
    options: IngestOptions,
    progress: &Progress,
    report: &mut IngestReport,
) -> Result<Vec<Option<CatalogEntry>>, IngestError> {
    let mut source = source::open(path, columns.delimiter)?;
    let src = source.as_mut();
    let id_col = resolve(src, "catalog.item_id", &columns.item_id)?;
    let title_col = resolve_opt(src, "catalog.title", columns.title.as_deref())?;
    let category_cols = columns
        .category
        .iter()
        .map(|c| resolve(src, "catalog.category", c))
        .collect::<Result<Vec<_>, _>>()?;
    let brand_col = resolve_opt(src, "catalog.brand", columns.brand.as_deref())?;
    let price_col = resolve_opt(src, "catalog.price", columns.price.as_deref())?;
    let available_col = resolve_opt(src, "catalog.available", columns.available.as_deref())?;
    let replenishable_col = resolve_opt(
        src,
        "catalog.replenishable",
        columns.replenishable.as_deref(),
    )?;
    let mut entries: Vec<Option<CatalogEntry>> = Vec::new();
    let bar = progress.stage(&format!("read {}", path.display()), source.progress().1);
    let mut bad = BadRows {
        max: options.max_bad_rows,
        report,
    };
    let mut id = String::new();
    let mut rows = 0u64;
    while next_row(source.as_mut(), &mut bad)? {
        rows += 1;
        let src = source.as_ref();
        let bad_cell = |field: &str, what: String| IngestError::BadRow {
            path: src.path().to_path_buf(),
            line: src.line(),
            field: field.to_owned(),
            what,
        };
        let text = |col: Option<usize>| match col.map(|c| src.cell(c)) {
            Some(Cell::Str(s)) => Some(s.to_owned()),
            Some(Cell::Int(n)) => Some(n.to_string()),
            _ => None,
        };
        let parsed = (|| -> Result<Option<CatalogEntry>, IngestError> {
            if !cells::id_into(src.cell(id_col), &mut id)
                .map_err(|w| bad_cell(&columns.item_id, w))?
            {
                return Err(bad_cell(&columns.item_id, "is empty".into()));
            }
            let path_parts: Vec<String> = category_cols
                .iter()
                .filter_map(|&c| text(Some(c)))
                .collect();
            let price = match price_col {
                Some(c) => cells::number(src.cell(c))
                    .map_err(|w| bad_cell(columns.price.as_deref().unwrap_or_default(), w))?,
                None => None,
            };
            let available = match available_col {
                Some(c) => cells::boolean(src.cell(c))
                    .map_err(|w| bad_cell(columns.available.as_deref().unwrap_or_default(), w))?,
                None => None,
            };
            let replenishable = match replenishable_col {
                Some(c) => cells::boolean(src.cell(c)).map_err(|w| {
                    bad_cell(columns.replenishable.as_deref().unwrap_or_default(), w)
                })?,
                None => None,
            };
            Ok(Some(CatalogEntry {
                title: text(title_col),
                category: (!path_parts.is_empty()).then(|| path_parts.join(" > ")),
                brand: text(brand_col),
                price: price.filter(|p| *p >= 0.0).map(|p| p as f32),
                available,
                replenishable,
            }))
        })();
        match parsed {
            Ok(Some(entry)) => {
                let item = items.intern(&id) as usize;
                if entries.len() <= item {
                    entries.resize(item + 1, None);
                }
                entries[item] = Some(entry);
            }
            Ok(None) => {}
            Err(e) => bad.skip(e)?,
        }
        if rows.is_multiple_of(65_536) {
            bar.set(source.progress().0);
        }
    }
    bad.report.counts.catalog_rows += rows;
    bar.finish(rows);
    let (bytes, _) = source.progress();
    bad.report.catalog_files.push(FileReport {
        path: path.to_path_buf(),
        rows,
        bytes,
    });
    Ok(entries)
}
