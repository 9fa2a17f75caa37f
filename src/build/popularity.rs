//! Popularity: a recency-weighted order count per item (exponential decay with half-life
//! `recent_half_life_days` before the last order), the overall top list, and the top items of
//! every category including its descendants, for cold start and fallbacks.

use crate::config::BuildConfig;
use crate::ingest::OrderLog;
use crate::model::{CategoryTable, ItemTable, NONE, Popularity, SECONDS_PER_DAY};

const TOP_OVERALL: usize = 1000;

pub fn compute(
    log: &OrderLog,
    items: &ItemTable,
    categories: &CategoryTable,
    end_time: i64,
    cfg: &BuildConfig,
) -> Popularity {
    let rate = std::f64::consts::LN_2 / (cfg.recent_half_life_days as f64 * SECONDS_PER_DAY);
    let mut recent = vec![0.0f64; items.len()];
    for line in &log.lines {
        let t = log.orders[line.order as usize].timestamp;
        recent[line.item as usize] += (-((end_time - t).max(0) as f64) * rate).exp();
    }
    // Ties (and items with no recent orders) fall back to the all-time count.
    let key = |i: usize| (recent[i], items.order_count[i]);
    let better = |a: &u32, b: &u32| {
        let (ra, ca) = key(*a as usize);
        let (rb, cb) = key(*b as usize);
        rb.total_cmp(&ra).then(cb.cmp(&ca)).then(a.cmp(b))
    };
    // Every item is ranked; never-ordered catalog items come last, so category lists (used by
    // upsell and cold start) can still reach them.
    let mut ranked: Vec<u32> = (0..items.len() as u32).collect();
    ranked.sort_unstable_by(better);

    let mut per_category: Vec<Vec<u32>> = vec![Vec::new(); categories.paths.len()];
    for &i in &ranked {
        let leaf = items.category[i as usize];
        if leaf == NONE {
            continue;
        }
        for c in categories.lineage(leaf) {
            let list = &mut per_category[c as usize];
            if list.len() < cfg.top_per_category {
                list.push(i);
            }
        }
    }
    let (offsets, flat) = crate::lists::flatten(per_category);
    ranked.retain(|&i| items.order_count[i as usize] > 0);
    ranked.truncate(TOP_OVERALL);
    Popularity {
        recent: recent.into_iter().map(|r| r as f32).collect(),
        top: ranked,
        top_by_category_offsets: offsets,
        top_by_category: flat,
    }
}
