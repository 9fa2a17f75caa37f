//! Buy again: which items a customer re-buys, when each is due, and how sure we are.
//!
//! The interval is the customer's own median gap when they bought the item at least three
//! times, a half-half blend with the item's median gap after two purchases, and the item's
//! median gap after one. `due_at = last purchase + interval`. Confidence is a shrunk estimate of
//! the chance this customer buys it again: `(purchases − 1 + m·s) / (purchases + m)` with `s` the
//! item's repeat share among its buyers and `m = 2` pseudo-purchases.
//! Items not yet due are ranked lower, not hidden: the score multiplies the confidence by a
//! timing factor that peaks at the due date.

use crate::ids::{CustomerIdx, ItemIdx};
use crate::model::{Model, SECONDS_PER_DAY};

const PRIOR_PURCHASES: f32 = 2.0;

/// One item the customer may buy again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DueItem {
    pub item: ItemIdx,
    pub score: f32,
    /// When the next purchase is expected, seconds.
    pub due_at: i64,
    pub interval_days: f32,
    pub confidence: f32,
    pub purchases: u32,
    pub last_purchase: i64,
    /// `due_at` falls before `as_of + horizon`.
    pub due_within_horizon: bool,
}

/// Items of the customer's history that are re-purchasable, best first, at most `limit`.
pub fn buy_again(
    model: &Model,
    customer: CustomerIdx,
    as_of: i64,
    horizon_days: f32,
    limit: usize,
) -> Vec<DueItem> {
    let data = &model.data;
    let mut due: Vec<DueItem> = data
        .customers
        .history(customer)
        .iter()
        .filter_map(|h| {
            let item = h.item as usize;
            let stats = &data.repurchase[item];
            let personally_repeated = h.purchases >= 2 && h.interval_days.is_finite();
            if !data.items.replenishable[item] && !personally_repeated {
                return None;
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
                (_, false, false) => return None,
            }
            .max(1.0);
            let share = stats.repeat_share();
            let confidence = (h.purchases as f32 - 1.0 + PRIOR_PURCHASES * share)
                / (h.purchases as f32 + PRIOR_PURCHASES);
            let due_at = h.last_purchase + (interval as f64 * SECONDS_PER_DAY) as i64;
            let days_to_due = ((due_at - as_of) as f64 / SECONDS_PER_DAY) as f32;
            let spread = stats.interval_iqr_days.max(0.25 * interval).max(1.0);
            let timing = if days_to_due > 0.0 {
                (-0.5 * (days_to_due / spread).powi(2)).exp()
            } else {
                // Long overdue: the customer may have moved on.
                (days_to_due / (3.0 * interval)).exp()
            };
            let score = confidence * (0.25 + 0.75 * timing) * (1.0 + h.weight).ln_1p();
            Some(DueItem {
                item: ItemIdx(h.item),
                score,
                due_at,
                interval_days: interval,
                confidence,
                purchases: h.purchases,
                last_purchase: h.last_purchase,
                due_within_horizon: days_to_due <= horizon_days,
            })
        })
        .collect();
    let best_first =
        |a: &DueItem, b: &DueItem| b.score.total_cmp(&a.score).then(a.item.cmp(&b.item));
    if due.len() > limit {
        due.select_nth_unstable_by(limit, best_first);
        due.truncate(limit);
    }
    due.sort_unstable_by(best_first);
    due
}
