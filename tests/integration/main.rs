//! The one integration-test binary: ingest and build through the library and the real `cobuy`
//! binary, and (in `serve`) the real gRPC server on 127.0.0.1:0 called through the generated
//! client.

mod build;
mod eval;
mod filters;
mod fixtures;
mod loadgen;
mod serve;
mod similar;
