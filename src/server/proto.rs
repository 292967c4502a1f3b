//! The protobuf messages of Hanami's SDK (seed 003), as its
//! `hanami_messages.proto3` defines them, derived with prost (no protoc at
//! build time): upload chunks and their answers, and direct-IO frames.
//!
//! proto3 writes no field that holds its default, so a chunk at position 0
//! arrives without a position, and `false` without a field: decoding gives
//! the defaults back. The messages are flat: decoding never recurses.

/// `FileUpload_Message`: one chunk of a file being uploaded.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct FileUploadMessage {
    #[prost(uint64, tag = "1")]
    pub(crate) position: u64,
    /// Shares the frame's buffer: decoding copies nothing.
    #[prost(bytes = "bytes", tag = "2")]
    pub(crate) data: bytes::Bytes,
}

/// `FileUploadResponse_Message`: the answer to one chunk.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct FileUploadResponse {
    #[prost(bool, tag = "1")]
    pub(crate) success: bool,
    #[prost(string, tag = "2")]
    pub(crate) error_message: String,
}

/// `ClusterProcessType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub(crate) enum ClusterProcessType {
    RequestType = 0,
    TrainType = 1,
}

/// `ClusterIO_Message`: values for a brick, and the answer's values.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ClusterIoMessage {
    #[prost(string, tag = "1")]
    pub(crate) brick_name: String,
    #[prost(bool, tag = "2")]
    pub(crate) is_last: bool,
    #[prost(enumeration = "ClusterProcessType", tag = "3")]
    pub(crate) process_type: i32,
    #[prost(uint64, tag = "4")]
    pub(crate) number_of_values: u64,
    #[prost(float, repeated, packed = "true", tag = "5")]
    pub(crate) values: Vec<f32>,
}
