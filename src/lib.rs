//! cobuy: recommendations from order history that bring first-time buyers back.
//!
//! Data flows one way: [`ingest`] → [`build`] → [`model`] (read-only) → [`rank`] → serving.
//! See ARCHITECTURE.md for the map.

pub mod build;
pub mod config;
pub mod error;
pub mod eval;
pub mod ids;
pub mod ingest;
pub mod inspect;
pub mod lists;
pub mod loadgen;
pub mod mapping;
pub mod model;
pub mod progress;
pub mod proto;
pub mod rank;
pub mod serve;
