//! ApiVersions, with the KIP-511 fallback: a client that asks with a version we do not know
//! gets a v0-format answer with UNSUPPORTED_VERSION and our range for ApiVersions, and
//! retries with a version inside it.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};

use super::{Context, Outcome};
use crate::model::ErrorCode;
use crate::protocol::versions;
use crate::storage::log::ReadChunk;

pub fn handle(ctx: &Context, _body: Bytes) -> Outcome {
    // The request body (client software name and version) is informational; a client that
    // sends a malformed one still deserves the version table, as Kafka does.
    let mut response = ApiVersionsResponse::default();
    response.error_code = ErrorCode::None.code();
    response.api_keys = versions::advertised(ctx.cluster().clustered())
        .map(|s| {
            let mut v = ApiVersion::default();
            v.api_key = s.key as i16;
            v.min_version = s.advertised_min;
            v.max_version = s.max;
            v
        })
        .collect();
    // Tagged fields at their defaults are not written (librdkafka 2.0 cannot parse them).
    response.finalized_features_epoch = -1;
    ctx.reply(&response)
}

/// The v0-format error answer for an ApiVersions version we do not support.
pub fn unsupported_version(correlation_id: i32) -> Outcome {
    let range = versions::supported(ApiKey::ApiVersions as i16).unwrap_or_else(|| unreachable!());
    let mut out = BytesMut::with_capacity(32);
    out.put_i32(0);
    out.put_i32(correlation_id);
    out.put_i16(ErrorCode::UnsupportedVersion.code());
    out.put_i32(1);
    out.put_i16(ApiKey::ApiVersions as i16);
    out.put_i16(range.min);
    out.put_i16(range.max);
    let size = (out.len() - 4) as i32;
    out[0..4].copy_from_slice(&size.to_be_bytes());
    Outcome::Reply(vec![ReadChunk::Memory(out.freeze())])
}
