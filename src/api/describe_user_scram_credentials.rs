//! DescribeUserScramCredentials: for each user asked (all users when the list is null), its
//! mechanisms and iterations, never the keys. An unknown user is RESOURCE_NOT_FOUND and a
//! user asked twice DUPLICATE_RESOURCE, as in Kafka.

use std::collections::HashSet;

use bytes::Bytes;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};

use super::{str_bytes, Context, Outcome};
use crate::model::ErrorCode;
use crate::security::acl::Operation;
use crate::security::scram::Mechanism;

pub fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: DescribeUserScramCredentialsRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let described = ctx.services.security.shared.scram.describe();
    let info = |credentials: &[(Mechanism, u32)]| -> Vec<CredentialInfo> {
        credentials
            .iter()
            .map(|(mechanism, iterations)| {
                let mut info = CredentialInfo::default();
                info.mechanism = mechanism.type_id();
                info.iterations = *iterations as i32;
                info
            })
            .collect()
    };
    let mut response = DescribeUserScramCredentialsResponse::default();
    if !ctx.cluster_allowed(Operation::Describe) {
        response.error_code = ErrorCode::ClusterAuthorizationFailed.code();
        response.error_message = Some(str_bytes("Cluster authorization failed."));
        return ctx.reply(&response);
    }
    let asked: Option<Vec<String>> =
        request.users.map(|users| users.iter().map(|u| u.name.to_string()).collect());
    match asked {
        None => {
            for (user, credentials) in &described {
                let mut result = DescribeUserScramCredentialsResult::default();
                result.user = str_bytes(user);
                result.credential_infos = info(credentials);
                response.results.push(result);
            }
        }
        Some(users) => {
            let mut counted: HashSet<&str> = HashSet::new();
            let duplicates: HashSet<&str> =
                users.iter().map(String::as_str).filter(|u| !counted.insert(u)).collect();
            let mut answered: HashSet<&str> = HashSet::new();
            for user in &users {
                if !answered.insert(user.as_str()) {
                    continue;
                }
                let mut result = DescribeUserScramCredentialsResult::default();
                result.user = str_bytes(user);
                if duplicates.contains(user.as_str()) {
                    result.error_code = ErrorCode::DuplicateResource.code();
                    result.error_message = Some(str_bytes(&format!(
                        "Cannot describe SCRAM credentials for the same user twice in a \
                         single request: {user}"
                    )));
                } else {
                    match described.get(user) {
                        Some(credentials) => result.credential_infos = info(credentials),
                        None => {
                            result.error_code = ErrorCode::ResourceNotFound.code();
                            result.error_message = Some(str_bytes(&format!(
                                "Attempt to describe a user credential that does not exist: {user}"
                            )));
                        }
                    }
                }
                response.results.push(result);
            }
        }
    }
    ctx.reply(&response)
}
