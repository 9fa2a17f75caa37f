//! `cobuy inspect`: a human-readable view of a model, an item's neighbour lists with evidence,
//! and a customer's history summary with due re-purchases.

use std::fmt::Write as _;

use crate::ids::{CustomerIdx, ItemIdx};
use crate::model::store::Manifest;
use crate::model::{Model, NONE, NeighbourLists, SECONDS_PER_DAY, VectorSource};
use crate::rank::buy_again::buy_again;
use crate::rank::request::DEFAULT_UPSELL_MAX_RATIO;
use crate::rank::upsell::upsell;

/// A date for display: calendar date, or `day N` for relative-time models.
pub fn format_time(model: &Model, t: i64) -> String {
    if model.data.time.relative {
        return format!("day {}", t.div_euclid(86_400));
    }
    chrono::DateTime::from_timestamp(t, 0)
        .map_or_else(|| t.to_string(), |d| d.format("%Y-%m-%d").to_string())
}

fn item_label(model: &Model, item: ItemIdx) -> String {
    let title = &model.data.items.titles[item.ix()];
    let id = model.item_id(item);
    if title.is_empty() {
        id.to_owned()
    } else {
        format!("{id} {title}")
    }
}

fn category_of(model: &Model, item: ItemIdx) -> &str {
    match model.data.items.category[item.ix()] {
        NONE => "-",
        c => &model.data.categories.paths[c as usize],
    }
}

/// Model summary.
pub fn summary(model: &Model, manifest: &Manifest) -> String {
    let d = &model.data;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "model {} (built {}, cobuy {})",
        manifest.version, manifest.built_at, manifest.cobuy_version
    );
    let _ = writeln!(
        out,
        "orders {}  items {}  customers {}  categories {}  brands {}",
        d.total_orders,
        d.items.len(),
        d.customers.len(),
        d.categories.paths.len(),
        d.brands.len()
    );
    let _ = writeln!(
        out,
        "time {} .. {}",
        format_time(model, d.time.first_order),
        format_time(model, d.time.last_order)
    );
    let _ = writeln!(
        out,
        "bought-together pairs {}  next-order pairs {}  replenishable items {}",
        d.bought_together.entries.len(),
        d.next_order.entries.len(),
        d.items.replenishable.iter().filter(|&&r| r).count()
    );
    let e = &d.embeddings;
    let count = |source: VectorSource| e.source.iter().filter(|&&s| s == source).count();
    let _ = writeln!(
        out,
        "embeddings dim {}: {} from own orders, {} from basket mates, {} from category; \
         similar items by {:?}",
        e.dim,
        count(VectorSource::Orders),
        count(VectorSource::Baskets),
        count(VectorSource::Category),
        model.similar
    );
    let top: Vec<String> = d
        .popularity
        .top
        .iter()
        .take(5)
        .map(|&i| item_label(model, ItemIdx(i)))
        .collect();
    let _ = writeln!(out, "most popular: {}", top.join("; "));
    for f in &manifest.files {
        let _ = writeln!(
            out,
            "file {} {} bytes xxh3-128 {}",
            f.name, f.bytes, f.xxh3_128
        );
    }
    out
}

fn neighbour_table(
    out: &mut String,
    model: &Model,
    anchor: ItemIdx,
    lists: &NeighbourLists,
    title: &str,
    k: usize,
    pair_stats: bool,
) {
    let _ = writeln!(out, "\n{title} ({} listed)", lists.len_of(anchor));
    let _ = writeln!(
        out,
        "{:>3}  {:<52} {:>7} {:>7} {:>6} {:>6}",
        "#", "item", "score", "support", "conf", "lift"
    );
    for (rank, n) in lists.of(anchor).take(k).enumerate() {
        let (confidence, lift) = model.pair_evidence(anchor, n.support, n.item);
        let lift = if pair_stats {
            format!("{lift:6.1}")
        } else {
            format!("{:>6}", "-")
        };
        let mut label = item_label(model, n.item);
        label.truncate(52);
        let _ = writeln!(
            out,
            "{:>3}  {:<52} {:>7.4} {:>7} {:>6.3} {}",
            rank + 1,
            label,
            n.score,
            n.support,
            confidence,
            lift
        );
    }
}

/// One item: attributes, re-purchase statistics, bought-together and next-order lists.
pub fn item_report(model: &Model, item: ItemIdx, k: usize) -> String {
    let d = &model.data;
    let i = item.ix();
    let stats = &d.repurchase[i];
    let mut out = String::new();
    let _ = writeln!(out, "item {}", item_label(model, item));
    let brand = match d.items.brand[i] {
        NONE => "-",
        b => &d.brands[b as usize],
    };
    let _ = writeln!(
        out,
        "category {}  brand {}  price {:.2}  available {}  orders {}",
        category_of(model, item),
        brand,
        d.items.price[i],
        d.items.available[i],
        d.items.order_count[i]
    );
    let _ = writeln!(
        out,
        "buyers {}  repeat buyers {} ({:.0}%)  median interval {:.1} d  iqr {:.1} d  replenishable {}",
        stats.buyers,
        stats.repeat_buyers,
        100.0 * stats.repeat_share(),
        stats.median_interval_days,
        stats.interval_iqr_days,
        d.items.replenishable[i]
    );
    neighbour_table(
        &mut out,
        model,
        item,
        &d.bought_together,
        "bought together",
        k,
        true,
    );
    neighbour_table(&mut out, model, item, &d.next_order, "next order", k, false);
    let _ = writeln!(
        out,
        "\nsimilar items (embedding: {:?})",
        d.embeddings.source[i]
    );
    if let Some(query) = d.embeddings.of(item) {
        let _ = writeln!(
            out,
            "{:>3}  {:<52} {:>7} {:>9}",
            "#", "item", "cosine", "price"
        );
        let hits = model
            .similar
            .search(&d.embeddings, query, k, &|other: ItemIdx| other != item);
        for (rank, s) in hits.iter().enumerate() {
            let mut label = item_label(model, s.item);
            label.truncate(52);
            let _ = writeln!(
                out,
                "{:>3}  {:<52} {:>7.3} {:>9.2}",
                rank + 1,
                label,
                s.similarity,
                d.items.price[s.item.ix()]
            );
        }
    }
    let _ = writeln!(
        out,
        "\nupsell (pricier, at most {DEFAULT_UPSELL_MAX_RATIO}x)"
    );
    let _ = writeln!(
        out,
        "{:>3}  {:<52} {:>7} {:>9} {:>6}  category",
        "#", "item", "cosine", "price", "ratio"
    );
    for (rank, u) in upsell(model, item, DEFAULT_UPSELL_MAX_RATIO, k, |_| true)
        .iter()
        .enumerate()
    {
        let mut label = item_label(model, u.item);
        label.truncate(52);
        let _ = writeln!(
            out,
            "{:>3}  {:<52} {:>7.3} {:>9.2} {:>6.2}  {}",
            rank + 1,
            label,
            u.similarity,
            d.items.price[u.item.ix()],
            u.price_ratio,
            category_of(model, u.item)
        );
    }
    out
}

/// One customer: history summary and due re-purchases at the model's end time (or `as_of`).
pub fn customer_report(
    model: &Model,
    customer: CustomerIdx,
    as_of: Option<i64>,
    k: usize,
) -> String {
    let d = &model.data;
    let c = customer.ix();
    let as_of = as_of.unwrap_or(d.time.last_order);
    let mut out = String::new();
    let history = d.customers.history(customer);
    let _ = writeln!(
        out,
        "customer {}  orders {}  first {}  last {}  distinct items {}",
        d.customers.ids[c],
        d.customers.orders[c],
        format_time(model, d.customers.first_order[c]),
        format_time(model, d.customers.last_order[c]),
        history.len()
    );
    let mut by_weight: Vec<_> = history.iter().collect();
    by_weight.sort_by(|a, b| b.weight.total_cmp(&a.weight));
    let _ = writeln!(out, "\nhistory (top {k} by time-decayed frequency)");
    let _ = writeln!(
        out,
        "{:<52} {:>9} {:>7} {:>11} {:>9}",
        "item", "purchases", "weight", "last", "interval"
    );
    for h in by_weight.iter().take(k) {
        let mut label = item_label(model, ItemIdx(h.item));
        label.truncate(52);
        let _ = writeln!(
            out,
            "{:<52} {:>9} {:>7.2} {:>11} {:>8.1}d",
            label,
            h.purchases,
            h.weight,
            format_time(model, h.last_purchase),
            h.interval_days
        );
    }
    let _ = writeln!(out, "\nbuy again as of {}", format_time(model, as_of));
    let _ = writeln!(
        out,
        "{:<52} {:>11} {:>9} {:>6} {:>6}",
        "item", "due", "interval", "conf", "score"
    );
    for due in buy_again(model, customer, as_of, 14.0, k) {
        let mut label = item_label(model, due.item);
        label.truncate(52);
        let overdue = (as_of - due.due_at) as f64 / SECONDS_PER_DAY;
        let flag = if overdue > 0.0 {
            format!(" (overdue {overdue:.0} d)")
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "{:<52} {:>11} {:>8.1}d {:>6.2} {:>6.3}{flag}",
            label,
            format_time(model, due.due_at),
            due.interval_days,
            due.confidence,
            due.score
        );
    }
    out
}
