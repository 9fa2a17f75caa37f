//! Re-purchase statistics per item and history summaries per customer, from one pass over the
//! (customer, item, time) purchase events sorted by customer and item.
//!
//! Purchases of one item by one customer closer than `min_interval_days` are one purchase
//! occasion (a split order is not a re-purchase). The typical interval is the median of the gaps
//! between consecutive occasions, its spread the interquartile range, so consumables (weeks) and
//! durables (no repeats, or years) separate.

use rayon::prelude::*;

use super::baskets::{Baskets, NO_ORDER};
use crate::config::BuildConfig;
use crate::ids::CustomerIdx;
use crate::ingest::{GUEST, OrderLog};
use crate::model::{
    CustomerTable, DueCandidate, HEAVIEST_HISTORY_ITEMS, HistoryEntry, RepeatEntry,
    RepurchaseStats, SECONDS_PER_DAY,
};

/// Median and interquartile range of `values` (reordered in place); NaN when empty.
pub fn median_iqr(values: &mut [f32]) -> (f32, f32) {
    if values.is_empty() {
        return (f32::NAN, f32::NAN);
    }
    values.sort_unstable_by(f32::total_cmp);
    let at = |q: f32| {
        let pos = q * (values.len() - 1) as f32;
        let lo = pos.floor() as usize;
        let hi = pos.ceil() as usize;
        values[lo] + (values[hi] - values[lo]) * (pos - lo as f32)
    };
    (at(0.5), at(0.75) - at(0.25))
}

pub struct HistoryOutput {
    pub repurchase: Vec<RepurchaseStats>,
    /// Next-order repeats / exposures over all items.
    pub next_order_repeat_prior: f32,
    pub customers: CustomerTable,
}

/// Per item: orders holding it that have a next order by the same customer (exposures), and
/// how many of those next orders hold it again (repeats). Both orders' items are sorted.
fn next_order_repeats(baskets: &Baskets) -> (Vec<u32>, Vec<u32>) {
    let mut exposures = vec![0u32; baskets.n_items()];
    let mut repeats = vec![0u32; baskets.n_items()];
    for (order, &next) in baskets.next.iter().enumerate() {
        if next == NO_ORDER {
            continue;
        }
        let following = baskets.order_items(next);
        for &item in baskets.order_items(order as u32) {
            exposures[item as usize] += 1;
            if following.binary_search(&item).is_ok() {
                repeats[item as usize] += 1;
            }
        }
    }
    (exposures, repeats)
}

pub fn compute(
    log: &OrderLog,
    baskets: &Baskets,
    end_time: i64,
    cfg: &BuildConfig,
) -> HistoryOutput {
    let n_items = log.items.len();
    let n_customers = log.customers.len();
    let mut events: Vec<(u32, u32, i64)> = log
        .lines
        .iter()
        .filter_map(|l| {
            let order = log.orders[l.order as usize];
            (order.customer != GUEST).then_some((order.customer, l.item, order.timestamp))
        })
        .collect();
    events.par_sort_unstable();

    let min_gap = (cfg.min_interval_days as f64 * SECONDS_PER_DAY) as i64;
    let decay_rate = std::f64::consts::LN_2 / (cfg.history_half_life_days as f64 * SECONDS_PER_DAY);
    let mut buyers = vec![0u32; n_items];
    let mut repeat_buyers = vec![0u32; n_items];
    let mut item_intervals: Vec<(u32, f32)> = Vec::new();
    let mut history_offsets = vec![0u32; n_customers + 1];
    let mut history: Vec<HistoryEntry> = Vec::new();
    let mut personal: Vec<f32> = Vec::new();

    let mut start = 0;
    while start < events.len() {
        let (customer, item, _) = events[start];
        let mut end = start;
        while end < events.len() && events[end].0 == customer && events[end].1 == item {
            end += 1;
        }
        let times = events[start..end].iter().map(|e| e.2);
        personal.clear();
        let mut occasions = 0u32;
        let mut last: Option<i64> = None;
        let mut weight = 0.0f64;
        for t in times {
            weight += (-(end_time - t).max(0) as f64 * decay_rate).exp();
            match last {
                Some(prev) if t - prev < min_gap => continue,
                Some(prev) => personal.push(((t - prev) as f64 / SECONDS_PER_DAY) as f32),
                None => {}
            }
            occasions += 1;
            last = Some(t);
        }
        buyers[item as usize] += 1;
        if occasions >= 2 {
            repeat_buyers[item as usize] += 1;
            item_intervals.extend(personal.iter().map(|&d| (item, d)));
        }
        let (interval_days, _) = median_iqr(&mut personal);
        history.push(HistoryEntry {
            item,
            purchases: occasions,
            weight: weight as f32,
            last_purchase: events[end - 1].2,
            interval_days,
        });
        history_offsets[customer as usize + 1] = history.len() as u32;
        start = end;
    }
    // Customers without kept purchases inherit the previous offset.
    for c in 1..=n_customers {
        history_offsets[c] = history_offsets[c].max(history_offsets[c - 1]);
    }

    item_intervals.par_sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let (exposures, repeats) = next_order_repeats(baskets);
    let total_exposures: u64 = exposures.iter().map(|&e| e as u64).sum();
    let total_repeats: u64 = repeats.iter().map(|&r| r as u64).sum();
    let next_order_repeat_prior = if total_exposures == 0 {
        0.0
    } else {
        (total_repeats as f64 / total_exposures as f64) as f32
    };
    let mut repurchase: Vec<RepurchaseStats> = (0..n_items)
        .map(|i| RepurchaseStats {
            buyers: buyers[i],
            repeat_buyers: repeat_buyers[i],
            median_interval_days: f32::NAN,
            interval_iqr_days: f32::NAN,
            next_order_exposures: exposures[i],
            next_order_repeats: repeats[i],
        })
        .collect();
    let mut scratch: Vec<f32> = Vec::new();
    for group in item_intervals.chunk_by(|a, b| a.0 == b.0) {
        scratch.clear();
        scratch.extend(group.iter().map(|g| g.1));
        let (median, iqr) = median_iqr(&mut scratch);
        let stats = &mut repurchase[group[0].0 as usize];
        stats.median_interval_days = median;
        stats.interval_iqr_days = iqr;
    }

    let mut customers = CustomerTable {
        ids: log.customers.names().to_vec(),
        orders: vec![0; n_customers],
        order_weight: vec![0.0; n_customers],
        first_order: vec![0; n_customers],
        last_order: vec![0; n_customers],
        history_offsets,
        history,
        last_order_offsets: vec![0; n_customers + 1],
        last_order_items: Vec::new(),
        repeat_offsets: Vec::new(),
        repeat: Vec::new(),
        heaviest_offsets: Vec::new(),
        heaviest: Vec::new(),
        due_offsets: Vec::new(),
        due: Vec::new(),
        neighbour_offsets: Vec::new(),
        neighbour_items: Vec::new(),
    };
    for c in 0..n_customers {
        let orders = baskets.customer_orders(c as u32);
        customers.orders[c] = orders.len() as u32;
        customers.order_weight[c] = orders
            .iter()
            .map(|&o| {
                let age = (end_time - log.orders[o as usize].timestamp).max(0) as f64;
                (-age * decay_rate).exp()
            })
            .sum::<f64>() as f32;
        if let (Some(&first), Some(&last)) = (orders.first(), orders.last()) {
            customers.first_order[c] = log.orders[first as usize].timestamp;
            customers.last_order[c] = log.orders[last as usize].timestamp;
            customers
                .last_order_items
                .extend_from_slice(baskets.order_items(last));
        }
        customers.last_order_offsets[c + 1] = customers.last_order_items.len() as u32;
    }
    let (offsets, entries) = repeat_lists(&customers, &repurchase, next_order_repeat_prior);
    customers.repeat_offsets = offsets;
    customers.repeat = entries;
    let (offsets, entries) = heaviest_lists(&customers);
    customers.heaviest_offsets = offsets;
    customers.heaviest = entries;
    HistoryOutput {
        repurchase,
        next_order_repeat_prior,
        customers,
    }
}

/// Pseudo-purchases of the item's repeat share in a customer's re-purchase confidence.
const PRIOR_PURCHASES: f32 = 2.0;

/// The parts of buy-again (`rank::buy_again`) that do not depend on the request's time, per
/// customer: items that are replenishable or that the customer bought on two days or more;
/// interval = own median after three purchases, half own / half the item's after two, the
/// item's after one; confidence `(purchases − 1 + m·s) / (purchases + m)` with `s` the item's
/// repeat share and `m` = [`PRIOR_PURCHASES`]; spread = max(IQR, interval / 4, 1 day); strength
/// = confidence × ln(2 + decayed frequency). CSR by customer, in history order.
pub fn due_candidates(
    customers: &CustomerTable,
    repurchase: &[RepurchaseStats],
    replenishable: &[bool],
) -> (Vec<u32>, Vec<DueCandidate>) {
    let mut offsets = Vec::with_capacity(customers.len() + 1);
    offsets.push(0u32);
    let mut flat = Vec::new();
    for c in 0..customers.len() {
        for (k, h) in customers.history(CustomerIdx(c as u32)).iter().enumerate() {
            let item = h.item as usize;
            let stats = &repurchase[item];
            let personally_repeated = h.purchases >= 2 && h.interval_days.is_finite();
            if !replenishable.get(item).copied().unwrap_or(false) && !personally_repeated {
                continue;
            }
            let item_interval = stats.median_interval_days;
            let interval = match (
                h.purchases,
                h.interval_days.is_finite(),
                item_interval.is_finite(),
            ) {
                (p, true, _) if p >= 3 => h.interval_days,
                (_, true, true) => 0.5 * (h.interval_days + item_interval),
                (_, true, false) => h.interval_days,
                (_, false, true) => item_interval,
                (_, false, false) => continue,
            }
            .max(1.0);
            let confidence = (h.purchases as f32 - 1.0 + PRIOR_PURCHASES * stats.repeat_share())
                / (h.purchases as f32 + PRIOR_PURCHASES);
            let spread_days = stats.interval_iqr_days.max(0.25 * interval).max(1.0);
            flat.push(DueCandidate {
                entry: k as u32,
                interval_days: interval,
                confidence,
                spread_days,
                strength: confidence * (1.0 + h.weight).ln_1p(),
            });
        }
        offsets.push(flat.len() as u32);
    }
    (offsets, flat)
}

/// Repeat candidates kept per customer, most likely first.
pub const MAX_REPEAT_ITEMS: usize = 200;
/// Pseudo-orders of the item's population rate in the repeat estimate: a customer's own
/// frequency outweighs it after a dozen orders. Chosen with `cobuy eval` (2, 5, 10 and 20 tried;
/// 10 best on both bundled datasets).
pub const REPEAT_PRIOR_ORDERS: f32 = 10.0;
/// Pseudo-exposures shrinking an item's next-order repeat rate towards the rate of all items.
pub const REPEAT_RATE_PRIOR_EXPOSURES: f32 = 10.0;

/// Each customer's history items by the chance their next order holds the item again:
/// `p = (n · f + m · r) / (n + m)`, with `n` the customer's orders, `f` the time-decayed share
/// of them holding the item (the personal frequency of P-TopFreq and TIFU-KNN, Hu et al.,
/// SIGIR 2020), `r` the item's next-order repeat rate over all customers (shrunk, see
/// [`RepurchaseStats::next_order_repeat_rate`]) and `m` = [`REPEAT_PRIOR_ORDERS`]. After one
/// order every item has `f = 1`, and `r` decides which of them come back (milk does, a lamp
/// does not); after many, the customer's own habits do. The top [`MAX_REPEAT_ITEMS`] per
/// customer, most likely first, CSR by customer; computed here because it depends on nothing a
/// request says.
fn repeat_lists(
    customers: &CustomerTable,
    repurchase: &[RepurchaseStats],
    prior: f32,
) -> (Vec<u32>, Vec<RepeatEntry>) {
    let lists: Vec<Vec<RepeatEntry>> = (0..customers.len())
        .into_par_iter()
        .map(|c| {
            let customer = CustomerIdx(c as u32);
            let orders = customers.orders[c] as f32;
            let order_weight = customers.order_weight[c];
            if order_weight <= 0.0 {
                return Vec::new();
            }
            let mut list: Vec<RepeatEntry> = customers
                .history(customer)
                .iter()
                .enumerate()
                .map(|(k, h)| {
                    let share = (h.weight / order_weight).min(1.0);
                    let rate = repurchase[h.item as usize]
                        .next_order_repeat_rate(prior, REPEAT_RATE_PRIOR_EXPOSURES);
                    RepeatEntry {
                        entry: k as u32,
                        probability: (orders * share + REPEAT_PRIOR_ORDERS * rate)
                            / (orders + REPEAT_PRIOR_ORDERS),
                    }
                })
                .collect();
            let likeliest = |a: &RepeatEntry, b: &RepeatEntry| {
                b.probability
                    .total_cmp(&a.probability)
                    .then(a.entry.cmp(&b.entry))
            };
            crate::lists::keep_best(&mut list, MAX_REPEAT_ITEMS, likeliest);
            list
        })
        .collect();
    crate::lists::flatten(lists)
}

/// Each customer's [`HEAVIEST_HISTORY_ITEMS`] heaviest history entries (decayed frequency
/// descending, then item), as history indices, CSR by customer.
fn heaviest_lists(customers: &CustomerTable) -> (Vec<u32>, Vec<u32>) {
    let lists: Vec<Vec<u32>> = (0..customers.len())
        .into_par_iter()
        .map(|c| {
            let history = customers.history(CustomerIdx(c as u32));
            let mut entries: Vec<u32> = (0..history.len() as u32).collect();
            let heaviest =
                |a: &u32, b: &u32| history[*a as usize].heavier_first(&history[*b as usize]);
            crate::lists::keep_best(&mut entries, HEAVIEST_HISTORY_ITEMS, heaviest);
            entries
        })
        .collect();
    crate::lists::flatten(lists)
}

#[cfg(test)]
mod tests {
    use super::{HEAVIEST_HISTORY_ITEMS, heaviest_lists, median_iqr, next_order_repeats};
    use crate::build::baskets::Baskets;
    use crate::ids::CustomerIdx;
    use crate::ids::Interner;
    use crate::ingest::{GUEST, OrderHeader, OrderLine, OrderLog};
    use crate::model::{CustomerTable, HistoryEntry};

    #[test]
    fn next_order_repeats_count_each_order_against_the_same_customers_next() {
        // Customer 0: {0, 1} then {0} then {0, 2}; customer 1: {1} then {2}; a guest: {0}.
        let baskets: [(u32, &[u32]); 6] = [
            (0, &[0, 1]),
            (0, &[0]),
            (0, &[0, 2]),
            (1, &[1]),
            (1, &[2]),
            (GUEST, &[0]),
        ];
        let mut log = OrderLog {
            items: Interner::from_names(vec!["a".into(), "b".into(), "c".into()]),
            customers: Interner::from_names(vec!["x".into(), "y".into()]),
            ..Default::default()
        };
        for (o, (customer, items)) in baskets.iter().enumerate() {
            log.orders.push(OrderHeader {
                customer: *customer,
                timestamp: o as i64 * 86_400,
            });
            log.lines.extend(items.iter().map(|&item| OrderLine {
                order: o as u32,
                item,
                quantity: 1.0,
                unit_price: 1.0,
            }));
        }
        let (exposures, repeats) = next_order_repeats(&Baskets::new(&log));
        // Item 0: in two orders with a next one, both next orders hold it; the guest's and the
        // last order have no next. Item 1: twice exposed, never again. Item 2: never exposed.
        assert_eq!(exposures, [2, 2, 0]);
        assert_eq!(repeats, [2, 0, 0]);
    }

    #[test]
    fn median_and_iqr_interpolate() {
        let (m, iqr) = median_iqr(&mut [7.0, 1.0, 3.0, 5.0]);
        assert_eq!(m, 4.0);
        assert_eq!(iqr, 3.0);
        let (m, iqr) = median_iqr(&mut []);
        assert!(m.is_nan() && iqr.is_nan());
    }

    #[test]
    fn heaviest_lists_keep_the_heaviest_entries_heaviest_first_ties_by_item() {
        // Customer 0: 50 items, weight rising with the item, with items 7 and 3 tied at 100;
        // customer 1: two items; customer 2: none.
        let entry = |item: u32, weight: f32| HistoryEntry {
            item,
            purchases: 1,
            weight,
            last_purchase: 0,
            interval_days: f32::NAN,
        };
        let mut table = CustomerTable {
            history_offsets: vec![0],
            ..Default::default()
        };
        let rows: [Vec<HistoryEntry>; 3] = [
            (0..50)
                .map(|i| entry(i, if i == 3 || i == 7 { 100.0 } else { i as f32 }))
                .collect(),
            vec![entry(4, 0.5), entry(9, 2.0)],
            Vec::new(),
        ];
        for (c, row) in rows.iter().enumerate() {
            table.ids.push(format!("c{c}"));
            table.history.extend_from_slice(row);
            table.history_offsets.push(table.history.len() as u32);
        }
        let (offsets, entries) = heaviest_lists(&table);
        table.heaviest_offsets = offsets;
        table.heaviest = entries;
        let items =
            |c: u32| -> Vec<u32> { table.heaviest(CustomerIdx(c)).map(|h| h.item).collect() };
        let first = items(0);
        assert_eq!(first.len(), HEAVIEST_HISTORY_ITEMS);
        assert_eq!(first[..4], [3, 7, 49, 48]);
        assert!(!first.contains(&0), "the lightest entries are left out");
        assert_eq!(items(1), [9, 4]);
        assert!(items(2).is_empty());
    }
}
