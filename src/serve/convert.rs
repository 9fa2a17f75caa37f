//! Proto ↔ domain conversion for the gRPC edge. Validation of limits lives in `rank::request`;
//! this module only maps shapes and enum values, naming the request field on failure.

use crate::error::RequestError;
use crate::ids::ItemIdx;
use crate::model::{Model, NONE};
use crate::proto::v1 as pb;
use crate::rank::buy_again::DueItem;
use crate::rank::request::{
    self, ContextEntry, FilterSpec, PurchasedPolicy, RankedList, Reason, RecommendQuery,
    Recommendation, Surface, invalid,
};

pub fn surface(value: i32) -> Result<Surface, RequestError> {
    match pb::Surface::try_from(value) {
        Ok(pb::Surface::OrderTracking) => Ok(Surface::OrderTracking),
        Ok(pb::Surface::FollowUpEmail) => Ok(Surface::FollowUpEmail),
        Ok(pb::Surface::ReplenishmentReminder) => Ok(Surface::ReplenishmentReminder),
        Ok(pb::Surface::ProductPage) => Ok(Surface::ProductPage),
        Ok(pb::Surface::Cart) => Ok(Surface::Cart),
        Ok(pb::Surface::Home) => Ok(Surface::Home),
        Ok(pb::Surface::Unspecified) => Err(invalid(
            "surface",
            "must be set (ORDER_TRACKING, FOLLOW_UP_EMAIL, ...)".into(),
        )),
        Err(_) => Err(invalid("surface", format!("{value} is not a Surface"))),
    }
}

fn reason(reason: Reason) -> pb::Reason {
    match reason {
        Reason::BoughtTogether => pb::Reason::BoughtTogether,
        Reason::NextOrder => pb::Reason::NextOrder,
        Reason::Upsell => pb::Reason::Upsell,
        Reason::BuyAgain => pb::Reason::BuyAgain,
        Reason::Similar => pb::Reason::Similar,
        Reason::Popular => pb::Reason::Popular,
        Reason::LikeCustomers => pb::Reason::LikeCustomers,
    }
}

pub fn filters(raw: Option<pb::Filters>) -> Result<FilterSpec, RequestError> {
    let Some(f) = raw else {
        return Ok(FilterSpec::default());
    };
    let purchased = match pb::PurchasedPolicy::try_from(f.purchased) {
        Ok(pb::PurchasedPolicy::Unspecified | pb::PurchasedPolicy::ExcludeUnlessDue) => {
            PurchasedPolicy::ExcludeUnlessDue
        }
        Ok(pb::PurchasedPolicy::ExcludeAll) => PurchasedPolicy::ExcludeAll,
        Ok(pb::PurchasedPolicy::Include) => PurchasedPolicy::Include,
        Err(_) => {
            return Err(invalid(
                "filters.purchased",
                format!("{} is not a PurchasedPolicy", f.purchased),
            ));
        }
    };
    let spec = FilterSpec {
        include_categories: f.include_categories,
        exclude_categories: f.exclude_categories,
        include_brands: f.include_brands,
        exclude_brands: f.exclude_brands,
        include_item_ids: f.include_item_ids,
        exclude_item_ids: f.exclude_item_ids,
        min_price: f.min_price,
        max_price: f.max_price,
        available_only: f.available_only.unwrap_or(true),
        purchased,
        max_category_share: f
            .max_category_share
            .map_or(request::DEFAULT_MAX_CATEGORY_SHARE, |s| s as f32),
    };
    spec.validate()?;
    Ok(spec)
}

fn context(
    field: &'static str,
    items: Vec<pb::ContextItem>,
) -> Result<Vec<ContextEntry>, RequestError> {
    let entries: Vec<ContextEntry> = items
        .into_iter()
        .map(|c| ContextEntry {
            item_id: c.item_id,
            quantity: if c.quantity == 0.0 { 1.0 } else { c.quantity },
            price: (c.price > 0.0).then_some(c.price),
        })
        .collect();
    request::validate_context(field, &entries)?;
    Ok(entries)
}

fn customer(id: String) -> Option<String> {
    (!id.is_empty()).then_some(id)
}

pub fn recommend_query(r: pb::RecommendRequest) -> Result<RecommendQuery, RequestError> {
    Ok(RecommendQuery {
        surface: surface(r.surface)?,
        k: request::validate_k(r.k)?,
        context: context("context_items", r.context_items)?,
        filters: filters(r.filters)?,
        customer_id: customer(r.customer_id),
        as_of: r.as_of_seconds,
    })
}

pub struct BoughtTogetherQuery {
    pub customer_id: Option<String>,
    pub items: Vec<ContextEntry>,
    pub k: usize,
    pub filters: FilterSpec,
}

pub fn bought_together_query(
    r: pb::BoughtTogetherRequest,
) -> Result<BoughtTogetherQuery, RequestError> {
    let items = context("items", r.items)?;
    if items.is_empty() {
        return Err(invalid("items", "name at least one item".into()));
    }
    Ok(BoughtTogetherQuery {
        k: request::validate_k(r.k)?,
        filters: filters(r.filters)?,
        customer_id: customer(r.customer_id),
        items,
    })
}

pub struct UpsellQuery {
    pub customer_id: Option<String>,
    pub item_id: String,
    pub k: usize,
    pub filters: FilterSpec,
    pub max_ratio: f32,
}

pub fn upsell_query(r: pb::UpsellRequest) -> Result<UpsellQuery, RequestError> {
    if r.item_id.is_empty() {
        return Err(invalid("item_id", "must be set".into()));
    }
    let max_ratio = if r.max_price_ratio == 0.0 {
        request::DEFAULT_UPSELL_MAX_RATIO as f64
    } else {
        r.max_price_ratio
    };
    if !(max_ratio > 1.0 && max_ratio <= 100.0) {
        return Err(invalid(
            "max_price_ratio",
            format!("{max_ratio} must be in (1, 100]"),
        ));
    }
    Ok(UpsellQuery {
        k: request::validate_k(r.k)?,
        filters: filters(r.filters)?,
        customer_id: customer(r.customer_id),
        item_id: r.item_id,
        max_ratio: max_ratio as f32,
    })
}

pub struct SimilarItemsQuery {
    pub customer_id: Option<String>,
    pub item_id: String,
    pub k: usize,
    pub filters: FilterSpec,
}

pub fn similar_items_query(r: pb::SimilarItemsRequest) -> Result<SimilarItemsQuery, RequestError> {
    if r.item_id.is_empty() {
        return Err(invalid("item_id", "must be set".into()));
    }
    Ok(SimilarItemsQuery {
        k: request::validate_k(r.k)?,
        filters: filters(r.filters)?,
        customer_id: customer(r.customer_id),
        item_id: r.item_id,
    })
}

pub struct BuyAgainQuery {
    pub customer_id: String,
    pub as_of: Option<i64>,
    pub horizon_days: f32,
    pub k: usize,
    pub filters: FilterSpec,
}

pub fn buy_again_query(r: pb::BuyAgainRequest) -> Result<BuyAgainQuery, RequestError> {
    if r.customer_id.is_empty() {
        return Err(invalid("customer_id", "must be set".into()));
    }
    let horizon_days = if r.horizon_days == 0.0 {
        request::DEFAULT_HORIZON_DAYS
    } else {
        r.horizon_days
    };
    if !(horizon_days > 0.0 && horizon_days <= request::MAX_HORIZON_DAYS) {
        return Err(invalid(
            "horizon_days",
            format!(
                "{horizon_days} must be in (0, {}]",
                request::MAX_HORIZON_DAYS
            ),
        ));
    }
    Ok(BuyAgainQuery {
        k: request::validate_k(r.k)?,
        filters: filters(r.filters)?,
        customer_id: r.customer_id,
        as_of: r.as_of_seconds,
        horizon_days,
    })
}

fn evidence_text(model: &Model, rec: &Recommendation) -> String {
    let e = &rec.evidence;
    let source = rec
        .sources
        .first()
        .map(|&s| title_or_id(model, s))
        .unwrap_or_default();
    match rec.reason {
        // Inferred from similar items' lists (a thin item's list was backfilled).
        Reason::BoughtTogether if e.support == 0 => {
            format!("often bought with items like {source}")
        }
        Reason::NextOrder if e.support == 0 => {
            format!("customers who bought items like {source} bought this next")
        }
        Reason::BoughtTogether => {
            format!(
                "bought together with {source} in {} orders ({:.0}% of its orders, {:.1}x chance)",
                e.support,
                100.0 * e.confidence,
                e.lift
            )
        }
        Reason::NextOrder => format!(
            "{} customers who bought {source} bought this in a following order",
            e.support
        ),
        Reason::BuyAgain if e.interval_days > 0.0 => format!(
            "bought {} times, about every {:.0} days",
            e.support, e.interval_days
        ),
        Reason::BuyAgain if e.support == 1 => "bought before".to_owned(),
        Reason::BuyAgain => format!("bought {} times", e.support),
        Reason::Upsell => format!(
            "same kind as {source}, {:.0}% pricier",
            100.0 * (e.price_ratio - 1.0)
        ),
        Reason::Similar => format!("bought in the same kinds of baskets as {source}"),
        Reason::Popular => format!("popular: in {} orders", e.support),
        Reason::LikeCustomers => "bought by customers who buy what you buy".to_owned(),
    }
}

fn title_or_id(model: &Model, item: ItemIdx) -> String {
    let title = &model.data.items.titles[item.ix()];
    if title.is_empty() {
        model.item_id(item).to_owned()
    } else {
        title.clone()
    }
}

fn item_fields(model: &Model, item: ItemIdx) -> (String, String, f64) {
    let items = &model.data.items;
    let category = match items.category[item.ix()] {
        NONE => String::new(),
        c => model.data.categories.paths[c as usize].clone(),
    };
    let price = items.price[item.ix()];
    (
        items.titles[item.ix()].clone(),
        category,
        if price.is_nan() {
            0.0
        } else {
            f64::from(price)
        },
    )
}

pub fn recommend_response(
    model: &Model,
    list: RankedList,
    recommendation_id: String,
) -> pb::RecommendResponse {
    let items = list
        .items
        .iter()
        .map(|rec| {
            let (title, category, price) = item_fields(model, rec.item);
            let e = &rec.evidence;
            pb::RecommendedItem {
                item_id: model.item_id(rec.item).to_owned(),
                score: rec.score,
                reason: reason(rec.reason) as i32,
                source_item_ids: rec
                    .sources
                    .iter()
                    .map(|&s| model.item_id(s).to_owned())
                    .collect(),
                evidence: Some(pb::Evidence {
                    support: e.support,
                    confidence: e.confidence,
                    lift: e.lift,
                    typical_interval_days: e.interval_days,
                    due_at_seconds: e.due_at,
                    price_ratio: e.price_ratio,
                    similarity: e.similarity,
                    text: evidence_text(model, rec),
                }),
                title,
                category,
                price,
            }
        })
        .collect();
    pb::RecommendResponse {
        items,
        model_version: model.version.clone(),
        recommendation_id,
        unknown_item_ids: list.unknown_item_ids,
        cold_start: list.cold_start,
    }
}

pub fn buy_again_response(
    model: &Model,
    due: Vec<DueItem>,
    recommendation_id: String,
    unknown_customer: bool,
) -> pb::BuyAgainResponse {
    pb::BuyAgainResponse {
        items: due
            .into_iter()
            .map(|d| pb::BuyAgainItem {
                item_id: model.item_id(d.item).to_owned(),
                score: d.score,
                due_at_seconds: d.due_at,
                typical_interval_days: d.interval_days,
                confidence: d.confidence,
                purchases: d.purchases,
                last_purchase_seconds: d.last_purchase,
                due: d.due_within_horizon,
                title: model.data.items.titles[d.item.ix()].clone(),
            })
            .collect(),
        model_version: model.version.clone(),
        recommendation_id,
        unknown_customer,
    }
}
