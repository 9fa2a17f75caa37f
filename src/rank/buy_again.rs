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
use crate::model::{DueCandidate, HistoryEntry, Model, SECONDS_PER_DAY};

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

/// Items of the customer's history that are re-purchasable, best first, at most `limit`. The
/// parts that do not depend on `as_of` (which items, interval, confidence, spread) are
/// precomputed per customer by `build::history::due_candidates`; this adds the timing.
pub fn buy_again(
    model: &Model,
    customer: CustomerIdx,
    as_of: i64,
    horizon_days: f32,
    limit: usize,
) -> Vec<DueItem> {
    let mut due = best_due_items(model, customer, as_of, horizon_days, limit);
    due.sort_unstable_by(best_first);
    due
}

/// The same items as [`buy_again`], in no particular order: for a ranking signal, which needs
/// the best `limit` but not their order.
pub fn best_due_items(
    model: &Model,
    customer: CustomerIdx,
    as_of: i64,
    horizon_days: f32,
    limit: usize,
) -> Vec<DueItem> {
    let customers = &model.data.customers;
    // Sized up front: the row can hold thousands of items, and growing by doubling would copy.
    let mut due: Vec<DueItem> = Vec::with_capacity(customers.due_row(customer).len());
    due.extend(customers.due_candidates(customer).map(|(h, c)| {
        let due_at = due_at(h.last_purchase, c.interval_days);
        let days_to_due = days_to(due_at, as_of);
        let timing = if days_to_due > 0.0 {
            (-0.5 * (days_to_due / c.spread_days).powi(2)).exp()
        } else {
            // Long overdue: the customer may have moved on.
            (days_to_due / (3.0 * c.interval_days)).exp()
        };
        DueItem {
            item: ItemIdx(h.item),
            score: c.strength * (0.25 + 0.75 * timing),
            due_at,
            interval_days: c.interval_days,
            confidence: c.confidence,
            purchases: h.purchases,
            last_purchase: h.last_purchase,
            due_within_horizon: days_to_due <= horizon_days,
        }
    }));
    crate::lists::keep_best_unordered(&mut due, limit, best_first);
    due
}

/// Whether a customer's bought items are due again by `as_of + horizon_days` (what the default
/// purchased-item policy lets through), answered per item: a binary search in the customer's
/// due candidates, which are in history order, so a request pays only for the items it asks
/// about.
#[derive(Debug, Clone, Copy)]
pub struct DueWindow<'m> {
    candidates: &'m [DueCandidate],
    as_of: i64,
    horizon_days: f32,
}

impl<'m> DueWindow<'m> {
    /// No customer: nothing is due.
    pub const NONE: DueWindow<'static> = DueWindow {
        candidates: &[],
        as_of: 0,
        horizon_days: 0.0,
    };

    pub fn new(model: &'m Model, customer: CustomerIdx, as_of: i64, horizon_days: f32) -> Self {
        DueWindow {
            candidates: model.data.customers.due_row(customer),
            as_of,
            horizon_days,
        }
    }

    /// `bought` is entry `entry` of the customer's history.
    pub fn is_due(&self, entry: usize, bought: &HistoryEntry) -> bool {
        self.candidates
            .binary_search_by_key(&entry, |c| c.entry as usize)
            .is_ok_and(|at| {
                let c = &self.candidates[at];
                days_to(due_at(bought.last_purchase, c.interval_days), self.as_of)
                    <= self.horizon_days
            })
    }
}

fn days_to(at: i64, as_of: i64) -> f32 {
    ((at - as_of) as f64 / SECONDS_PER_DAY) as f32
}

/// When an item bought at `last_purchase` is due again, every `interval_days`.
pub(crate) fn due_at(last_purchase: i64, interval_days: f32) -> i64 {
    last_purchase + (interval_days as f64 * SECONDS_PER_DAY) as i64
}

fn best_first(a: &DueItem, b: &DueItem) -> std::cmp::Ordering {
    b.score.total_cmp(&a.score).then(a.item.cmp(&b.item))
}
