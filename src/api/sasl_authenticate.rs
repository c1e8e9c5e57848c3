//! SaslAuthenticate: one step of the exchange SaslHandshake chose (PLAIN: one message;
//! SCRAM: client-first, then client-final). Success answers the session lifetime
//! (`--connections-max-reauth-ms`, KIP-368; 0 when sessions do not expire); failure answers
//! SASL_AUTHENTICATION_FAILED after a short delay, logs the user and the source (never the
//! secret), counts the failure against the source, and closes the connection, as Kafka does.
//!
//! A clustered node has no SCRAM credentials after its start until it has applied the
//! metadata log's, its own bootstrap ones included (Kafka's broker does not open its
//! listeners before it caught up with the log). A SCRAM login meanwhile waits for them, up
//! to `SASL_CREDENTIALS_WAIT_MS`, then is refused as not ready, uncounted: counted, the
//! brokers' own logins to a node that is starting would block their address (every
//! client's on one host) for the rest of the window.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::{SaslAuthenticateRequest, SaslAuthenticateResponse};

use super::{str_bytes, Context, Outcome};
use crate::constants::{
    SASL_CREDENTIALS_POLL_MS, SASL_CREDENTIALS_WAIT_MS, SASL_FAILED_LOGIN_DELAY_MS,
    SASL_FAILED_LOGIN_WINDOW_MS,
};
use crate::model::ErrorCode;
use crate::security::scram::ScramServer;
use crate::security::{nonce, now_ms, plain, SaslMechanism};

/// How one step went.
enum Step {
    /// More to exchange: these bytes to the client.
    Continue(Vec<u8>),
    /// Authenticated as this user; these bytes to the client.
    Done(String, Vec<u8>),
    /// Refused; the reason is logged (it names no secret).
    Failed(String, Option<String>),
}

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: SaslAuthenticateRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let session = &ctx.session;
    let security = &ctx.services.security;
    let Some(mechanism) = session.mechanism() else {
        // `Session::admits` lets SaslAuthenticate through only during an exchange.
        return Outcome::Close("SaslAuthenticate without SaslHandshake".into());
    };
    if matches!(mechanism, SaslMechanism::Scram(_)) && !credentials_ready(ctx).await {
        return not_ready(ctx, mechanism);
    }
    let ip = session.peer.map(|peer| peer.ip());
    let now = now_ms();
    let step = if ip.is_some_and(|ip| security.failures.borrow().blocked(ip, now)) {
        session.fail();
        Step::Failed("too many failed logins from this address".into(), None)
    } else {
        step(ctx, mechanism, &request.auth_bytes)
    };
    let mut response = SaslAuthenticateResponse::default();
    match step {
        Step::Continue(bytes) => {
            response.auth_bytes = Bytes::from(bytes);
            ctx.reply(&response)
        }
        Step::Done(user, bytes) => {
            let reauth_ms = security.shared.reauth_ms;
            if let Err(reason) = session.succeed(user.clone(), mechanism, now, reauth_ms) {
                return failed(ctx, mechanism, reason, Some(user)).await;
            }
            tracing::info!(
                principal = %format!("User:{user}"),
                mechanism = mechanism.name(),
                peer = ?session.peer,
                listener = session.protocol.name(),
                "authenticated"
            );
            response.auth_bytes = Bytes::from(bytes);
            response.session_lifetime_ms = reauth_ms as i64;
            ctx.reply(&response)
        }
        Step::Failed(reason, user) => failed(ctx, mechanism, reason, user).await,
    }
}

fn step(ctx: &Context, mechanism: SaslMechanism, message: &[u8]) -> Step {
    let session = &ctx.session;
    let shared = &ctx.services.security.shared;
    match mechanism {
        SaslMechanism::Plain => {
            session.fail();
            let (user, password) = match plain::parse_message(message) {
                Ok(parsed) => parsed,
                Err(reason) => return Step::Failed(reason, None),
            };
            match shared.plain_user(&user) {
                Some(hash) if hash.matches(&password) => Step::Done(user, Vec::new()),
                Some(_) => Step::Failed("PLAIN: wrong password".into(), Some(user)),
                None => Step::Failed("PLAIN: unknown user".into(), Some(user)),
            }
        }
        SaslMechanism::Scram(scram) => match session.take_scram() {
            None => {
                let mut server = Box::new(ScramServer::new(scram));
                let fake_salt = nonce();
                let first = server.first(
                    message,
                    |user| shared.scram.get(user, scram),
                    &nonce(),
                    fake_salt.as_bytes(),
                );
                match first {
                    Ok(reply) => {
                        session.continue_scram(server);
                        Step::Continue(reply)
                    }
                    Err(failure) => {
                        session.fail();
                        Step::Failed(failure.0, None)
                    }
                }
            }
            Some(mut server) => {
                let user = server.user().map(str::to_string);
                match server.last(message) {
                    Ok((user, reply)) => Step::Done(user, reply),
                    Err(failure) => Step::Failed(failure.0, user),
                }
            }
        },
    }
}

/// Whether the SCRAM credentials are applied (`Security::scram_ready`), waiting up to
/// `SASL_CREDENTIALS_WAIT_MS` for them.
async fn credentials_ready(ctx: &Context) -> bool {
    let shared = &ctx.services.security.shared;
    let mut waited = 0;
    while !shared.scram_ready() {
        if waited >= SASL_CREDENTIALS_WAIT_MS {
            return false;
        }
        glommio::timer::sleep(Duration::from_millis(SASL_CREDENTIALS_POLL_MS)).await;
        waited += SASL_CREDENTIALS_POLL_MS;
    }
    true
}

/// Refuses a SCRAM login on a node whose credentials are not applied yet: not counted
/// against the source (the password may be right), and said so to the client.
fn not_ready(ctx: &Context, mechanism: SaslMechanism) -> Outcome {
    let session = &ctx.session;
    session.fail();
    tracing::info!(
        peer = ?session.peer,
        mechanism = mechanism.name(),
        "SASL login refused: the metadata log's SCRAM credentials are not applied here yet"
    );
    let mut response = SaslAuthenticateResponse::default();
    response.error_code = ErrorCode::SaslAuthenticationFailed.code();
    response.error_message = Some(str_bytes(
        "Authentication failed: this broker has not yet applied the cluster's SCRAM \
         credentials from the metadata log; retry shortly",
    ));
    match ctx.reply(&response) {
        Outcome::Reply(frame) => Outcome::ReplyAndClose(frame, "SASL: not ready".into()),
        other => other,
    }
}

/// Answers a failed login after the delay, counts it, logs it, and closes the connection.
async fn failed(
    ctx: &Context,
    mechanism: SaslMechanism,
    reason: String,
    user: Option<String>,
) -> Outcome {
    let session = &ctx.session;
    session.fail();
    ctx.shard().metrics.authentication_failed(session.listener, mechanism.name());
    let peer = session.peer;
    if let Some(ip) = peer.map(|peer| peer.ip()) {
        if ctx.services.security.failures.borrow_mut().failed(ip, now_ms()) {
            tracing::warn!(
                %ip,
                window_ms = SASL_FAILED_LOGIN_WINDOW_MS,
                "too many failed SASL logins from this address; refusing its logins for the \
                 rest of the window"
            );
        }
    }
    tracing::warn!(
        user = user.as_deref().unwrap_or("?"),
        mechanism = mechanism.name(),
        ?peer,
        listener = session.protocol.name(),
        "SASL authentication failed: {reason}"
    );
    glommio::timer::sleep(Duration::from_millis(SASL_FAILED_LOGIN_DELAY_MS)).await;
    let mut response = SaslAuthenticateResponse::default();
    response.error_code = ErrorCode::SaslAuthenticationFailed.code();
    response.error_message = Some(str_bytes(&format!(
        "Authentication failed: invalid credentials with SASL mechanism {}",
        mechanism.name()
    )));
    match ctx.reply(&response) {
        Outcome::Reply(frame) => Outcome::ReplyAndClose(frame, format!("SASL failed: {reason}")),
        other => other,
    }
}
