//! Per-row ranked lists and their compressed-row (CSR) storage: keep a row's best `k` in
//! order, flatten rows into offsets plus entries, and read one row's range back.

use std::cmp::Ordering;
use std::ops::Range;

/// Keeps the `k` first entries under `order` (best first), sorted.
pub fn keep_best<T>(list: &mut Vec<T>, k: usize, order: impl Fn(&T, &T) -> Ordering) {
    keep_best_unordered(list, k, &order);
    list.sort_unstable_by(order);
}

/// Keeps the `k` first entries under `order`, in no particular order (for callers that only
/// need the set, or its maximum).
pub fn keep_best_unordered<T>(list: &mut Vec<T>, k: usize, order: impl Fn(&T, &T) -> Ordering) {
    if list.len() > k {
        list.select_nth_unstable_by(k, order);
        list.truncate(k);
    }
}

/// Rows flattened into CSR form: `offsets` has one entry per row plus one, starting at 0.
pub fn flatten<T>(rows: impl IntoIterator<Item = Vec<T>>) -> (Vec<u32>, Vec<T>) {
    let mut offsets = vec![0u32];
    let mut flat = Vec::new();
    for row in rows {
        flat.extend(row);
        offsets.push(flat.len() as u32);
    }
    (offsets, flat)
}

/// Row `row`'s range of entries, empty when `offsets` has no such row.
pub fn row_range(offsets: &[u32], row: usize) -> Range<usize> {
    match (offsets.get(row), offsets.get(row + 1)) {
        (Some(&a), Some(&b)) => a as usize..b as usize,
        _ => 0..0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_k_sorted_rows_flattened_and_read_back() {
        let mut row = vec![3, 9, 1, 7, 5];
        let mut unordered = row.clone();
        keep_best(&mut row, 3, |a, b| b.cmp(a));
        assert_eq!(row, [9, 7, 5]);
        keep_best_unordered(&mut unordered, 3, |a, b| b.cmp(a));
        unordered.sort_unstable();
        assert_eq!(unordered, [5, 7, 9]);
        let (offsets, flat) = flatten([vec![1, 2], vec![], vec![3]]);
        assert_eq!(offsets, [0, 2, 2, 3]);
        assert_eq!(flat[row_range(&offsets, 0)], [1, 2]);
        assert!(row_range(&offsets, 1).is_empty());
        assert_eq!(flat[row_range(&offsets, 2)], [3]);
        assert!(row_range(&offsets, 3).is_empty(), "no such row");
    }
}
