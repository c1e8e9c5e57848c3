//! SaslHandshake: the client names a mechanism; the answer lists the enabled ones. An
//! unknown mechanism is answered UNSUPPORTED_SASL_MECHANISM and the connection closes, as in
//! Kafka; so is a re-authentication that changes mechanism. On a listener without SASL the
//! request is answered the same way (nothing there to authenticate against).

use bytes::Bytes;
use kafka_protocol::messages::{SaslHandshakeRequest, SaslHandshakeResponse};

use super::{str_bytes, Context, Outcome};
use crate::model::ErrorCode;

pub fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: SaslHandshakeRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let security = &ctx.services.security.shared;
    let mut response = SaslHandshakeResponse::default();
    response.mechanisms = security.mechanisms.iter().map(|m| str_bytes(m.name())).collect();
    let asked = request.mechanism.as_str();
    let refused = match security.mechanism(asked) {
        _ if !ctx.session.protocol.sasl() => {
            Some(format!("SaslHandshake on the {} listener", ctx.session.protocol.name()))
        }
        None => Some(format!("SASL mechanism {asked:?} is not enabled")),
        Some(mechanism) => ctx.session.handshake(mechanism).err(),
    };
    match refused {
        None => ctx.reply(&response),
        Some(reason) => {
            response.error_code = ErrorCode::UnsupportedSaslMechanism.code();
            match ctx.reply(&response) {
                Outcome::Reply(frame) => Outcome::ReplyAndClose(frame, reason),
                other => other,
            }
        }
    }
}
