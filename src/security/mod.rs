//! Authentication and authorization: TLS material (`tls`), SASL PLAIN (`plain`) and SCRAM
//! (`scram`), the SCRAM credentials in the data dir (`credentials`), each connection's SASL
//! state (`Session`), and the ACL authorizer (`acl`; `ShardSecurity::authorize` is what the
//! handlers ask).
//!
//! A connection on a SASL listener goes through Kafka's states:
//!
//! ```text
//!  start ── ApiVersions (any number) ──▶ start ── SaslHandshake(mechanism) ──▶ handshaken
//!  handshaken ── SaslAuthenticate ... ──▶ authenticated (session until now + reauth ms)
//!  authenticated ── SaslHandshake (KIP-368 re-authentication, same mechanism and user) ──▶ ...
//! ```
//!
//! Anything else before authentication, or any request but SaslHandshake after the session
//! expired, closes the connection, as Kafka closes it. A failed login is answered
//! SASL_AUTHENTICATION_FAILED after `SASL_FAILED_LOGIN_DELAY_MS`, logged without the secret,
//! and the connection closes; a source with too many failures in a minute is refused
//! unchecked (per shard, `FailedLogins`).
//!
//! The pieces here are pure or nearly (the credentials file, the TLS files): the handlers
//! in `api` and the connection in `net` drive them.

pub mod acl;
pub mod credentials;
pub mod plain;
pub mod scram;
pub mod tls;

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use crate::config::{Config, SecurityProtocol};
use crate::constants::{
    SASL_FAILED_LOGINS_PER_WINDOW_MAX, SASL_FAILED_LOGIN_SOURCES_MAX, SASL_FAILED_LOGIN_WINDOW_MS,
};
use crate::security::acl::{
    AclStore, Caller, DecisionCache, Operation, Policy, ResourceType, ShardAcls,
};
use crate::security::credentials::{BootstrapCredential, ScramStore};
use crate::security::plain::PlainHash;
use crate::security::scram::{Mechanism, ScramServer};
use crate::security::tls::{Tls, TlsFiles};

/// A SASL mechanism Spate offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    Scram(Mechanism),
}

impl SaslMechanism {
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::Scram(m) => m.name(),
        }
    }
}

/// What the process knows for authentication, shared by the shards (read without locks).
pub struct Security {
    pub tls: Option<Tls>,
    pub scram: ScramStore,
    plain_users: HashMap<String, PlainHash>,
    /// In the order SaslHandshake lists them.
    pub mechanisms: Vec<SaslMechanism>,
    pub reauth_ms: u64,
    /// The ACLs and the authorizer's settings (`acl`).
    pub acls: Arc<AclStore>,
    /// Clustered (`--controller-quorum-voters`): the credentials and the ACLs are the
    /// metadata log's, which the controller applies (`ScramStore::replace`,
    /// `AclStore::replace`) and changes go through.
    pub clustered: bool,
    /// Clustered: what this node's files held and the bootstrap credentials, for the
    /// controller to carry to the log once (taken).
    pub to_log: std::sync::Mutex<Option<ToLog>>,
    /// How this node's inter-broker clients authenticate (`inter_broker`).
    pub inter_broker: Option<InterBroker>,
    /// Whether `scram` holds what logins are checked against: at once on a single node;
    /// clustered, once this start's credentials are on the metadata log and applied here
    /// (`mark_scram_ready`). Before, a login cannot tell a wrong password from a credential
    /// not applied yet, so it waits, and is not counted against its source.
    scram_ready: std::sync::atomic::AtomicBool,
}

/// What a clustered node carries to the metadata log at start (`Security::to_log`): the
/// credentials and ACLs of its files (from before the log carried them: added when the log
/// has no credential for that user and mechanism; ACLs are added, which changes nothing
/// when the log has them), and the `--scram-bootstrap` credentials (added when absent, as
/// on a single node). The files are renamed `*.migrated` once the log holds them.
pub struct ToLog {
    pub scram: credentials::Table,
    pub acls: std::collections::BTreeSet<acl::AclBinding>,
    pub bootstrap: Vec<BootstrapCredential>,
    /// The files to rename once carried (those that exist).
    pub files: Vec<std::path::PathBuf>,
}

/// Kafka's `sasl.mechanism.inter.broker.protocol` with the broker's own user and password
/// (Kafka's `listener.name.<listener>.<mechanism>.sasl.jaas.config` username and password):
/// what the follower fetchers and the transaction coordinator log in with on the other
/// brokers' listener (a cluster node has one: Kafka's inter.broker.listener.name).
#[derive(Clone)]
pub struct InterBroker {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: String,
}

impl InterBroker {
    /// The inter-broker login of the config (None: the brokers connect as ANONYMOUS); the
    /// error is one sentence with the fix.
    pub fn from_config(s: &crate::config::SecurityConfig) -> Result<Option<InterBroker>, String> {
        let Some(name) = &s.sasl_mechanism_inter_broker_protocol else {
            if s.inter_broker_sasl_username.is_some() || s.inter_broker_sasl_password.is_some() {
                return Err("--inter-broker-sasl-username and --inter-broker-sasl-password need \
                            --sasl-mechanism-inter-broker-protocol"
                    .into());
            }
            return Ok(None);
        };
        let mechanism = match name.as_str() {
            "PLAIN" => SaslMechanism::Plain,
            other => SaslMechanism::Scram(Mechanism::from_name(other).ok_or_else(|| {
                format!(
                    "--sasl-mechanism-inter-broker-protocol {other:?} is not one of PLAIN, \
                     SCRAM-SHA-256, SCRAM-SHA-512"
                )
            })?),
        };
        match (&s.inter_broker_sasl_username, &s.inter_broker_sasl_password) {
            (Some(username), Some(password)) if !username.is_empty() => Ok(Some(InterBroker {
                mechanism,
                username: username.clone(),
                password: password.clone(),
            })),
            _ => Err("--sasl-mechanism-inter-broker-protocol needs --inter-broker-sasl-username \
                      and --inter-broker-sasl-password"
                .into()),
        }
    }
}

impl std::fmt::Debug for InterBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} as {:?}", self.mechanism.name(), self.username)
    }
}

impl Security {
    /// Loads the TLS files, the PLAIN users and the SCRAM credentials (adding the bootstrap
    /// ones). The error is one sentence with the fix.
    pub fn load(config: &Config, meta_dir: &Path) -> Result<Security, String> {
        let s = &config.security;
        let tls = match (&s.tls_cert_file, &s.tls_key_file) {
            (Some(cert), Some(key)) => Some(Tls::load(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: s.tls_client_ca_file.clone(),
            })?),
            _ => None,
        };
        let plain_users = match &s.sasl_plain_users_file {
            Some(path) => plain::read_users_file(path)?,
            None => HashMap::new(),
        };
        let bootstrap: Vec<BootstrapCredential> = s
            .scram_bootstrap
            .iter()
            .map(|text| BootstrapCredential::parse(text))
            .collect::<Result<_, _>>()?;
        let clustered = config.cluster.is_some();
        let scram = ScramStore::open(meta_dir)?;
        if !clustered {
            let added = scram.bootstrap(&bootstrap)?;
            if added > 0 {
                tracing::info!(added, "SCRAM bootstrap credentials stored");
            }
        }
        let mut mechanisms = Vec::new();
        if s.sasl_plain_users_file.is_some() {
            mechanisms.push(SaslMechanism::Plain);
        }
        mechanisms.push(SaslMechanism::Scram(Mechanism::Sha256));
        mechanisms.push(SaslMechanism::Scram(Mechanism::Sha512));
        let policy = Policy {
            super_users: s.super_users.iter().cloned().collect(),
            allow_if_no_acl: s.allow_everyone_if_no_acl_found,
        };
        let acls = Arc::new(AclStore::open(meta_dir, s.authorizer, policy)?);
        // Clustered: the log's credentials and ACLs only (none until it is applied); the
        // files' go to the log.
        let to_log = clustered.then(|| {
            let files = [credentials::CREDENTIALS_FILE, acl::ACLS_FILE]
                .iter()
                .map(|name| meta_dir.join(name))
                .filter(|path| path.exists())
                .collect();
            let to_log = ToLog {
                scram: scram.entries(),
                acls: acls.load().acls().clone(),
                bootstrap: bootstrap.clone(),
                files,
            };
            scram.replace(&credentials::Table::new());
            acls.replace(&std::collections::BTreeSet::new());
            to_log
        });
        let inter_broker = InterBroker::from_config(s)?;
        let first = config.listeners.first().map(|l| l.protocol);
        if clustered {
            match (first, &inter_broker) {
                (Some(p), None) if p.sasl() => {
                    return Err(format!(
                        "the brokers of a cluster connect to each other on their listener \
                         ({}); give --sasl-mechanism-inter-broker-protocol with \
                         --inter-broker-sasl-username and --inter-broker-sasl-password",
                        p.name()
                    ))
                }
                (Some(p), _) if p.tls() => {
                    return Err(format!(
                        "the brokers of a cluster connect to each other on their listener \
                         ({}), and their clients do not speak TLS yet; use a PLAINTEXT or \
                         SASL_PLAINTEXT listener",
                        p.name()
                    ))
                }
                _ => {}
            }
        }
        if inter_broker.is_some() && !(clustered && first.is_some_and(|p| p.sasl())) {
            return Err(
                "--sasl-mechanism-inter-broker-protocol needs a cluster node whose listener \
                        is SASL_PLAINTEXT (the brokers connect to each other on it)"
                    .into(),
            );
        }
        if s.authorizer {
            tracing::info!(
                acls = acls.load().acls().len(),
                super_users = ?s.super_users,
                allow_everyone_if_no_acl_found = s.allow_everyone_if_no_acl_found,
                "ACL authorizer on"
            );
        }
        Ok(Security {
            tls,
            scram,
            plain_users,
            mechanisms,
            reauth_ms: s.connections_max_reauth_ms,
            acls,
            clustered,
            to_log: std::sync::Mutex::new(to_log),
            inter_broker,
            scram_ready: std::sync::atomic::AtomicBool::new(!clustered),
        })
    }

    /// Whether SCRAM logins are checked against the credentials they should be (see
    /// `scram_ready`).
    pub fn scram_ready(&self) -> bool {
        self.scram_ready.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Clustered: the metadata log's credentials are applied here, this start's included.
    pub fn mark_scram_ready(&self) {
        if !self.scram_ready.swap(true, std::sync::atomic::Ordering::AcqRel) {
            tracing::info!(
                credentials = self.scram.describe().len(),
                "SCRAM logins open: the metadata log's credentials are applied"
            );
        }
    }

    pub fn mechanism(&self, name: &str) -> Option<SaslMechanism> {
        self.mechanisms.iter().copied().find(|m| m.name() == name)
    }

    pub fn plain_user(&self, name: &str) -> Option<&PlainHash> {
        self.plain_users.get(name)
    }
}

/// Where a connection stands with SASL (`Session::sasl`).
enum SaslState {
    /// Nothing yet, or between two exchanges.
    Idle,
    /// SaslHandshake accepted this mechanism; SaslAuthenticate comes next.
    Handshaken(SaslMechanism),
    /// A SCRAM exchange after its first message.
    Scram(Box<ScramServer>),
}

/// The authenticated identity of a connection and until when it holds.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub principal: String,
    pub mechanism: SaslMechanism,
    /// `coarse` milliseconds at which the session ends (None: never).
    pub expires_ms: Option<u64>,
}

/// What a request may do on this connection now (`Session::admits`).
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// Close the connection; the reason is for the debug log.
    Close(String),
}

/// One connection's listener and authentication state.
pub struct Session {
    pub listener: usize,
    pub protocol: SecurityProtocol,
    pub peer: Option<SocketAddr>,
    /// The client certificate's subject on an mTLS connection.
    pub tls_principal: Option<String>,
    state: RefCell<SaslState>,
    authenticated: RefCell<Option<Authenticated>>,
    /// The peer's IP as ACL hosts name it ("" when unknown: only "*" matches).
    host: String,
    /// This connection's authorization decisions (`acl::DecisionCache`).
    decisions: RefCell<DecisionCache>,
}

/// Requests a SASL listener takes before authentication.
pub const API_VERSIONS: i16 = 18;
pub const SASL_HANDSHAKE: i16 = 17;
pub const SASL_AUTHENTICATE: i16 = 36;

impl Session {
    pub fn new(
        listener: usize,
        protocol: SecurityProtocol,
        peer: Option<SocketAddr>,
        tls_principal: Option<String>,
    ) -> Session {
        Session {
            listener,
            protocol,
            peer,
            tls_principal,
            state: RefCell::new(SaslState::Idle),
            authenticated: RefCell::new(None),
            host: peer.map(|p| p.ip().to_string()).unwrap_or_default(),
            decisions: RefCell::new(DecisionCache::default()),
        }
    }

    /// Kafka's principal: the SASL user, the certificate's subject, or ANONYMOUS.
    pub fn principal(&self) -> String {
        if let Some(authenticated) = self.authenticated.borrow().as_ref() {
            return format!("User:{}", authenticated.principal);
        }
        match &self.tls_principal {
            Some(subject) => format!("User:{subject}"),
            None => "User:ANONYMOUS".into(),
        }
    }

    /// Whether a request with this API key may run now (`now_ms`: the coarse clock).
    pub fn admits(&self, api_key: i16, now_ms: u64) -> Admission {
        if !self.protocol.sasl() {
            return Admission::Allowed;
        }
        let state = self.state.borrow();
        let exchanging = !matches!(*state, SaslState::Idle);
        match api_key {
            SASL_AUTHENTICATE if exchanging => Admission::Allowed,
            SASL_HANDSHAKE | API_VERSIONS if !exchanging => Admission::Allowed,
            _ if exchanging => Admission::Close(format!(
                "unexpected request (API key {api_key}) during SASL authentication"
            )),
            _ => match self.authenticated.borrow().as_ref() {
                None => Admission::Close(format!(
                    "unexpected request (API key {api_key}) before SASL authentication"
                )),
                Some(a) if a.expires_ms.is_some_and(|at| now_ms >= at) => Admission::Close(
                    format!("SASL session of {} expired without re-authentication", a.principal),
                ),
                Some(_) => Admission::Allowed,
            },
        }
    }

    /// SaslHandshake: the mechanism for the exchange that follows. A re-authentication must
    /// keep the mechanism of the session.
    pub fn handshake(&self, mechanism: SaslMechanism) -> Result<(), String> {
        if let Some(previous) = self.authenticated.borrow().as_ref() {
            if previous.mechanism != mechanism {
                return Err(format!(
                    "re-authentication with {} on a {} session",
                    mechanism.name(),
                    previous.mechanism.name()
                ));
            }
        }
        *self.state.borrow_mut() = SaslState::Handshaken(mechanism);
        Ok(())
    }

    /// The mechanism of the exchange in progress.
    pub fn mechanism(&self) -> Option<SaslMechanism> {
        match &*self.state.borrow() {
            SaslState::Idle => None,
            SaslState::Handshaken(m) => Some(*m),
            SaslState::Scram(server) => Some(SaslMechanism::Scram(server.mechanism())),
        }
    }

    /// Takes the SCRAM exchange in progress (None after the handshake: a new one starts).
    pub fn take_scram(&self) -> Option<Box<ScramServer>> {
        let mut state = self.state.borrow_mut();
        match std::mem::replace(&mut *state, SaslState::Idle) {
            SaslState::Scram(server) => Some(server),
            other => {
                *state = other;
                None
            }
        }
    }

    /// A SCRAM exchange waits for its final message.
    pub fn continue_scram(&self, server: Box<ScramServer>) {
        *self.state.borrow_mut() = SaslState::Scram(server);
    }

    /// The exchange failed: the connection closes after the answer.
    pub fn fail(&self) {
        *self.state.borrow_mut() = SaslState::Idle;
    }

    /// The exchange succeeded for `user`: the session runs until `now_ms + reauth_ms` (0: no
    /// end). A re-authentication as another user fails, as Kafka fails it.
    pub fn succeed(
        &self,
        user: String,
        mechanism: SaslMechanism,
        now_ms: u64,
        reauth_ms: u64,
    ) -> Result<(), String> {
        *self.state.borrow_mut() = SaslState::Idle;
        let mut authenticated = self.authenticated.borrow_mut();
        if let Some(previous) = authenticated.as_ref() {
            if previous.principal != user {
                return Err(format!(
                    "re-authentication as {user:?} on a session of {:?}",
                    previous.principal
                ));
            }
        }
        let expires_ms = (reauth_ms > 0).then(|| now_ms + reauth_ms);
        self.decisions.borrow_mut().clear();
        *authenticated = Some(Authenticated { principal: user, mechanism, expires_ms });
        Ok(())
    }

    pub fn authenticated(&self) -> Option<Authenticated> {
        self.authenticated.borrow().clone()
    }
}

/// Failed logins per source address on one shard, for the rate limit.
#[derive(Default)]
pub struct FailedLogins {
    sources: HashMap<IpAddr, (u64, u32)>,
}

impl FailedLogins {
    /// Whether logins from `ip` are refused unchecked now.
    pub fn blocked(&self, ip: IpAddr, now_ms: u64) -> bool {
        self.sources.get(&ip).is_some_and(|(start, count)| {
            now_ms.saturating_sub(*start) < SASL_FAILED_LOGIN_WINDOW_MS
                && *count >= SASL_FAILED_LOGINS_PER_WINDOW_MAX
        })
    }

    /// Counts a failure; true when this one reached the limit (log it once).
    pub fn failed(&mut self, ip: IpAddr, now_ms: u64) -> bool {
        if self.sources.len() >= SASL_FAILED_LOGIN_SOURCES_MAX && !self.sources.contains_key(&ip) {
            self.sources.retain(|_, (start, _)| {
                now_ms.saturating_sub(*start) < SASL_FAILED_LOGIN_WINDOW_MS
            });
            if self.sources.len() >= SASL_FAILED_LOGIN_SOURCES_MAX {
                let oldest = self.sources.iter().min_by_key(|(_, (start, _))| *start);
                if let Some(oldest) = oldest.map(|(ip, _)| *ip) {
                    self.sources.remove(&oldest);
                }
            }
        }
        let entry = self.sources.entry(ip).or_insert((now_ms, 0));
        if now_ms.saturating_sub(entry.0) >= SASL_FAILED_LOGIN_WINDOW_MS {
            *entry = (now_ms, 0);
        }
        entry.1 += 1;
        entry.1 == SASL_FAILED_LOGINS_PER_WINDOW_MAX
    }
}

/// A shard's view of `Security`, with its own failed-login counts and its copy of the ACLs.
pub struct ShardSecurity {
    pub shared: std::sync::Arc<Security>,
    pub failures: RefCell<FailedLogins>,
    pub acls: ShardAcls,
}

impl ShardSecurity {
    pub fn new(shared: Arc<Security>) -> ShardSecurity {
        let acls = ShardAcls::new(shared.acls.clone());
        ShardSecurity { shared, failures: RefCell::new(FailedLogins::default()), acls }
    }

    /// Whether the authorizer is on (`--authorizer acl`).
    pub fn authorizer(&self) -> bool {
        self.acls.store.enabled
    }

    /// Whether the connection's principal may do `operation` on `name` of `resource_type`:
    /// always without an authorizer; else the connection's remembered decision, or Kafka's
    /// (`acl::AclSet::authorize`), remembered until the ACLs change.
    pub fn authorize(
        &self,
        session: &Session,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        if !self.acls.store.enabled {
            return true;
        }
        self.acls.with(|set| {
            let kind = (resource_type, operation);
            let mut decisions = session.decisions.borrow_mut();
            if let Some(allowed) = decisions.get(set.version, kind, name) {
                return allowed;
            }
            let principal = session.principal();
            let caller = Caller { principal: &principal, host: &session.host };
            let allowed =
                set.authorize(&self.acls.store.policy, caller, operation, resource_type, name);
            if !allowed {
                tracing::debug!(
                    principal,
                    host = session.host,
                    operation = operation.name(),
                    resource_type = resource_type.name(),
                    name,
                    "denied"
                );
            }
            decisions.put(kind, name, allowed);
            allowed
        })
    }

    /// Kafka's `authorizeByResourceType` for the connection (`acl::AclSet::authorize_any`).
    pub fn authorize_any(
        &self,
        session: &Session,
        operation: Operation,
        resource_type: ResourceType,
    ) -> bool {
        if !self.acls.store.enabled {
            return true;
        }
        let principal = session.principal();
        let caller = Caller { principal: &principal, host: &session.host };
        self.acls.with(|set| {
            set.authorize_any(&self.acls.store.policy, caller, operation, resource_type)
        })
    }
}

/// A monotonic clock in milliseconds at the kernel tick's resolution: cheap enough for every
/// request (a vDSO read, no syscall).
pub fn now_ms() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut now) };
    now.tv_sec as u64 * 1000 + now.tv_nsec as u64 / 1_000_000
}

/// Random printable characters (a SCRAM server nonce): 24 random bytes, base64.
pub fn nonce() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 24];
    getrandom::getrandom(&mut bytes)
        .unwrap_or_else(|e| unreachable!("the kernel's random source failed: {e}"));
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Replaces the file at `path` with `text` durably (temporary file, fsync, rename, directory
/// fsync): the ACL file and the SCRAM credentials file.
fn write_file(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir)?;
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sasl_session() -> Session {
        Session::new(0, SecurityProtocol::SaslSsl, None, None)
    }

    #[test]
    fn only_versions_and_handshake_before_authentication() {
        let session = sasl_session();
        assert_eq!(session.admits(API_VERSIONS, 0), Admission::Allowed);
        assert!(matches!(session.admits(3, 0), Admission::Close(_)));
        assert!(matches!(session.admits(SASL_AUTHENTICATE, 0), Admission::Close(_)));
        let scram = SaslMechanism::Scram(Mechanism::Sha256);
        session.handshake(scram).expect("handshake");
        assert_eq!(session.admits(SASL_AUTHENTICATE, 0), Admission::Allowed);
        assert!(matches!(session.admits(3, 0), Admission::Close(_)));
        assert!(matches!(session.admits(SASL_HANDSHAKE, 0), Admission::Close(_)));
        session.succeed("alice".into(), scram, 1_000, 500).expect("succeed");
        assert_eq!(session.principal(), "User:alice");
        assert_eq!(session.admits(3, 1_499), Admission::Allowed);
        assert!(matches!(session.admits(3, 1_500), Admission::Close(_)));
        // Re-authentication: same mechanism and user extends the session.
        assert_eq!(session.admits(SASL_HANDSHAKE, 1_500), Admission::Allowed);
        assert!(session.handshake(SaslMechanism::Plain).is_err());
        session.handshake(scram).expect("re-handshake");
        session.succeed("alice".into(), scram, 1_600, 500).expect("again");
        assert_eq!(session.admits(3, 2_000), Admission::Allowed);
        session.handshake(scram).expect("re-handshake");
        assert!(session.succeed("mallory".into(), scram, 2_000, 500).is_err());
    }

    #[test]
    fn other_listeners_admit_everything() {
        for protocol in [SecurityProtocol::Plaintext, SecurityProtocol::Ssl] {
            let session = Session::new(0, protocol, None, Some("CN=client".into()));
            assert_eq!(session.admits(0, 0), Admission::Allowed);
        }
        let session = Session::new(0, SecurityProtocol::Ssl, None, Some("CN=client".into()));
        assert_eq!(session.principal(), "User:CN=client");
        assert_eq!(sasl_session().principal(), "User:ANONYMOUS");
    }

    #[test]
    fn failed_logins_block_a_source_for_the_window() {
        let mut failures = FailedLogins::default();
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let other: IpAddr = "127.0.0.2".parse().expect("ip");
        for n in 1..=SASL_FAILED_LOGINS_PER_WINDOW_MAX {
            assert!(!failures.blocked(ip, 10));
            assert_eq!(failures.failed(ip, 10), n == SASL_FAILED_LOGINS_PER_WINDOW_MAX);
        }
        assert!(failures.blocked(ip, 10));
        assert!(!failures.blocked(other, 10));
        assert!(!failures.blocked(ip, 10 + SASL_FAILED_LOGIN_WINDOW_MS));
        assert!(!failures.failed(ip, 10 + SASL_FAILED_LOGIN_WINDOW_MS));
        assert!(!failures.blocked(ip, 10 + SASL_FAILED_LOGIN_WINDOW_MS));
    }
}
