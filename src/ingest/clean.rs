//! Whole-history cleaning rules that need every line first: relative times from order gaps,
//! duplicate lines, cancellations and returns offsetting earlier purchases, merging repeated
//! lines of one item in one order, and dropping orders left empty.

use rayon::slice::ParallelSliceMut;
use rustc_hash::FxHashMap;

use super::{CleaningCounts, GUEST, OrderHeader, OrderLine, OrderLog, RawLog};
use crate::mapping::CleaningRules;

pub(super) fn finish(
    mut raw: RawLog,
    rules: &CleaningRules,
    counts: &mut CleaningCounts,
) -> OrderLog {
    if !raw.gaps.is_empty() {
        resolve_gap_days(&mut raw.log.orders, &raw.gaps);
    }
    let log = &mut raw.log;
    // Sorting by every field puts exact duplicates side by side.
    log.lines.par_sort_unstable_by(|a, b| {
        (
            a.order,
            a.item,
            a.quantity.to_bits(),
            a.unit_price.to_bits(),
        )
            .cmp(&(
                b.order,
                b.item,
                b.quantity.to_bits(),
                b.unit_price.to_bits(),
            ))
    });
    if rules.drop_duplicates {
        let before = log.lines.len();
        let key = |l: &OrderLine| {
            (
                l.order,
                l.item,
                l.quantity.to_bits(),
                l.unit_price.to_bits(),
            )
        };
        log.lines.dedup_by(|b, a| key(a) == key(b));
        counts.duplicate_lines += (before - log.lines.len()) as u64;
    }
    if !raw.offsets.is_empty() {
        apply_offsets(log, &mut raw.offsets, counts);
    }
    merge_same_item(log, counts);
    drop_empty_orders(log, counts);
    let items_used = {
        let mut seen = vec![false; log.items.len()];
        for line in &log.lines {
            seen[line.item as usize] = true;
        }
        seen.iter().filter(|&&s| s).count()
    };
    log.line_titles.resize(log.items.len(), None);
    counts.kept_lines = log.lines.len() as u64;
    counts.orders = log.orders.len() as u64;
    counts.guest_orders = log.orders.iter().filter(|o| o.customer == GUEST).count() as u64;
    counts.customers = log.customers.len() as u64;
    counts.items_in_orders = items_used as u64;
    raw.log
}

/// `gap_days` exports (Instacart) give each order the days since the customer's previous one;
/// a running sum over the customer's orders in sequence gives a relative day number.
fn resolve_gap_days(orders: &mut [OrderHeader], gaps: &[(u32, f32)]) {
    debug_assert_eq!(orders.len(), gaps.len());
    let mut by_customer: Vec<u32> = (0..orders.len() as u32).collect();
    by_customer.sort_unstable_by_key(|&o| (orders[o as usize].customer, gaps[o as usize].0));
    let mut day = 0.0f64;
    let mut previous_customer = None;
    for &o in &by_customer {
        let customer = orders[o as usize].customer;
        if previous_customer != Some(customer) || customer == GUEST {
            day = 0.0;
            previous_customer = Some(customer);
        } else {
            day += f64::from(gaps[o as usize].1);
        }
        orders[o as usize].timestamp = (day * 86_400.0).round() as i64;
    }
}

/// Each cancellation or return takes its quantity back from the same customer's most recent
/// earlier lines of the same item (Online Retail: a `C` invoice cancels part of an earlier one).
fn apply_offsets(log: &mut OrderLog, offsets: &mut [super::Offset], counts: &mut CleaningCounts) {
    let mut candidates: FxHashMap<(u32, u32), Vec<usize>> = FxHashMap::default();
    for offset in offsets.iter() {
        if offset.customer != GUEST {
            candidates
                .entry((offset.customer, offset.item))
                .or_default();
        }
    }
    for (i, line) in log.lines.iter().enumerate() {
        let customer = log.orders[line.order as usize].customer;
        if let Some(list) = candidates.get_mut(&(customer, line.item)) {
            list.push(i);
        }
    }
    for list in candidates.values_mut() {
        // Newest first: a cancellation most likely refers to the latest purchase.
        list.sort_unstable_by_key(|&i| {
            std::cmp::Reverse(log.orders[log.lines[i].order as usize].timestamp)
        });
    }
    offsets.sort_unstable_by_key(|o| o.timestamp);
    for offset in offsets.iter() {
        let Some(list) = candidates.get(&(offset.customer, offset.item)) else {
            counts.unmatched_cancellations += 1;
            continue;
        };
        let mut remaining = offset.quantity;
        for &i in list {
            if remaining <= 0.0 {
                break;
            }
            let line = &mut log.lines[i];
            if line.quantity <= 0.0 || log.orders[line.order as usize].timestamp > offset.timestamp
            {
                continue;
            }
            let take = remaining.min(line.quantity);
            line.quantity -= take;
            remaining -= take;
            if line.quantity <= 0.0 {
                counts.lines_fully_offset += 1;
            }
        }
        if remaining >= offset.quantity {
            counts.unmatched_cancellations += 1;
        }
    }
    log.lines.retain(|l| l.quantity > 0.0);
}

/// After sorting, lines of one item in one order are adjacent: sum their quantities and keep a
/// quantity-weighted unit price.
fn merge_same_item(log: &mut OrderLog, counts: &mut CleaningCounts) {
    let before = log.lines.len();
    log.lines.dedup_by(|b, a| {
        if a.order != b.order || a.item != b.item {
            return false;
        }
        let total = a.quantity + b.quantity;
        a.unit_price = match (a.unit_price.is_nan(), b.unit_price.is_nan()) {
            (false, false) => (a.unit_price * a.quantity + b.unit_price * b.quantity) / total,
            (true, _) => b.unit_price,
            (false, true) => a.unit_price,
        };
        a.quantity = total;
        true
    });
    counts.merged_lines += (before - log.lines.len()) as u64;
}

/// Orders whose every line was cleaned away are removed and the order indexes compacted.
fn drop_empty_orders(log: &mut OrderLog, counts: &mut CleaningCounts) {
    let mut has_lines = vec![false; log.orders.len()];
    for line in &log.lines {
        has_lines[line.order as usize] = true;
    }
    let mut new_index = vec![u32::MAX; log.orders.len()];
    let mut kept: Vec<OrderHeader> = Vec::with_capacity(log.orders.len());
    for (old, header) in log.orders.iter().enumerate() {
        if has_lines[old] {
            new_index[old] = kept.len() as u32;
            kept.push(*header);
        }
    }
    counts.orders_emptied += (log.orders.len() - kept.len()) as u64;
    for line in &mut log.lines {
        line.order = new_index[line.order as usize];
        debug_assert_ne!(line.order, u32::MAX);
    }
    log.orders = kept;
    debug_assert!(
        log.lines
            .windows(2)
            .all(|w| (w[0].order, w[0].item) < (w[1].order, w[1].item))
    );
}
