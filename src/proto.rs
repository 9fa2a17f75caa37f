//! Generated gRPC types and services for `cobuy.v1` (see `proto/`), and the encoded file
//! descriptor set that server reflection serves.

#![allow(clippy::all, clippy::pedantic, missing_docs)] // generated code

pub mod v1 {
    tonic::include_proto!("cobuy.v1");
}

/// The compiled `.proto` files, for `grpc.reflection.v1`.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("cobuy_descriptor");
