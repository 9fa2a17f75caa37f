//! Property: no returned item ever violates the request's filters or appears in its context,
//! for every surface and RPC, on the fixture model.

use std::sync::OnceLock;

use cobuy::build::{BuildInputs, build};
use cobuy::ingest::IngestOptions;
use cobuy::mapping::Mapping;
use cobuy::model::{Model, NONE};
use cobuy::progress::Progress;
use cobuy::rank::blend::{bought_together_list, buy_again_list, upsell_list};
use cobuy::rank::recommend;
use cobuy::rank::request::{ContextEntry, FilterSpec, PurchasedPolicy, RecommendQuery, Surface};
use proptest::prelude::*;

use crate::fixtures::fixture;

fn model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        let inputs = BuildInputs {
            orders: vec![fixture("orders.csv")],
            catalog: Some(fixture("catalog.csv")),
            mapping: Mapping::from_file(&fixture("catalog.toml")).expect("mapping"),
            ingest: IngestOptions::default(),
        };
        Model::new(
            "prop".into(),
            build(&inputs, &Progress::hidden()).expect("build").0,
        )
    })
}

const ITEMS: [&str; 9] = ["A", "B", "C", "D", "E", "F", "G", "H", "Z"];
const CATEGORIES: [&str; 5] = [
    "Produce",
    "Produce > Fruit",
    "Dairy",
    "Home",
    "Bakery > Loaves",
];
const BRANDS: [&str; 4] = ["Orchard", "Baker", "Farm", "Acme"];

fn subset(options: &'static [&'static str]) -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(prop::sample::select(options), 0..3)
        .prop_map(|v| v.into_iter().map(str::to_owned).collect())
}

fn filters() -> impl Strategy<Value = FilterSpec> {
    (
        (
            subset(&CATEGORIES),
            subset(&CATEGORIES),
            subset(&BRANDS),
            subset(&BRANDS),
        ),
        (subset(&ITEMS), subset(&ITEMS)),
        (
            prop::option::of(0.0f64..5.0),
            prop::option::of(0.0f64..10.0),
            any::<bool>(),
        ),
        (
            prop::sample::select(vec![
                PurchasedPolicy::ExcludeUnlessDue,
                PurchasedPolicy::ExcludeAll,
                PurchasedPolicy::Include,
            ]),
            0.1f32..1.0,
        ),
    )
        .prop_map(
            |((ic, ec, ib, eb), (ii, ei), (lo, hi, available_only), (purchased, share))| {
                FilterSpec {
                    include_categories: ic,
                    exclude_categories: ec,
                    include_brands: ib,
                    exclude_brands: eb,
                    include_item_ids: ii,
                    exclude_item_ids: ei,
                    min_price: lo,
                    max_price: hi.map(|h| h + lo.unwrap_or(0.0)),
                    available_only,
                    purchased,
                    max_category_share: share,
                }
            },
        )
}

fn matches_prefix(path: &str, prefixes: &[String]) -> bool {
    prefixes
        .iter()
        .any(|p| path == p || path.starts_with(&format!("{p} > ")))
}

/// Checks one returned item against the spec, independently of the ranking code.
fn check(
    model: &Model,
    id: &str,
    spec: &FilterSpec,
    context: &[String],
    bought: &[String],
) -> Result<(), String> {
    let d = &model.data;
    let i = model.item(id).ok_or("unknown item returned")?.ix();
    let category = match d.items.category[i] {
        NONE => "",
        c => d.categories.paths[c as usize].as_str(),
    };
    let brand = match d.items.brand[i] {
        NONE => "",
        b => d.brands[b as usize].as_str(),
    };
    let price = f64::from(d.items.price[i]);
    let fail = |why: &str| Err(format!("{id}: {why}"));
    if context.iter().any(|c| c == id) {
        return fail("in context");
    }
    if !spec.include_categories.is_empty() && !matches_prefix(category, &spec.include_categories) {
        return fail("category not included");
    }
    if matches_prefix(category, &spec.exclude_categories) {
        return fail("category excluded");
    }
    if !spec.include_brands.is_empty() && !spec.include_brands.iter().any(|b| b == brand) {
        return fail("brand not included");
    }
    if spec.exclude_brands.iter().any(|b| b == brand) {
        return fail("brand excluded");
    }
    if !spec.include_item_ids.is_empty() && !spec.include_item_ids.iter().any(|x| x == id) {
        return fail("item not included");
    }
    if spec.exclude_item_ids.iter().any(|x| x == id) {
        return fail("item excluded");
    }
    if spec
        .min_price
        .is_some_and(|lo| price.is_nan() || price < lo)
        || spec
            .max_price
            .is_some_and(|hi| price.is_nan() || price > hi)
    {
        return fail("price out of range");
    }
    if spec.available_only && !d.items.available[i] {
        return fail("unavailable");
    }
    if spec.purchased == PurchasedPolicy::ExcludeAll && bought.iter().any(|b| b == id) {
        return fail("bought before");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
    #[test]
    fn no_returned_item_violates_filters_or_context(
        spec in filters(),
        context in subset(&ITEMS),
        customer in prop::sample::select(vec!["", "c1", "c2", "c3", "stranger"]),
        surface in prop::sample::select(Surface::ALL.to_vec()),
        k in 1usize..8,
    ) {
        let model = model();
        let customer_id = (!customer.is_empty()).then(|| customer.to_owned());
        let bought: Vec<String> = customer_id
            .as_deref()
            .and_then(|c| model.customer(c))
            .map(|c| model.data.customers.history(c).iter().map(|h| model.data.items.ids[h.item as usize].clone()).collect())
            .unwrap_or_default();
        let entries: Vec<ContextEntry> = context.iter().map(|id| ContextEntry { item_id: id.clone(), quantity: 1.0, price: None }).collect();
        let query = RecommendQuery { customer_id: customer_id.clone(), surface, context: entries.clone(), k, filters: spec.clone(), as_of: None };
        let lists = [
            recommend(model, &query).items,
            bought_together_list(model, customer_id.clone(), entries.clone(), k, spec.clone()).items,
            upsell_list(model, customer_id.as_deref(), context.first().map_or("A", String::as_str), k, &spec, 3.0).items,
        ];
        for (n, list) in lists.iter().enumerate() {
            prop_assert!(list.len() <= k, "list {n} longer than k");
            let mut seen = std::collections::HashSet::new();
            for rec in list {
                let id = model.item_id(rec.item);
                prop_assert!(seen.insert(id), "list {} repeats {}", n, id);
                let upsell_anchor = if n == 2 { vec![context.first().cloned().unwrap_or_else(|| "A".into())] } else { context.clone() };
                if let Err(why) = check(model, id, &spec, &upsell_anchor, &bought) {
                    prop_assert!(false, "list {} ({:?}): {}", n, surface, why);
                }
            }
        }
        if let Some(c) = customer_id.as_deref().and_then(|c| model.customer(c)) {
            let due = buy_again_list(model, c, model.data.time.last_order, 14.0, k, &spec);
            prop_assert!(due.len() <= k);
            let mut relaxed = spec.clone();
            relaxed.purchased = PurchasedPolicy::Include;
            for d in due {
                if let Err(why) = check(model, model.item_id(d.item), &relaxed, &[], &[]) {
                    prop_assert!(false, "buy again: {}", why);
                }
            }
        }
    }
}
