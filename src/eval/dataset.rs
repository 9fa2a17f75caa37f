//! Evaluation datasets cut from an [`OrderLog`]: each customer's baskets in time order, the item
//! and user filters of the protocols, the seeded 72/8/20 user split, and the training logs the
//! model is built from (everything except what is to be predicted).

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::ingest::{GUEST, OrderLog};

/// One order of a customer: its index in the source log, time and distinct items (sorted).
#[derive(Debug, Clone, PartialEq)]
pub struct Basket {
    pub order: u32,
    pub time: i64,
    pub items: Vec<u32>,
}

/// A customer's baskets, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct UserBaskets {
    pub customer: u32,
    pub baskets: Vec<Basket>,
}

/// Per order, its line range in `log.lines` (lines are sorted by order).
pub fn order_line_ranges(log: &OrderLog) -> Vec<std::ops::Range<usize>> {
    let mut ranges = vec![0..0; log.orders.len()];
    let mut start = 0;
    while start < log.lines.len() {
        let order = log.lines[start].order;
        let mut end = start;
        while end < log.lines.len() && log.lines[end].order == order {
            end += 1;
        }
        ranges[order as usize] = start..end;
        start = end;
    }
    ranges
}

/// Every known customer's baskets (guest orders are not users), oldest first; ties in time keep
/// the log's order.
pub fn user_baskets(log: &OrderLog) -> Vec<UserBaskets> {
    let ranges = order_line_ranges(log);
    let mut by_customer: Vec<Vec<u32>> = vec![Vec::new(); log.customers.len()];
    for (o, header) in log.orders.iter().enumerate() {
        if header.customer != GUEST {
            by_customer[header.customer as usize].push(o as u32);
        }
    }
    by_customer
        .into_iter()
        .enumerate()
        .filter(|(_, orders)| !orders.is_empty())
        .map(|(customer, mut orders)| {
            orders.sort_by_key(|&o| (log.orders[o as usize].timestamp, o));
            let baskets = orders
                .into_iter()
                .map(|o| Basket {
                    order: o,
                    time: log.orders[o as usize].timestamp,
                    items: log.lines[ranges[o as usize].clone()]
                        .iter()
                        .map(|l| l.item)
                        .collect(),
                })
                .collect();
            UserBaskets {
                customer: customer as u32,
                baskets,
            }
        })
        .collect()
}

/// Keeps only items found in at least `min_baskets` baskets (over all users), then drops
/// emptied baskets. Returns the per-item keep flags.
pub fn drop_rare_items(users: &mut [UserBaskets], n_items: usize, min_baskets: u32) -> Vec<bool> {
    let mut count = vec![0u32; n_items];
    for u in users.iter() {
        for b in &u.baskets {
            for &i in &b.items {
                count[i as usize] += 1;
            }
        }
    }
    let keep: Vec<bool> = count.iter().map(|&c| c >= min_baskets).collect();
    for u in users.iter_mut() {
        for b in &mut u.baskets {
            b.items.retain(|&i| keep[i as usize]);
        }
        u.baskets.retain(|b| !b.items.is_empty());
    }
    keep
}

/// Users with `min..=max` baskets.
pub fn keep_users(users: &mut Vec<UserBaskets>, min: usize, max: usize) {
    users.retain(|u| (min..=max).contains(&u.baskets.len()));
}

/// Indexes into the user list, by role.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    pub train: Vec<usize>,
    pub validation: Vec<usize>,
    pub test: Vec<usize>,
}

/// Shuffles `0..n` with a seeded ChaCha8 generator and cuts it 72 / 8 / 20.
pub fn split_users(n: usize, seed: u64) -> Split {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let train_end = (n as f64 * 0.72).round() as usize;
    let validation_end = (n as f64 * 0.80).round() as usize;
    Split {
        train: order[..train_end].to_vec(),
        validation: order[train_end..validation_end].to_vec(),
        test: order[validation_end..].to_vec(),
    }
}

/// Bought-together test cases: one random item held out of each basket (2+ items) of the given
/// users, ranked from the rest (at most `max_context` of them); a seeded sample of
/// `max_cases` baskets when there are more. Returns (context, held-out item) pairs.
pub fn bought_together_cases(
    users: &[UserBaskets],
    test: &[usize],
    max_cases: usize,
    max_context: usize,
    seed: u64,
) -> Vec<(Vec<u32>, u32)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut baskets: Vec<&Basket> = test
        .iter()
        .flat_map(|&u| users[u].baskets.iter())
        .filter(|b| b.items.len() >= 2)
        .collect();
    if baskets.len() > max_cases {
        baskets.shuffle(&mut rng);
        baskets.truncate(max_cases);
    }
    baskets
        .into_iter()
        .filter_map(|b| {
            let mut items = b.items.clone();
            items.shuffle(&mut rng);
            let held = items.pop()?;
            items.truncate(max_context);
            Some((items, held))
        })
        .collect()
}

/// A log holding the given baskets (and, optionally, the source's guest orders), with the
/// source's line data for the items `item_kept` lets through. Ids keep their indexes.
pub fn training_log<'a>(
    log: &OrderLog,
    baskets: impl Iterator<Item = &'a Basket>,
    item_kept: &[bool],
    with_guests: bool,
) -> OrderLog {
    let ranges = order_line_ranges(log);
    let mut orders: Vec<u32> = baskets.map(|b| b.order).collect();
    if with_guests {
        orders.extend(
            log.orders
                .iter()
                .enumerate()
                .filter(|(_, h)| h.customer == GUEST)
                .map(|(o, _)| o as u32),
        );
    }
    orders.sort_unstable();
    let mut out = OrderLog {
        items: log.items.clone(),
        customers: log.customers.clone(),
        orders: Vec::with_capacity(orders.len()),
        lines: Vec::new(),
        line_titles: log.line_titles.clone(),
        relative_time: log.relative_time,
    };
    for o in orders {
        let new_order = out.orders.len() as u32;
        let before = out.lines.len();
        out.lines.extend(
            log.lines[ranges[o as usize].clone()]
                .iter()
                .filter(|l| item_kept.get(l.item as usize).copied().unwrap_or(false))
                .map(|l| crate::ingest::OrderLine {
                    order: new_order,
                    ..*l
                }),
        );
        if out.lines.len() > before {
            out.orders.push(log.orders[o as usize]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Interner;
    use crate::ingest::{OrderHeader, OrderLine};

    /// Customer c0: orders at t=3 {0,1}, t=1 {1}, t=2 {2}; guest order {0,2}; c1: one order {1}.
    fn log() -> OrderLog {
        let orders = vec![
            OrderHeader {
                customer: 0,
                timestamp: 3,
            },
            OrderHeader {
                customer: 0,
                timestamp: 1,
            },
            OrderHeader {
                customer: 0,
                timestamp: 2,
            },
            OrderHeader {
                customer: GUEST,
                timestamp: 2,
            },
            OrderHeader {
                customer: 1,
                timestamp: 5,
            },
        ];
        let line = |order, item| OrderLine {
            order,
            item,
            quantity: 1.0,
            unit_price: 1.0,
        };
        OrderLog {
            items: Interner::from_names(vec!["a".into(), "b".into(), "c".into()]),
            customers: Interner::from_names(vec!["x".into(), "y".into()]),
            orders,
            lines: vec![
                line(0, 0),
                line(0, 1),
                line(1, 1),
                line(2, 2),
                line(3, 0),
                line(3, 2),
                line(4, 1),
            ],
            line_titles: vec![None; 3],
            relative_time: false,
        }
    }

    #[test]
    fn bought_together_cases_hold_out_one_item_of_every_multi_item_basket_of_the_test_users() {
        let basket = |order, items: &[u32]| Basket {
            order,
            time: order as i64,
            items: items.to_vec(),
        };
        let users = vec![
            UserBaskets {
                customer: 0,
                baskets: vec![basket(0, &[1, 2, 3]), basket(1, &[4]), basket(2, &[5, 6])],
            },
            UserBaskets {
                customer: 1,
                baskets: vec![basket(3, &[7, 8])],
            },
        ];
        let cases = bought_together_cases(&users, &[0], 100, 10, 7);
        assert_eq!(
            cases.len(),
            2,
            "the one-item basket gives no case, user 1 is not tested"
        );
        for ((context, held), source) in cases.iter().zip([&[1u32, 2, 3][..], &[5, 6]]) {
            let mut all = context.clone();
            all.push(*held);
            all.sort_unstable();
            assert_eq!(
                all, source,
                "the context is the basket less the held-out item"
            );
        }
        let capped = bought_together_cases(&users, &[0, 1], 2, 1, 7);
        assert_eq!(capped.len(), 2, "a seeded sample of max_cases baskets");
        assert!(capped.iter().all(|(context, _)| context.len() == 1));
        assert_eq!(capped, bought_together_cases(&users, &[0, 1], 2, 1, 7));
    }

    #[test]
    fn baskets_are_per_customer_in_time_order_without_guests() {
        let users = user_baskets(&log());
        assert_eq!(users.len(), 2);
        let times: Vec<i64> = users[0].baskets.iter().map(|b| b.time).collect();
        assert_eq!(times, [1, 2, 3]);
        assert_eq!(users[0].baskets[2].items, [0, 1]);
        assert_eq!(users[1].baskets.len(), 1);
    }

    #[test]
    fn rare_items_and_then_emptied_baskets_and_users_are_dropped() {
        let mut users = user_baskets(&log());
        // Item 1 is in 3 user baskets, items 0 and 2 in one each (the guest order does not count).
        let kept = drop_rare_items(&mut users, 3, 2);
        assert_eq!(kept, [false, true, false]);
        assert_eq!(users[0].baskets.len(), 2, "the basket {{2}} emptied");
        assert_eq!(users[0].baskets[1].items, [1]);
        keep_users(&mut users, 2, 50);
        assert_eq!(users.len(), 1);
        keep_users(&mut users, 3, 50);
        assert!(users.is_empty());
    }

    #[test]
    fn split_is_72_8_20_disjoint_and_seeded() {
        let s = split_users(1000, 7);
        assert_eq!(
            (s.train.len(), s.validation.len(), s.test.len()),
            (720, 80, 200)
        );
        let mut all: Vec<usize> = [&s.train[..], &s.validation, &s.test].concat();
        all.sort_unstable();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
        assert_eq!(s, split_users(1000, 7));
        assert_ne!(s.test, split_users(1000, 8).test);
    }

    #[test]
    fn training_log_keeps_chosen_baskets_and_items() {
        let log = log();
        let users = user_baskets(&log);
        // The first two baskets of c0 only, item 2 dropped, guests in.
        let t = training_log(
            &log,
            users[0].baskets[..2].iter(),
            &[true, true, false],
            true,
        );
        // Orders: #1 {1}, #2 {2} → emptied, guest #3 {0, 2} → {0}.
        assert_eq!(t.orders.len(), 2);
        let lines: Vec<(u32, u32)> = t.lines.iter().map(|l| (l.order, l.item)).collect();
        assert_eq!(lines, [(0, 1), (1, 0)]);
        assert_eq!(t.orders[1].customer, GUEST);
        assert_eq!(t.items.len(), 3, "ids keep their indexes");
    }
}
