//! The `Recommender` and `Admin` gRPC services: thin handlers that validate, convert, call the
//! ranking functions and convert back, with a span and metrics per call.

use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status};

use super::ServeError;
use super::compute::{ComputePool, PoolError};
use super::convert;
use super::metrics::Metrics;
use super::state::{LiveModel, ModelState};
use crate::proto::v1 as pb;
use crate::rank;

fn recommendation_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The recommendation service over the live model.
#[derive(Debug, Clone)]
pub struct RecommenderService {
    state: Arc<ModelState>,
    metrics: Metrics,
    /// `None`: rank inline on the async worker (best latency on few cores).
    pool: Option<Arc<ComputePool>>,
    max_queue_delay: std::time::Duration,
}

impl RecommenderService {
    pub fn new(
        state: Arc<ModelState>,
        metrics: Metrics,
        pool: Option<Arc<ComputePool>>,
        max_queue_delay: std::time::Duration,
    ) -> Self {
        Self {
            state,
            metrics,
            pool,
            max_queue_delay,
        }
    }

    /// Runs one call on the ranking pool: loads the live model once, refuses calls that queued
    /// too long, records the outcome.
    async fn handle<Req, Resp, F>(
        &self,
        method: &'static str,
        request: Request<Req>,
        f: F,
    ) -> Result<Response<Resp>, Status>
    where
        Req: Send + 'static,
        Resp: Send + 'static,
        F: FnOnce(&LiveModel, Req) -> Result<Resp, ServeError> + Send + 'static,
    {
        let started = Instant::now();
        let arrival = request
            .extensions()
            .get::<super::Arrival>()
            .map_or(started, |a| a.0);
        let span = tracing::info_span!("rpc", method);
        let result = match self.state.current() {
            None => Err(ServeError::NoModel),
            Some(live) => {
                let max_queue_delay = self.max_queue_delay;
                let message = request.into_inner();
                let job_span = span.clone();
                let job = move || {
                    let _entered = job_span.enter();
                    let queued = arrival.elapsed();
                    if queued > max_queue_delay {
                        return Err(ServeError::Overloaded {
                            queued_ms: queued.as_millis() as u64,
                        });
                    }
                    f(&live, message)
                };
                match &self.pool {
                    None => job(),
                    Some(pool) => match pool.run(job).await {
                        Ok(result) => result,
                        Err(PoolError::Full) => Err(ServeError::QueueFull),
                        Err(PoolError::Lost) => Err(ServeError::Internal),
                    },
                }
            }
        };
        let result = result.map(Response::new).map_err(Status::from);
        let code = result
            .as_ref()
            .map_or_else(|s| s.code(), |_| tonic::Code::Ok);
        if code != tonic::Code::Ok {
            let _entered = span.enter();
            tracing::debug!(code = ?code, "request refused");
        }
        self.metrics
            .observe(method, code, started.elapsed().as_secs_f64());
        result
    }
}

#[tonic::async_trait]
impl pb::recommender_server::Recommender for RecommenderService {
    async fn recommend(
        &self,
        request: Request<pb::RecommendRequest>,
    ) -> Result<Response<pb::RecommendResponse>, Status> {
        self.handle("Recommend", request, |live, req| {
            let query = convert::recommend_query(req)?;
            let list = rank::recommend(&live.model, &query);
            Ok(convert::recommend_response(
                &live.model,
                list,
                recommendation_id(),
            ))
        })
        .await
    }

    async fn bought_together(
        &self,
        request: Request<pb::BoughtTogetherRequest>,
    ) -> Result<Response<pb::RecommendResponse>, Status> {
        self.handle("BoughtTogether", request, |live, req| {
            let q = convert::bought_together_query(req)?;
            let list = rank::blend::bought_together_list(
                &live.model,
                q.customer_id,
                q.items,
                q.k,
                q.filters,
            );
            Ok(convert::recommend_response(
                &live.model,
                list,
                recommendation_id(),
            ))
        })
        .await
    }

    async fn upsell(
        &self,
        request: Request<pb::UpsellRequest>,
    ) -> Result<Response<pb::RecommendResponse>, Status> {
        self.handle("Upsell", request, |live, req| {
            let q = convert::upsell_query(req)?;
            let list = rank::blend::upsell_list(
                &live.model,
                q.customer_id.as_deref(),
                &q.item_id,
                q.k,
                &q.filters,
                q.max_ratio,
            );
            Ok(convert::recommend_response(
                &live.model,
                list,
                recommendation_id(),
            ))
        })
        .await
    }

    async fn similar_items(
        &self,
        request: Request<pb::SimilarItemsRequest>,
    ) -> Result<Response<pb::RecommendResponse>, Status> {
        self.handle("SimilarItems", request, |live, req| {
            let q = convert::similar_items_query(req)?;
            let list = rank::blend::similar_list(
                &live.model,
                q.customer_id.as_deref(),
                &q.item_id,
                q.k,
                &q.filters,
            );
            Ok(convert::recommend_response(
                &live.model,
                list,
                recommendation_id(),
            ))
        })
        .await
    }

    async fn buy_again(
        &self,
        request: Request<pb::BuyAgainRequest>,
    ) -> Result<Response<pb::BuyAgainResponse>, Status> {
        self.handle("BuyAgain", request, |live, req| {
            let q = convert::buy_again_query(req)?;
            let model = &live.model;
            let Some(customer) = model.customer(&q.customer_id) else {
                return Ok(convert::buy_again_response(
                    model,
                    Vec::new(),
                    recommendation_id(),
                    true,
                ));
            };
            let as_of = q.as_of.unwrap_or(model.data.time.last_order);
            let due = rank::blend::buy_again_list(
                model,
                customer,
                as_of,
                q.horizon_days,
                q.k,
                &q.filters,
            );
            Ok(convert::buy_again_response(
                model,
                due,
                recommendation_id(),
                false,
            ))
        })
        .await
    }
}

/// A no-op target with the same RPCs and empty answers: the latency floor for benchmarks.
#[derive(Debug, Clone, Default)]
pub struct NoopRecommender;

#[tonic::async_trait]
impl pb::recommender_server::Recommender for NoopRecommender {
    async fn recommend(
        &self,
        _: Request<pb::RecommendRequest>,
    ) -> Result<Response<pb::RecommendResponse>, Status> {
        Ok(Response::new(pb::RecommendResponse::default()))
    }

    async fn bought_together(
        &self,
        _: Request<pb::BoughtTogetherRequest>,
    ) -> Result<Response<pb::RecommendResponse>, Status> {
        Ok(Response::new(pb::RecommendResponse::default()))
    }

    async fn upsell(
        &self,
        _: Request<pb::UpsellRequest>,
    ) -> Result<Response<pb::RecommendResponse>, Status> {
        Ok(Response::new(pb::RecommendResponse::default()))
    }

    async fn buy_again(
        &self,
        _: Request<pb::BuyAgainRequest>,
    ) -> Result<Response<pb::BuyAgainResponse>, Status> {
        Ok(Response::new(pb::BuyAgainResponse::default()))
    }

    async fn similar_items(
        &self,
        _: Request<pb::SimilarItemsRequest>,
    ) -> Result<Response<pb::RecommendResponse>, Status> {
        Ok(Response::new(pb::RecommendResponse::default()))
    }
}

/// Model info and on-demand reload.
#[derive(Debug, Clone)]
pub struct AdminService {
    state: Arc<ModelState>,
}

impl AdminService {
    pub fn new(state: Arc<ModelState>) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn model_info(
        &self,
        _: Request<pb::ModelInfoRequest>,
    ) -> Result<Response<pb::ModelInfoResponse>, Status> {
        let live = self.state.current().ok_or(ServeError::NoModel)?;
        let d = &live.model.data;
        Ok(Response::new(pb::ModelInfoResponse {
            version: live.model.version.clone(),
            built_at: live.built_at.clone(),
            items: d.items.len() as u64,
            customers: d.customers.len() as u64,
            orders: u64::from(d.total_orders),
            loaded_at_seconds: live.loaded_at,
            model_dir: self.state.dir().display().to_string(),
            data_end_seconds: d.time.last_order,
        }))
    }

    async fn reload(
        &self,
        _: Request<pb::ReloadRequest>,
    ) -> Result<Response<pb::ReloadResponse>, Status> {
        let outcome = self.state.reload().await.map_err(ServeError::Reload)?;
        Ok(Response::new(pb::ReloadResponse {
            previous_version: outcome.previous.unwrap_or_default(),
            version: outcome.current,
            changed: outcome.changed,
        }))
    }
}
