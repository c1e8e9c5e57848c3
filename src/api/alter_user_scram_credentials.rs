//! AlterUserScramCredentials: upserts (the client sends salt, iterations and the salted
//! password, never the password) and deletions, answered per user. A user any of whose
//! changes is invalid (unknown mechanism, iterations outside 4096..=16384, empty name or
//! salt, the same user and mechanism twice) gets that error and none of its changes; the
//! others are written to the credentials file in one go (`security::credentials`).
//!
//! With an authorizer it needs ALTER on the cluster; without one every client may call it,
//! as on Kafka without one. Clustered, each change is a record on the metadata log (Kafka's
//! UserScramCredentialRecord and RemoveUserScramCredentialRecord), through any node, and
//! every node authenticates with it once applied (`controller::Controller::change_scram`).

use std::collections::{BTreeMap, HashSet};

use bytes::Bytes;
use kafka_protocol::messages::alter_user_scram_credentials_response as response;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
};

use super::{str_bytes, Context, Outcome};
use crate::model::ErrorCode;
use crate::security::acl::Operation;
use crate::security::credentials::{Change, ChangeError};
use crate::security::scram::{Credential, Mechanism, ITERATIONS_MAX, ITERATIONS_MIN};

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: AlterUserScramCredentialsRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    // Kafka: ALTER on the cluster, else every user's result is CLUSTER_AUTHORIZATION_FAILED.
    if !ctx.cluster_allowed(Operation::Alter) {
        let mut response = AlterUserScramCredentialsResponse::default();
        let names = request.deletions.iter().map(|d| &d.name);
        let mut names: Vec<String> = names
            .chain(request.upsertions.iter().map(|u| &u.name))
            .map(|n| n.to_string())
            .collect();
        names.sort();
        names.dedup();
        for user in names {
            let message = Some("Cluster authorization failed.".to_string());
            response.results.push(result_of(&user, ErrorCode::ClusterAuthorizationFailed, message));
        }
        return ctx.reply(&response);
    }
    // Per user, in first-seen order: its changes, or its first error.
    let mut users: BTreeMap<String, Result<Vec<Change>, (ErrorCode, String)>> = BTreeMap::new();
    let mut seen: HashSet<(String, i8)> = HashSet::new();
    let mut add = |user: &str, mechanism: i8, change: Result<Change, (ErrorCode, String)>| {
        let entry = users.entry(user.to_string()).or_insert_with(|| Ok(Vec::new()));
        let change = if !seen.insert((user.to_string(), mechanism)) {
            Err((
                ErrorCode::DuplicateResource,
                "A user credential cannot be altered twice in the same request".to_string(),
            ))
        } else {
            change
        };
        match (entry.as_mut(), change) {
            (Ok(changes), Ok(change)) => changes.push(change),
            (Ok(_), Err(error)) => *entry = Err(error),
            (Err(_), _) => {}
        }
    };
    for deletion in &request.deletions {
        let user = deletion.name.as_str();
        let change = mechanism(deletion.mechanism)
            .and_then(|m| named(user).map(|_| m))
            .map(|mechanism| Change::Delete { user: user.to_string(), mechanism });
        add(user, deletion.mechanism, change);
    }
    for upsertion in &request.upsertions {
        let user = upsertion.name.as_str();
        let change = mechanism(upsertion.mechanism).and_then(|mechanism| {
            named(user)?;
            let iterations = upsertion.iterations;
            if !(ITERATIONS_MIN as i32..=ITERATIONS_MAX as i32).contains(&iterations) {
                return Err((
                    ErrorCode::UnacceptableCredential,
                    format!(
                        "Iterations {iterations} must be from {ITERATIONS_MIN} to \
                         {ITERATIONS_MAX}"
                    ),
                ));
            }
            if upsertion.salt.is_empty() || upsertion.salted_password.is_empty() {
                return Err((
                    ErrorCode::UnacceptableCredential,
                    "Salt and salted password must not be empty".to_string(),
                ));
            }
            let credential = Credential::from_salted_password(
                mechanism,
                &upsertion.salted_password,
                &upsertion.salt,
                iterations as u32,
            );
            Ok(Change::Upsert { user: user.to_string(), mechanism, credential })
        });
        add(user, upsertion.mechanism, change);
    }
    let mut response = AlterUserScramCredentialsResponse::default();
    let mut pending: Vec<(String, usize)> = Vec::new();
    let mut changes: Vec<Change> = Vec::new();
    for (user, result) in users {
        match result {
            Ok(user_changes) => {
                pending.push((user, user_changes.len()));
                changes.extend(user_changes);
            }
            Err((code, message)) => response.results.push(result_of(&user, code, Some(message))),
        }
    }
    let mut outcomes = match changes.is_empty() {
        true => Vec::new().into_iter(),
        false => ctx.services.controller.change_scram(changes).await.into_iter(),
    };
    for (user, count) in pending {
        let mut error: Option<(ErrorCode, String)> = None;
        for outcome in outcomes.by_ref().take(count) {
            let failed = match outcome {
                Ok(()) => None,
                Err(ChangeError::NotFound) => Some((
                    ErrorCode::ResourceNotFound,
                    "Attempt to delete a user credential that does not exist".to_string(),
                )),
                Err(ChangeError::Storage(message)) => {
                    tracing::error!("AlterUserScramCredentials: {message}");
                    Some((ErrorCode::KafkaStorageError, message))
                }
                Err(ChangeError::Refused(code, message)) => {
                    tracing::warn!("AlterUserScramCredentials: {message}");
                    Some((code, message))
                }
            };
            error = error.or(failed);
        }
        match error {
            None => {
                tracing::info!(user = %user, "SCRAM credentials changed");
                response.results.push(result_of(&user, ErrorCode::None, None));
            }
            Some((code, message)) => response.results.push(result_of(&user, code, Some(message))),
        }
    }
    ctx.reply(&response)
}

fn mechanism(id: i8) -> Result<Mechanism, (ErrorCode, String)> {
    Mechanism::from_type_id(id).ok_or_else(|| {
        (ErrorCode::UnsupportedSaslMechanism, format!("Unknown SCRAM mechanism {id}"))
    })
}

fn named(user: &str) -> Result<(), (ErrorCode, String)> {
    match user.is_empty() {
        true => Err((ErrorCode::UnacceptableCredential, "Username must not be empty".into())),
        false => Ok(()),
    }
}

fn result_of(
    user: &str,
    code: ErrorCode,
    message: Option<String>,
) -> response::AlterUserScramCredentialsResult {
    let mut result = response::AlterUserScramCredentialsResult::default();
    result.user = str_bytes(user);
    result.error_code = code.code();
    result.error_message = message.map(|m| str_bytes(&m));
    result
}
