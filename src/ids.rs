//! Dense indexes for items, customers and orders, and the interner that maps a shop's external
//! string ids onto them.
//!
//! Every table in the model is indexed by these newtypes, so an item index can never be used to
//! look up a customer by accident.

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

macro_rules! dense_index {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(pub u32);

        impl $name {
            /// The index as a `usize`, for slicing tables.
            #[inline]
            pub fn ix(self) -> usize {
                self.0 as usize
            }
        }
    };
}

dense_index!(
    /// Dense index of an item (catalog entry or item seen in orders).
    ItemIdx
);
dense_index!(
    /// Dense index of a known (non-guest) customer.
    CustomerIdx
);

/// Maps external string ids to dense `u32` indexes in first-seen order.
#[derive(Debug, Default, Clone)]
pub struct Interner {
    names: Vec<String>,
    index: FxHashMap<String, u32>,
}

impl Interner {
    /// Builds an interner whose index `i` is `names[i]`; later duplicates keep the first index.
    pub fn from_names(names: Vec<String>) -> Self {
        let mut index = FxHashMap::with_capacity_and_hasher(names.len(), Default::default());
        for (i, name) in names.iter().enumerate() {
            index.entry(name.clone()).or_insert(i as u32);
        }
        Self { names, index }
    }

    /// Returns the index of `name`, adding it if new.
    pub fn intern(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = u32::try_from(self.names.len()).expect("more than u32::MAX distinct ids");
        self.names.push(name.to_owned());
        self.index.insert(name.to_owned(), i);
        i
    }

    pub fn get(&self, name: &str) -> Option<u32> {
        self.index.get(name).copied()
    }

    pub fn name(&self, i: u32) -> &str {
        &self.names[i as usize]
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intern_is_stable_and_dense() {
        let mut interner = Interner::default();
        assert_eq!(interner.intern("b"), 0);
        assert_eq!(interner.intern("a"), 1);
        assert_eq!(interner.intern("b"), 0);
        assert_eq!(interner.len(), 2);
        assert_eq!(interner.name(1), "a");
        assert_eq!(interner.get("zz"), None);
        let rebuilt = Interner::from_names(interner.names().to_vec());
        assert_eq!(rebuilt.get("a"), Some(1));
    }
}
