//! Index structures over the cleaned order log that every build stage shares: items per order,
//! orders per item, each customer's orders in time order, and each order's successor.

use crate::ingest::{GUEST, OrderLog};

/// No next order.
pub const NO_ORDER: u32 = u32::MAX;

/// CSR indexes over an [`OrderLog`].
#[derive(Debug)]
pub struct Baskets {
    /// `items[order_offsets[o]..order_offsets[o + 1]]` are the items of order `o`, sorted.
    pub order_offsets: Vec<u32>,
    pub items: Vec<u32>,
    /// Orders containing each item, in order-index order.
    pub item_order_offsets: Vec<u32>,
    pub item_orders: Vec<u32>,
    /// The same customer's next order by time, or [`NO_ORDER`] (guests have none).
    pub next: Vec<u32>,
    /// Each customer's orders sorted by time, CSR by customer index.
    pub customer_order_offsets: Vec<u32>,
    pub customer_orders: Vec<u32>,
}

impl Baskets {
    pub fn new(log: &OrderLog) -> Self {
        let n_orders = log.orders.len();
        let n_items = log.items.len();
        let n_customers = log.customers.len();

        let mut order_offsets = vec![0u32; n_orders + 1];
        for line in &log.lines {
            order_offsets[line.order as usize + 1] += 1;
        }
        prefix_sum(&mut order_offsets);
        // Lines are sorted by (order, item), so they already are the CSR values.
        let items: Vec<u32> = log.lines.iter().map(|l| l.item).collect();

        let mut item_order_offsets = vec![0u32; n_items + 1];
        for &item in &items {
            item_order_offsets[item as usize + 1] += 1;
        }
        prefix_sum(&mut item_order_offsets);
        let mut cursor = item_order_offsets.clone();
        let mut item_orders = vec![0u32; items.len()];
        for line in &log.lines {
            let slot = &mut cursor[line.item as usize];
            item_orders[*slot as usize] = line.order;
            *slot += 1;
        }

        let mut customer_order_offsets = vec![0u32; n_customers + 1];
        for order in &log.orders {
            if order.customer != GUEST {
                customer_order_offsets[order.customer as usize + 1] += 1;
            }
        }
        prefix_sum(&mut customer_order_offsets);
        let mut cursor = customer_order_offsets.clone();
        let mut customer_orders = vec![0u32; customer_order_offsets[n_customers] as usize];
        for (o, order) in log.orders.iter().enumerate() {
            if order.customer != GUEST {
                let slot = &mut cursor[order.customer as usize];
                customer_orders[*slot as usize] = o as u32;
                *slot += 1;
            }
        }
        let mut next = vec![NO_ORDER; n_orders];
        for c in 0..n_customers {
            let range = customer_order_offsets[c] as usize..customer_order_offsets[c + 1] as usize;
            let orders = &mut customer_orders[range];
            orders.sort_unstable_by_key(|&o| (log.orders[o as usize].timestamp, o));
            for pair in orders.windows(2) {
                next[pair[0] as usize] = pair[1];
            }
        }
        Self {
            order_offsets,
            items,
            item_order_offsets,
            item_orders,
            next,
            customer_order_offsets,
            customer_orders,
        }
    }

    pub fn order_items(&self, order: u32) -> &[u32] {
        let o = order as usize;
        &self.items[self.order_offsets[o] as usize..self.order_offsets[o + 1] as usize]
    }

    pub fn orders_with(&self, item: u32) -> &[u32] {
        let i = item as usize;
        &self.item_orders
            [self.item_order_offsets[i] as usize..self.item_order_offsets[i + 1] as usize]
    }

    pub fn customer_orders(&self, customer: u32) -> &[u32] {
        let c = customer as usize;
        &self.customer_orders
            [self.customer_order_offsets[c] as usize..self.customer_order_offsets[c + 1] as usize]
    }

    pub fn n_orders(&self) -> usize {
        self.order_offsets.len() - 1
    }

    pub fn n_items(&self) -> usize {
        self.item_order_offsets.len() - 1
    }

    /// Orders containing each item.
    pub fn order_counts(&self) -> Vec<u32> {
        self.item_order_offsets
            .windows(2)
            .map(|w| w[1] - w[0])
            .collect()
    }
}

fn prefix_sum(v: &mut [u32]) {
    for i in 1..v.len() {
        v[i] += v[i - 1];
    }
}
