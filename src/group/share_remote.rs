//! A share call sent to another broker: `share_call`'s bytes in Spate's private request
//! (`SHARE_CALL_API_KEY`) on the connections this shard keeps to the other brokers
//! (`cluster::broker_client`, with the brokers' login when SASL is on). Two directions: a
//! leader's ShareFetch and ShareAcknowledge calls to the group's coordinator
//! (`api::share_call`), and a coordinator's `Wake` of the leader of partitions whose records
//! it made available again (`coordinator`).
//!
//! Request: the length and Kafka's request header v1 (API key, the call's version,
//! correlation id, client id), then the encoded call. Response: the length, the correlation
//! id (response header v0), an error code, and the encoded answer when that is NONE.

use std::time::Duration;

use bytes::{Buf, Bytes};

use crate::cluster::{broker_client, Cluster};
use crate::constants::{SHARE_CALL_TIMEOUT_MS, TXN_MARKER_RETRY_MS_MAX};
use crate::group::share_call::{ShareAnswer, ShareCall, SHARE_CALL_API_KEY};
use crate::model::{ErrorCode, NodeId};

/// The largest answer taken from another broker (an acquisition lists runs of offsets).
const ANSWER_BYTES_MAX: usize = 16 << 20;
/// Kafka's request header v1 (client id, no tagged fields); the response's is v0.
pub const HEADER_VERSION: i16 = 1;

/// Sends `call` to `node` and waits for its answer (`SHARE_CALL_TIMEOUT_MS`): the answer,
/// the error code `node` refused it with, or why it could not be asked (no connection, no
/// answer in time, an answer that is not one).
pub async fn send(
    cluster: &Cluster,
    node: NodeId,
    call: &ShareCall,
) -> Result<Result<ShareAnswer, ErrorCode>, String> {
    let correlation_id = 1;
    let header = broker_client::RequestFrame {
        api_key: SHARE_CALL_API_KEY,
        version: call.version(),
        header_version: HEADER_VERSION,
        correlation_id,
        client_id: format!("spate-share-{}", cluster.shard.config.node_id.0),
    };
    let frame = header
        .frame(|frame| {
            call.encode(frame);
            Ok(())
        })
        .map_err(|e| format!("cannot encode a share call's header: {e}"))?;
    let connect_timeout = Duration::from_millis(TXN_MARKER_RETRY_MS_MAX);
    let timeout = Duration::from_millis(SHARE_CALL_TIMEOUT_MS);
    let body = broker_client::round_trip(
        cluster,
        node,
        &frame,
        connect_timeout,
        timeout,
        ANSWER_BYTES_MAX,
    )
    .await
    .map_err(|e| format!("share call to broker {node} failed: {e}"))?;
    let answer = broker_client::response_body(body, 0, correlation_id)
        .map_err(|e| e.to_string())
        .and_then(decode_answer);
    answer.inspect_err(|e| tracing::warn!(%node, "bad share call answer: {e}"))
}

/// A response body after its correlation id: the error code, then the answer when NONE.
fn decode_answer(mut body: Bytes) -> Result<Result<ShareAnswer, ErrorCode>, String> {
    if body.remaining() < 2 {
        return Err("no error code".into());
    }
    let code = body.get_i16();
    match ErrorCode::from_code(code) {
        Some(ErrorCode::None) => ShareAnswer::decode(body).map(Ok).map_err(|e| e.0),
        Some(code) => Ok(Err(code)),
        None => Err(format!("unknown error code {code}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};

    #[test]
    fn an_answer_is_its_error_code_then_the_answer_when_none() {
        let mut out = BytesMut::new();
        out.put_i16(ErrorCode::None.code());
        ShareAnswer::Woken.encode(&mut out);
        assert_eq!(decode_answer(out.freeze()), Ok(Ok(ShareAnswer::Woken)));
        let mut out = BytesMut::new();
        out.put_i16(ErrorCode::ClusterAuthorizationFailed.code());
        assert_eq!(decode_answer(out.freeze()), Ok(Err(ErrorCode::ClusterAuthorizationFailed)));
        assert!(decode_answer(Bytes::from_static(&[0])).is_err());
        assert!(decode_answer(Bytes::from_static(&[0x7f, 0x7f])).is_err());
    }
}
