//! Ranking: plain synchronous functions from a [`crate::model::Model`] and a request to a ranked
//! list. Shared by the server, `cobuy eval` and `cobuy inspect`; no IO, no tokio.

pub mod blend;
pub mod buy_again;
pub mod filter;
pub mod request;
pub mod upsell;

pub use blend::{Blend, recommend, recommend_with};
