//! ACLs: Kafka's authorizer (`StandardAuthorizer`'s rules) as pure code, the ACL file in the
//! data dir, and the per-shard and per-connection copies the request path reads.
//!
//! A decision (principal, host, operation, resource) follows Kafka:
//!
//! ```text
//!  super user ─────────────────────────────────────────────────────────▶ allowed
//!  ACLs that match the resource: LITERAL with the same name, LITERAL "*", PREFIXED whose
//!  prefix starts the name; of those, the ones whose principal is the caller's or "User:*"
//!  and whose host is the caller's IP or "*":
//!    a DENY for the operation (or ALL) ────────────────────────────────▶ denied
//!    an ALLOW for the operation, ALL, or an operation that implies it ──▶ allowed
//!  no ACL at all on the resource (whoever it names) and
//!  --allow-everyone-if-no-acl-found ──────────────────────────────────▶ allowed
//!  otherwise ──────────────────────────────────────────────────────────▶ denied
//! ```
//!
//! DESCRIBE is implied by READ, WRITE, DELETE and ALTER; DESCRIBE_CONFIGS by ALTER_CONFIGS
//! (for ALLOW entries only: a DENY names exactly what it denies, or ALL).
//!
//! Cost. `AclSet` indexes its entries by resource type and name: a literal name is one hash
//! lookup (plus one for "*"), a prefixed one a lookup per distinct prefix length of that
//! resource type, so a decision reads the few entries of the resource, never all ACLs. On
//! top of that every connection remembers its decisions (`DecisionCache`) until the ACLs
//! change, so the hot path (a producer writing one topic) costs one small hash lookup per
//! topic and request. Changes (CreateAcls, DeleteAcls: rare, administrative) write the file
//! under one writer lock, then publish a new `AclSet` and bump `AclStore::version`; each
//! shard compares that counter (one atomic read of a line only changes write) with its own
//! copy's and reloads when it moved. No lock is taken and nothing crosses cores per request.
//!
//! The file, `__spate_meta/acls`, is TOML, written whole (temporary file, fsync, rename,
//! directory fsync) as the SCRAM credentials and the catalog are, on a single node.
//! Clustered, the ACLs are on the metadata log instead (AccessControlEntry records, applied
//! by every node): the set is replaced by the log's (`AclStore::replace`) whenever it
//! changes, and the file is only read once, to carry what it holds to the log
//! (`controller`).

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

/// The one name of the CLUSTER resource.
pub const CLUSTER_NAME: &str = "kafka-cluster";
/// A LITERAL resource name that matches every name of its type.
pub const WILDCARD: &str = "*";
/// The principal that matches every principal.
pub const WILDCARD_PRINCIPAL: &str = "User:*";
/// The file in the data dir's `__spate_meta`.
pub const ACLS_FILE: &str = "acls";
/// Decisions a connection remembers per (resource type, operation) before it forgets them
/// all (a client naming ever new topics must not grow it without bound).
pub const DECISIONS_PER_KIND_MAX: usize = 4096;

/// Kafka's resource types (wire values of `ResourceType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceType {
    Topic = 2,
    Group = 3,
    Cluster = 4,
    TransactionalId = 5,
    DelegationToken = 6,
    User = 7,
}

/// Number of `ResourceType` variants (the index arrays of `AclSet`).
const RESOURCE_TYPES: usize = 6;

/// Kafka's pattern types of a stored ACL (wire values of `PatternType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PatternType {
    Literal = 3,
    Prefixed = 4,
}

/// Kafka's ACL operations (wire values of `AclOperation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    All = 2,
    Read = 3,
    Write = 4,
    Create = 5,
    Delete = 6,
    Alter = 7,
    Describe = 8,
    ClusterAction = 9,
    DescribeConfigs = 10,
    AlterConfigs = 11,
    IdempotentWrite = 12,
    CreateTokens = 13,
    DescribeTokens = 14,
}

/// ALLOW or DENY (wire values of `AclPermissionType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    Deny = 2,
    Allow = 3,
}

/// Wire values that mean "any" in a filter.
const ANY: i8 = 1;
/// A MATCH pattern filter: every pattern that would apply to the named resource.
const MATCH: i8 = 2;

impl ResourceType {
    const ALL: [ResourceType; RESOURCE_TYPES] = [
        ResourceType::Topic,
        ResourceType::Group,
        ResourceType::Cluster,
        ResourceType::TransactionalId,
        ResourceType::DelegationToken,
        ResourceType::User,
    ];

    pub fn from_wire(value: i8) -> Option<ResourceType> {
        ResourceType::ALL.into_iter().find(|t| *t as i8 == value)
    }

    pub fn name(self) -> &'static str {
        match self {
            ResourceType::Topic => "TOPIC",
            ResourceType::Group => "GROUP",
            ResourceType::Cluster => "CLUSTER",
            ResourceType::TransactionalId => "TRANSACTIONAL_ID",
            ResourceType::DelegationToken => "DELEGATION_TOKEN",
            ResourceType::User => "USER",
        }
    }

    fn from_name(name: &str) -> Option<ResourceType> {
        ResourceType::ALL.into_iter().find(|t| t.name() == name)
    }

    fn index(self) -> usize {
        self as usize - ResourceType::Topic as usize
    }
}

impl ResourceType {
    /// The operations Kafka reports for a resource of this type (`AclEntry.
    /// supportedOperations`), in the authorized-operations bitfields.
    pub fn supported_operations(self) -> &'static [Operation] {
        use Operation::*;
        match self {
            ResourceType::Topic => {
                &[Read, Write, Create, Describe, Delete, Alter, DescribeConfigs, AlterConfigs]
            }
            ResourceType::Group => &[Read, Describe, Delete],
            ResourceType::Cluster => &[
                Create,
                ClusterAction,
                DescribeConfigs,
                AlterConfigs,
                IdempotentWrite,
                Alter,
                Describe,
            ],
            ResourceType::TransactionalId => &[Describe, Write],
            ResourceType::DelegationToken => &[Describe],
            ResourceType::User => &[CreateTokens, DescribeTokens],
        }
    }
}

/// Kafka's authorized-operations bitfield: bit `code` set for each operation.
pub fn operations_bitfield(operations: impl IntoIterator<Item = Operation>) -> i32 {
    operations.into_iter().fold(0, |bits, operation| bits | (1 << operation as i32))
}

impl PatternType {
    pub fn from_wire(value: i8) -> Option<PatternType> {
        [PatternType::Literal, PatternType::Prefixed].into_iter().find(|p| *p as i8 == value)
    }

    pub fn name(self) -> &'static str {
        match self {
            PatternType::Literal => "LITERAL",
            PatternType::Prefixed => "PREFIXED",
        }
    }

    fn from_name(name: &str) -> Option<PatternType> {
        [PatternType::Literal, PatternType::Prefixed].into_iter().find(|p| p.name() == name)
    }
}

impl Operation {
    const EVERY: [Operation; 13] = [
        Operation::All,
        Operation::Read,
        Operation::Write,
        Operation::Create,
        Operation::Delete,
        Operation::Alter,
        Operation::Describe,
        Operation::ClusterAction,
        Operation::DescribeConfigs,
        Operation::AlterConfigs,
        Operation::IdempotentWrite,
        Operation::CreateTokens,
        Operation::DescribeTokens,
    ];

    pub fn from_wire(value: i8) -> Option<Operation> {
        Operation::EVERY.into_iter().find(|o| *o as i8 == value)
    }

    pub fn name(self) -> &'static str {
        match self {
            Operation::All => "ALL",
            Operation::Read => "READ",
            Operation::Write => "WRITE",
            Operation::Create => "CREATE",
            Operation::Delete => "DELETE",
            Operation::Alter => "ALTER",
            Operation::Describe => "DESCRIBE",
            Operation::ClusterAction => "CLUSTER_ACTION",
            Operation::DescribeConfigs => "DESCRIBE_CONFIGS",
            Operation::AlterConfigs => "ALTER_CONFIGS",
            Operation::IdempotentWrite => "IDEMPOTENT_WRITE",
            Operation::CreateTokens => "CREATE_TOKENS",
            Operation::DescribeTokens => "DESCRIBE_TOKENS",
        }
    }

    fn from_name(name: &str) -> Option<Operation> {
        Operation::EVERY.into_iter().find(|o| o.name() == name)
    }

    /// Whether an ALLOW entry for `self` allows `asked` (Kafka's implications).
    fn allows(self, asked: Operation) -> bool {
        self == Operation::All
            || self == asked
            || match asked {
                Operation::Describe => matches!(
                    self,
                    Operation::Read | Operation::Write | Operation::Delete | Operation::Alter
                ),
                Operation::DescribeConfigs => self == Operation::AlterConfigs,
                _ => false,
            }
    }

    /// Whether a DENY entry for `self` denies `asked`.
    fn denies(self, asked: Operation) -> bool {
        self == Operation::All || self == asked
    }
}

impl Permission {
    pub fn from_wire(value: i8) -> Option<Permission> {
        [Permission::Deny, Permission::Allow].into_iter().find(|p| *p as i8 == value)
    }

    pub fn name(self) -> &'static str {
        match self {
            Permission::Deny => "DENY",
            Permission::Allow => "ALLOW",
        }
    }

    fn from_name(name: &str) -> Option<Permission> {
        [Permission::Deny, Permission::Allow].into_iter().find(|p| p.name() == name)
    }
}

/// One ACL: Kafka's `AclBinding` (a resource pattern and an entry).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AclBinding {
    pub resource_type: ResourceType,
    pub name: String,
    pub pattern: PatternType,
    pub principal: String,
    pub host: String,
    pub operation: Operation,
    pub permission: Permission,
}

/// The wire fields of an ACL (CreateAcls' creation, a filter's fields), before validation.
#[derive(Debug, Clone, Default)]
pub struct WireAcl {
    pub resource_type: i8,
    pub name: Option<String>,
    pub pattern: i8,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: i8,
    pub permission: i8,
}

impl AclBinding {
    /// Validates a CreateAcls creation as Kafka's controller does; the error is the message
    /// of INVALID_REQUEST.
    pub fn from_wire(wire: WireAcl) -> Result<AclBinding, String> {
        let resource_type = ResourceType::from_wire(wire.resource_type)
            .ok_or_else(|| format!("Invalid resourceType {}", wire.resource_type))?;
        if matches!(resource_type, ResourceType::DelegationToken | ResourceType::User) {
            return Err(format!(
                "ACLs on {} resources are not supported (no delegation tokens)",
                resource_type.name()
            ));
        }
        let pattern = PatternType::from_wire(wire.pattern)
            .ok_or_else(|| format!("Invalid patternType {}", wire.pattern))?;
        let operation = Operation::from_wire(wire.operation)
            .ok_or_else(|| format!("Invalid operation {}", wire.operation))?;
        let permission = Permission::from_wire(wire.permission)
            .ok_or_else(|| format!("Invalid permissionType {}", wire.permission))?;
        let name = wire.name.unwrap_or_default();
        if name.is_empty() {
            return Err("Resource name should not be empty".into());
        }
        if resource_type == ResourceType::Cluster && name != CLUSTER_NAME {
            return Err(format!("The only valid name for the CLUSTER resource is {CLUSTER_NAME}"));
        }
        let principal = wire.principal.unwrap_or_default();
        match principal.split_once(':') {
            Some((kind, user)) if !kind.is_empty() && !user.is_empty() => {}
            _ => return Err(format!("Could not parse principal from `{principal}`")),
        }
        let host = wire.host.unwrap_or_default();
        if host.is_empty() {
            return Err("Invalid empty host (use * for every host)".into());
        }
        Ok(AclBinding { resource_type, name, pattern, principal, host, operation, permission })
    }

    /// Whether this ACL applies to `name` of its resource type.
    fn covers(&self, name: &str) -> bool {
        match self.pattern {
            PatternType::Literal => self.name == name || self.name == WILDCARD,
            PatternType::Prefixed => name.starts_with(&self.name),
        }
    }
}

/// How a filter selects pattern types: Kafka's ANY, MATCH, LITERAL or PREFIXED.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatternFilter {
    Any,
    Match,
    Exactly(PatternType),
}

/// A DescribeAcls or DeleteAcls filter: Kafka's `AclBindingFilter`.
#[derive(Debug, Clone)]
pub struct AclFilter {
    resource_type: Option<ResourceType>,
    name: Option<String>,
    pattern: PatternFilter,
    principal: Option<String>,
    host: Option<String>,
    operation: Option<Operation>,
    permission: Option<Permission>,
}

impl AclFilter {
    /// Reads a filter; UNKNOWN (or out of range) values are an error (INVALID_REQUEST).
    pub fn from_wire(wire: WireAcl) -> Result<AclFilter, String> {
        let resource_type = match wire.resource_type {
            ANY => None,
            value => Some(
                ResourceType::from_wire(value)
                    .ok_or_else(|| format!("Invalid resourceType filter {value}"))?,
            ),
        };
        let pattern = match wire.pattern {
            ANY => PatternFilter::Any,
            MATCH => PatternFilter::Match,
            value => PatternFilter::Exactly(
                PatternType::from_wire(value)
                    .ok_or_else(|| format!("Invalid patternType filter {value}"))?,
            ),
        };
        let operation = match wire.operation {
            ANY => None,
            value => Some(
                Operation::from_wire(value)
                    .ok_or_else(|| format!("Invalid operation filter {value}"))?,
            ),
        };
        let permission = match wire.permission {
            ANY => None,
            value => Some(
                Permission::from_wire(value)
                    .ok_or_else(|| format!("Invalid permissionType filter {value}"))?,
            ),
        };
        Ok(AclFilter {
            resource_type,
            name: wire.name,
            pattern,
            principal: wire.principal,
            host: wire.host,
            operation,
            permission,
        })
    }

    /// Kafka's `AclBindingFilter.matches`.
    pub fn matches(&self, acl: &AclBinding) -> bool {
        if self.resource_type.is_some_and(|t| t != acl.resource_type) {
            return false;
        }
        let pattern_ok = match (self.pattern, &self.name) {
            (PatternFilter::Exactly(p), _) if p != acl.pattern => false,
            (_, None) => true,
            (PatternFilter::Any | PatternFilter::Exactly(_), Some(name)) => *name == acl.name,
            (PatternFilter::Match, Some(name)) => acl.covers(name),
        };
        pattern_ok
            && self.principal.as_ref().is_none_or(|p| *p == acl.principal)
            && self.host.as_ref().is_none_or(|h| *h == acl.host)
            && self.operation.is_none_or(|o| o == acl.operation)
            && self.permission.is_none_or(|p| p == acl.permission)
    }
}

/// The authorizer's settings (`--super-users`, `--allow-everyone-if-no-acl-found`).
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub super_users: HashSet<String>,
    pub allow_if_no_acl: bool,
}

/// Who asks, from where: the connection's principal and its peer's IP as text.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub principal: &'a str,
    pub host: &'a str,
}

/// The entry part of an ACL, stored under its resource in the indexes.
#[derive(Debug, Clone)]
struct Entry {
    principal: String,
    host: String,
    operation: Operation,
    permission: Permission,
}

impl Entry {
    /// This entry's verdict for the caller and operation (None: it does not apply).
    fn verdict(&self, caller: Caller<'_>, asked: Operation) -> Option<Permission> {
        let principal_ok =
            self.principal == caller.principal || self.principal == WILDCARD_PRINCIPAL;
        let host_ok = self.host == WILDCARD || self.host == caller.host;
        if !principal_ok || !host_ok {
            return None;
        }
        let applies = match self.permission {
            Permission::Allow => self.operation.allows(asked),
            Permission::Deny => self.operation.denies(asked),
        };
        applies.then_some(self.permission)
    }
}

/// Every ACL, indexed for decisions. Immutable once built: a change builds a new one.
#[derive(Debug, Default)]
pub struct AclSet {
    /// Bumped by every change; connections' caches compare against it.
    pub version: u64,
    acls: BTreeSet<AclBinding>,
    /// Per resource type: LITERAL entries by name ("*" included).
    literal: [HashMap<String, Vec<Entry>>; RESOURCE_TYPES],
    /// Per resource type: PREFIXED entries by prefix.
    prefixed: [HashMap<String, Vec<Entry>>; RESOURCE_TYPES],
    /// Per resource type: the distinct prefix lengths in bytes, ascending.
    prefix_lengths: [Vec<usize>; RESOURCE_TYPES],
}

impl AclSet {
    pub fn new(acls: BTreeSet<AclBinding>, version: u64) -> AclSet {
        let mut set = AclSet { version, ..AclSet::default() };
        for acl in &acls {
            let entry = Entry {
                principal: acl.principal.clone(),
                host: acl.host.clone(),
                operation: acl.operation,
                permission: acl.permission,
            };
            let index = acl.resource_type.index();
            let by_name = match acl.pattern {
                PatternType::Literal => &mut set.literal[index],
                PatternType::Prefixed => &mut set.prefixed[index],
            };
            by_name.entry(acl.name.clone()).or_default().push(entry);
        }
        for (index, by_prefix) in set.prefixed.iter().enumerate() {
            let lengths: BTreeSet<usize> = by_prefix.keys().map(String::len).collect();
            set.prefix_lengths[index] = lengths.into_iter().collect();
        }
        set.acls = acls;
        set
    }

    pub fn acls(&self) -> &BTreeSet<AclBinding> {
        &self.acls
    }

    /// Kafka's decision for `caller` doing `operation` on `name` of `resource_type` (see the
    /// module doc).
    pub fn authorize(
        &self,
        policy: &Policy,
        caller: Caller<'_>,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        if policy.super_users.contains(caller.principal) {
            return true;
        }
        let index = resource_type.index();
        let literal = &self.literal[index];
        let prefixed = &self.prefixed[index];
        let prefixes = self.prefix_lengths[index]
            .iter()
            .take_while(|length| **length <= name.len())
            .filter(|length| name.is_char_boundary(**length))
            .filter_map(|length| prefixed.get(&name[..*length]));
        let mut found = false;
        let mut allowed = false;
        let lists = literal.get(name).into_iter().chain(literal.get(WILDCARD)).chain(prefixes);
        for entries in lists {
            found = true;
            for entry in entries {
                match entry.verdict(caller, operation) {
                    Some(Permission::Deny) => return false,
                    Some(Permission::Allow) => allowed = true,
                    None => {}
                }
            }
        }
        allowed || (!found && policy.allow_if_no_acl)
    }

    /// Kafka's `authorizeByResourceType`: whether the caller may do `operation` on at least
    /// one resource of the type (an idempotent producer's InitProducerId asks for WRITE on
    /// some topic). A super user, or no ACL on a made-up name with allow-everyone, passes as
    /// in Kafka (which asks `authorize` for the name "hardcode" first); otherwise some ALLOW
    /// pattern must not be covered by a DENY.
    pub fn authorize_any(
        &self,
        policy: &Policy,
        caller: Caller<'_>,
        operation: Operation,
        resource_type: ResourceType,
    ) -> bool {
        if self.authorize(policy, caller, operation, resource_type, "hardcode") {
            return true;
        }
        let applies = |acl: &AclBinding, permission: Permission| {
            acl.resource_type == resource_type
                && acl.permission == permission
                && (acl.operation == operation || acl.operation == Operation::All)
                && (acl.principal == caller.principal || acl.principal == WILDCARD_PRINCIPAL)
                && (acl.host == caller.host || acl.host == WILDCARD)
        };
        let denies: Vec<&AclBinding> =
            self.acls.iter().filter(|acl| applies(acl, Permission::Deny)).collect();
        if denies.iter().any(|d| d.pattern == PatternType::Literal && d.name == WILDCARD) {
            return false;
        }
        let denied_by_prefix = |name: &str| {
            denies.iter().any(|d| d.pattern == PatternType::Prefixed && name.starts_with(&d.name))
        };
        self.acls.iter().filter(|acl| applies(acl, Permission::Allow)).any(|allow| {
            match allow.pattern {
                PatternType::Literal => {
                    allow.name == WILDCARD
                        || (!denied_by_prefix(&allow.name)
                            && !denies
                                .iter()
                                .any(|d| d.pattern == PatternType::Literal && d.name == allow.name))
                }
                PatternType::Prefixed => !denied_by_prefix(&allow.name),
            }
        })
    }
}

/// What a connection remembers of its decisions, valid for one `AclSet::version`. The
/// principal and host of a connection do not change (a re-authentication must be the same
/// user), so they are not part of the key.
#[derive(Default)]
pub struct DecisionCache {
    version: u64,
    /// The last decision made or looked up: a producer writing one topic finds it here with
    /// one string comparison, no hashing.
    last: Option<Decision>,
    kinds: Vec<((ResourceType, Operation), HashMap<String, bool>)>,
}

struct Decision {
    kind: (ResourceType, Operation),
    name: String,
    allowed: bool,
}

impl DecisionCache {
    /// The remembered decision, if any, under `version`.
    pub fn get(
        &mut self,
        version: u64,
        kind: (ResourceType, Operation),
        name: &str,
    ) -> Option<bool> {
        if self.version != version {
            self.version = version;
            self.clear();
            return None;
        }
        if let Some(last) = &self.last {
            if last.kind == kind && last.name == name {
                return Some(last.allowed);
            }
        }
        let allowed = self
            .kinds
            .iter()
            .find(|(k, _)| *k == kind)
            .and_then(|(_, by_name)| by_name.get(name))
            .copied()?;
        self.remember_last(kind, name, allowed);
        Some(allowed)
    }

    pub fn put(&mut self, kind: (ResourceType, Operation), name: &str, allowed: bool) {
        let position = match self.kinds.iter().position(|(k, _)| *k == kind) {
            Some(position) => position,
            None => {
                self.kinds.push((kind, HashMap::new()));
                self.kinds.len() - 1
            }
        };
        let by_name = &mut self.kinds[position].1;
        if by_name.len() >= DECISIONS_PER_KIND_MAX {
            by_name.clear();
        }
        by_name.insert(name.to_string(), allowed);
        self.remember_last(kind, name, allowed);
    }

    /// Keeps `name` as the last decision, reusing the slot's allocation.
    fn remember_last(&mut self, kind: (ResourceType, Operation), name: &str, allowed: bool) {
        match &mut self.last {
            Some(last) => {
                last.kind = kind;
                last.name.clear();
                last.name.push_str(name);
                last.allowed = allowed;
            }
            None => self.last = Some(Decision { kind, name: name.to_string(), allowed }),
        }
    }

    pub fn clear(&mut self) {
        self.last = None;
        self.kinds.clear();
    }
}

/// The ACLs of the process (one, shared by the shards), with the authorizer's settings.
pub struct AclStore {
    /// `--authorizer acl`; without it every request is allowed and the ACL APIs answer
    /// SECURITY_DISABLED.
    pub enabled: bool,
    pub policy: Policy,
    path: PathBuf,
    current: ArcSwap<AclSet>,
    /// The version of `current`, read by every shard before its decisions.
    version: AtomicU64,
    /// Serializes changes: each writes the whole file.
    writer: Mutex<()>,
}

/// Why a change failed: the file could not be written (UNKNOWN_SERVER_ERROR, as Kafka
/// answers a failed write of its metadata).
#[derive(Debug, PartialEq, Eq)]
pub struct StoreError(pub String);

impl AclStore {
    /// Reads the file in `meta_dir` (none yet: no ACLs). The error is one sentence.
    pub fn open(meta_dir: &Path, enabled: bool, policy: Policy) -> Result<AclStore, String> {
        let path = meta_dir.join(ACLS_FILE);
        let acls = match std::fs::read_to_string(&path) {
            Ok(text) => parse(&text).map_err(|e| {
                format!("{} is damaged ({e}); restore it or remove it", path.display())
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        Ok(AclStore {
            enabled,
            policy,
            path,
            current: ArcSwap::from_pointee(AclSet::new(acls, 1)),
            version: AtomicU64::new(1),
            writer: Mutex::new(()),
        })
    }

    /// The version of the current set (cheap: one atomic read).
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub fn load(&self) -> Arc<AclSet> {
        self.current.load_full()
    }

    /// Adds ACLs (an existing one is added again without error, as in Kafka), writes the
    /// file once, then publishes. Blocking (a small file and an fsync): admin only.
    pub fn create(&self, acls: &[AclBinding]) -> Result<(), StoreError> {
        self.change(|set| {
            let mut changed = false;
            for acl in acls {
                changed |= set.insert(acl.clone());
            }
            changed
        })
        .map(|_| ())
    }

    /// Removes every ACL matching each filter; the removed ones per filter (an ACL matched
    /// by several filters is reported under each, as Kafka does).
    pub fn delete(&self, filters: &[AclFilter]) -> Result<Vec<Vec<AclBinding>>, StoreError> {
        let mut removed: Vec<Vec<AclBinding>> = vec![Vec::new(); filters.len()];
        self.change(|set| {
            for (i, filter) in filters.iter().enumerate() {
                removed[i] = set.iter().filter(|acl| filter.matches(acl)).cloned().collect();
            }
            let before = set.len();
            set.retain(|acl| !filters.iter().any(|f| f.matches(acl)));
            set.len() != before
        })?;
        Ok(removed)
    }

    /// Clustered: the ACLs become the metadata log's (nothing is written; the log is
    /// durable), published with the next version when they differ. Whether they changed.
    pub fn replace(&self, acls: &BTreeSet<AclBinding>) -> bool {
        let _writing = self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let current = self.current.load_full();
        if current.acls == *acls {
            return false;
        }
        let version = current.version + 1;
        self.current.store(Arc::new(AclSet::new(acls.clone(), version)));
        self.version.store(version, Ordering::Release);
        true
    }

    /// Applies `edit` to a copy of the ACLs under the writer lock; when it changed them,
    /// writes the file and publishes the new set with the next version.
    fn change(
        &self,
        edit: impl FnOnce(&mut BTreeSet<AclBinding>) -> bool,
    ) -> Result<bool, StoreError> {
        let _writing = self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let current = self.current.load_full();
        let mut acls = current.acls.clone();
        if !edit(&mut acls) {
            return Ok(false);
        }
        super::write_file(&self.path, &render(&acls))
            .map_err(|e| StoreError(format!("cannot write {}: {e}", self.path.display())))?;
        let version = current.version + 1;
        self.current.store(Arc::new(AclSet::new(acls, version)));
        self.version.store(version, Ordering::Release);
        Ok(true)
    }
}

/// A shard's copy of the ACLs, refreshed when `AclStore::version` moves.
pub struct ShardAcls {
    pub store: Arc<AclStore>,
    local: RefCell<Arc<AclSet>>,
}

impl ShardAcls {
    pub fn new(store: Arc<AclStore>) -> ShardAcls {
        let local = RefCell::new(store.load());
        ShardAcls { store, local }
    }

    /// Runs `f` with the shard's current copy (reloaded first if a change was published).
    pub fn with<T>(&self, f: impl FnOnce(&AclSet) -> T) -> T {
        let version = self.store.version();
        if self.local.borrow().version != version {
            *self.local.borrow_mut() = self.store.load();
        }
        f(&self.local.borrow())
    }
}

#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default, rename = "acl")]
    acls: Vec<FileAcl>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileAcl {
    resource_type: String,
    name: String,
    pattern_type: String,
    principal: String,
    host: String,
    operation: String,
    permission: String,
}

fn parse(text: &str) -> Result<BTreeSet<AclBinding>, String> {
    let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
    file.acls
        .into_iter()
        .map(|a| {
            let bad = |what: &str, value: &str| format!("unknown {what} {value:?}");
            Ok(AclBinding {
                resource_type: ResourceType::from_name(&a.resource_type)
                    .ok_or_else(|| bad("resource type", &a.resource_type))?,
                pattern: PatternType::from_name(&a.pattern_type)
                    .ok_or_else(|| bad("pattern type", &a.pattern_type))?,
                operation: Operation::from_name(&a.operation)
                    .ok_or_else(|| bad("operation", &a.operation))?,
                permission: Permission::from_name(&a.permission)
                    .ok_or_else(|| bad("permission", &a.permission))?,
                name: a.name,
                principal: a.principal,
                host: a.host,
            })
        })
        .collect()
}

fn render(acls: &BTreeSet<AclBinding>) -> String {
    let file = File {
        acls: acls
            .iter()
            .map(|a| FileAcl {
                resource_type: a.resource_type.name().into(),
                name: a.name.clone(),
                pattern_type: a.pattern.name().into(),
                principal: a.principal.clone(),
                host: a.host.clone(),
                operation: a.operation.name().into(),
                permission: a.permission.name().into(),
            })
            .collect(),
    };
    let body = toml::to_string(&file).unwrap_or_else(|e| unreachable!("ACLs render: {e}"));
    format!("# ACLs (CreateAcls, DeleteAcls); written by spate.\n{body}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn acl(
        resource_type: ResourceType,
        name: &str,
        pattern: PatternType,
        principal: &str,
        operation: Operation,
        permission: Permission,
    ) -> AclBinding {
        AclBinding {
            resource_type,
            name: name.into(),
            pattern,
            principal: principal.into(),
            host: WILDCARD.into(),
            operation,
            permission,
        }
    }

    fn topic(name: &str, principal: &str, operation: Operation) -> AclBinding {
        use {PatternType::Literal, Permission::Allow, ResourceType::Topic};
        acl(Topic, name, Literal, principal, operation, Allow)
    }

    fn set(acls: Vec<AclBinding>) -> AclSet {
        AclSet::new(acls.into_iter().collect(), 1)
    }

    const ALICE: Caller<'static> = Caller { principal: "User:alice", host: "10.0.0.1" };
    const BOB: Caller<'static> = Caller { principal: "User:bob", host: "10.0.0.2" };

    /// The rules of the module doc, written as a scan of every ACL: the reference the
    /// indexed `AclSet::authorize` must agree with.
    fn reference(
        acls: &BTreeSet<AclBinding>,
        policy: &Policy,
        caller: Caller<'_>,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        if policy.super_users.contains(caller.principal) {
            return true;
        }
        let on_resource: Vec<&AclBinding> = acls
            .iter()
            .filter(|a| a.resource_type == resource_type)
            .filter(|a| match a.pattern {
                PatternType::Literal => a.name == name || a.name == "*",
                PatternType::Prefixed => name.starts_with(a.name.as_str()),
            })
            .collect();
        let mine = on_resource.iter().filter(|a| {
            (a.principal == caller.principal || a.principal == "User:*")
                && (a.host == "*" || a.host == caller.host)
        });
        let implied: &[Operation] = match operation {
            Operation::Describe => &[
                Operation::Describe,
                Operation::Read,
                Operation::Write,
                Operation::Delete,
                Operation::Alter,
            ],
            Operation::DescribeConfigs => &[Operation::DescribeConfigs, Operation::AlterConfigs],
            _ => std::slice::from_ref(&operation),
        };
        let mut allowed = false;
        for a in mine {
            match a.permission {
                Permission::Deny if a.operation == operation || a.operation == Operation::All => {
                    return false
                }
                Permission::Allow
                    if a.operation == Operation::All || implied.contains(&a.operation) =>
                {
                    allowed = true
                }
                _ => {}
            }
        }
        allowed || (on_resource.is_empty() && policy.allow_if_no_acl)
    }

    #[test]
    fn literal_prefixed_and_wildcard_names() {
        use {Operation::*, PatternType::*, Permission::*, ResourceType::*};
        let acls = set(vec![
            topic("orders", "User:alice", Write),
            acl(Topic, "logs-", Prefixed, "User:alice", Read, Allow),
            acl(Topic, "*", Literal, "User:bob", Describe, Allow),
        ]);
        let policy = Policy::default();
        assert!(acls.authorize(&policy, ALICE, Write, Topic, "orders"));
        assert!(!acls.authorize(&policy, ALICE, Read, Topic, "orders"));
        assert!(!acls.authorize(&policy, ALICE, Write, Topic, "orders2"));
        assert!(acls.authorize(&policy, ALICE, Read, Topic, "logs-a"));
        assert!(acls.authorize(&policy, ALICE, Read, Topic, "logs-"));
        assert!(!acls.authorize(&policy, ALICE, Read, Topic, "logs"));
        assert!(acls.authorize(&policy, BOB, Describe, Topic, "anything"));
        assert!(!acls.authorize(&policy, BOB, Read, Topic, "anything"));
        // The type matters: a topic ACL says nothing about a group of the same name.
        assert!(!acls.authorize(&policy, ALICE, Write, Group, "orders"));
    }

    #[test]
    fn deny_wins_and_names_exactly_what_it_denies() {
        use {Operation::*, PatternType::*, Permission::*, ResourceType::*};
        let acls = set(vec![
            acl(Topic, "t", Literal, "User:*", All, Allow),
            acl(Topic, "t", Prefixed, "User:alice", Write, Deny),
            acl(Topic, "u", Literal, "User:alice", All, Allow),
            acl(Topic, "u", Literal, "User:alice", Read, Deny),
        ]);
        let policy = Policy::default();
        assert!(!acls.authorize(&policy, ALICE, Write, Topic, "t"));
        assert!(acls.authorize(&policy, ALICE, Read, Topic, "t"));
        assert!(acls.authorize(&policy, BOB, Write, Topic, "t"));
        // DENY READ does not deny DESCRIBE (a DENY is not widened by implication).
        assert!(!acls.authorize(&policy, ALICE, Read, Topic, "u"));
        assert!(acls.authorize(&policy, ALICE, Describe, Topic, "u"));
    }

    #[test]
    fn implied_operations() {
        use Operation::*;
        for (granted, implied) in [
            (Read, Describe),
            (Write, Describe),
            (Delete, Describe),
            (Alter, Describe),
            (AlterConfigs, DescribeConfigs),
            (All, Create),
        ] {
            let acls = set(vec![topic("t", "User:alice", granted)]);
            let allowed =
                acls.authorize(&Policy::default(), ALICE, implied, ResourceType::Topic, "t");
            assert!(allowed, "{granted:?} implies {implied:?}");
        }
        for (granted, not_implied) in
            [(Describe, Read), (Create, Describe), (DescribeConfigs, AlterConfigs), (Read, Write)]
        {
            let acls = set(vec![topic("t", "User:alice", granted)]);
            let allowed =
                acls.authorize(&Policy::default(), ALICE, not_implied, ResourceType::Topic, "t");
            assert!(!allowed, "{granted:?} does not imply {not_implied:?}");
        }
    }

    #[test]
    fn hosts_super_users_and_no_acl_found() {
        use {Operation::*, ResourceType::*};
        let mut by_host = topic("t", "User:alice", Read);
        by_host.host = "10.0.0.9".into();
        let acls = set(vec![by_host]);
        let mut policy = Policy::default();
        assert!(!acls.authorize(&policy, ALICE, Read, Topic, "t"));
        let elsewhere = Caller { principal: "User:alice", host: "10.0.0.9" };
        assert!(acls.authorize(&policy, elsewhere, Read, Topic, "t"));
        // No ACL on "free": denied by default, allowed with allow-everyone; "t" has an ACL
        // (for another host), so allow-everyone does not open it.
        assert!(!acls.authorize(&policy, ALICE, Read, Topic, "free"));
        policy.allow_if_no_acl = true;
        assert!(acls.authorize(&policy, ALICE, Read, Topic, "free"));
        assert!(!acls.authorize(&policy, ALICE, Read, Topic, "t"));
        policy.super_users.insert("User:alice".into());
        assert!(acls.authorize(&policy, ALICE, Read, Topic, "t"));
        assert!(acls.authorize(&policy, ALICE, ClusterAction, Cluster, CLUSTER_NAME));
    }

    #[test]
    fn authorize_any_follows_kafkas_resource_type_rule() {
        use {Operation::*, PatternType::*, Permission::*, ResourceType::*};
        let policy = Policy::default();
        assert!(!set(vec![]).authorize_any(&policy, ALICE, Write, Topic));
        assert!(
            set(vec![topic("t", "User:alice", Write)]).authorize_any(&policy, ALICE, Write, Topic)
        );
        assert!(
            !set(vec![topic("t", "User:alice", Read)]).authorize_any(&policy, ALICE, Write, Topic)
        );
        let denied = set(vec![
            topic("t", "User:alice", Write),
            acl(Topic, "t", Prefixed, "User:alice", Write, Deny),
        ]);
        assert!(!denied.authorize_any(&policy, ALICE, Write, Topic));
        let wildcard_denied = set(vec![
            acl(Topic, "p-", Prefixed, "User:alice", Write, Allow),
            acl(Topic, "*", Literal, "User:*", Write, Deny),
        ]);
        assert!(!wildcard_denied.authorize_any(&policy, ALICE, Write, Topic));
        let open = Policy { allow_if_no_acl: true, ..Policy::default() };
        assert!(set(vec![]).authorize_any(&open, ALICE, Write, Topic));
    }

    #[test]
    fn creations_are_validated_as_kafka_does() {
        let good = WireAcl {
            resource_type: 2,
            name: Some("t".into()),
            pattern: 3,
            principal: Some("User:alice".into()),
            host: Some("*".into()),
            operation: 3,
            permission: 3,
        };
        assert!(AclBinding::from_wire(good.clone()).is_ok());
        let bad = [
            WireAcl { resource_type: 1, ..good.clone() },
            WireAcl { resource_type: 6, ..good.clone() },
            WireAcl { pattern: 2, ..good.clone() },
            WireAcl { pattern: 1, ..good.clone() },
            WireAcl { operation: 1, ..good.clone() },
            WireAcl { operation: 0, ..good.clone() },
            WireAcl { permission: 1, ..good.clone() },
            WireAcl { name: Some(String::new()), ..good.clone() },
            WireAcl { principal: Some("alice".into()), ..good.clone() },
            WireAcl { resource_type: 4, name: Some("other".into()), ..good.clone() },
        ];
        for wire in bad {
            assert!(AclBinding::from_wire(wire.clone()).is_err(), "{wire:?}");
        }
    }

    #[test]
    fn filters_match_as_kafkas_binding_filter() {
        use {Operation::*, PatternType::*, Permission::*, ResourceType::*};
        let literal = acl(Topic, "orders", Literal, "User:alice", Read, Allow);
        let wildcard = acl(Topic, "*", Literal, "User:alice", Read, Allow);
        let prefixed = acl(Topic, "ord", Prefixed, "User:alice", Read, Allow);
        let group = acl(Group, "orders", Literal, "User:bob", Read, Deny);
        let filter = |resource_type: i8, name: Option<&str>, pattern: i8| {
            AclFilter::from_wire(WireAcl {
                resource_type,
                name: name.map(String::from),
                pattern,
                principal: None,
                host: None,
                operation: ANY,
                permission: ANY,
            })
            .expect("valid filter")
        };
        let everything = filter(ANY, None, ANY);
        for a in [&literal, &wildcard, &prefixed, &group] {
            assert!(everything.matches(a));
        }
        let any_named = filter(2, Some("orders"), ANY);
        assert!(any_named.matches(&literal));
        assert!(!any_named.matches(&wildcard));
        assert!(!any_named.matches(&prefixed));
        assert!(!any_named.matches(&group));
        let matching = filter(2, Some("orders"), MATCH);
        assert!(matching.matches(&literal));
        assert!(matching.matches(&wildcard));
        assert!(matching.matches(&prefixed));
        let only_prefixed = filter(ANY, None, 4);
        assert!(only_prefixed.matches(&prefixed));
        assert!(!only_prefixed.matches(&literal));
        let by_entry = AclFilter::from_wire(WireAcl {
            resource_type: ANY,
            pattern: ANY,
            principal: Some("User:bob".into()),
            permission: 2,
            operation: ANY,
            ..WireAcl::default()
        })
        .expect("valid filter");
        assert!(by_entry.matches(&group));
        assert!(!by_entry.matches(&literal));
        assert!(AclFilter::from_wire(WireAcl { resource_type: 0, ..WireAcl::default() }).is_err());
    }

    /// The indexed decision agrees with the scan of every ACL, over random ACL sets and
    /// every operation, on names that hit literal, wildcard and prefixed entries.
    #[test]
    fn index_agrees_with_the_full_scan() {
        let seed = match std::env::var("SPATE_TEST_SEED") {
            Ok(text) => text.trim().parse().expect("SPATE_TEST_SEED must be a u64"),
            Err(_) => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_nanos() as u64),
        };
        println!("index_agrees_with_the_full_scan: seed {seed} (replay with SPATE_TEST_SEED)");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let names = ["a", "ab", "abc", "b", "ba", "*", "é", "éa"];
        let principals = ["User:alice", "User:bob", "User:*"];
        let hosts = ["*", "10.0.0.1", "10.0.0.2"];
        let types = [ResourceType::Topic, ResourceType::Group, ResourceType::Cluster];
        for _ in 0..300 {
            let mut acls = BTreeSet::new();
            for _ in 0..rng.gen_range(0..12) {
                acls.insert(AclBinding {
                    resource_type: types[rng.gen_range(0..types.len())],
                    name: names[rng.gen_range(0..names.len())].into(),
                    pattern: if rng.gen_bool(0.5) {
                        PatternType::Literal
                    } else {
                        PatternType::Prefixed
                    },
                    principal: principals[rng.gen_range(0..principals.len())].into(),
                    host: hosts[rng.gen_range(0..hosts.len())].into(),
                    operation: Operation::EVERY[rng.gen_range(0..Operation::EVERY.len())],
                    permission: if rng.gen_bool(0.3) {
                        Permission::Deny
                    } else {
                        Permission::Allow
                    },
                });
            }
            let indexed = AclSet::new(acls.clone(), 1);
            let policy = Policy { allow_if_no_acl: rng.gen_bool(0.5), ..Policy::default() };
            for caller in [ALICE, BOB] {
                for operation in Operation::EVERY.into_iter().skip(1) {
                    for resource_type in types {
                        for name in names.iter().chain(&["abcd", "x", "é€"]) {
                            assert_eq!(
                                indexed.authorize(&policy, caller, operation, resource_type, name),
                                reference(&acls, &policy, caller, operation, resource_type, name),
                                "{caller:?} {operation:?} {resource_type:?} {name:?} {acls:#?}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn decision_cache_forgets_on_a_new_version() {
        let mut cache = DecisionCache::default();
        let kind = (ResourceType::Topic, Operation::Write);
        assert_eq!(cache.get(1, kind, "t"), None);
        cache.put(kind, "t", true);
        assert_eq!(cache.get(1, kind, "t"), Some(true));
        assert_eq!(cache.get(1, (ResourceType::Topic, Operation::Read), "t"), None);
        cache.put(kind, "u", false);
        assert_eq!(cache.get(1, kind, "t"), Some(true));
        assert_eq!(cache.get(1, kind, "u"), Some(false));
        assert_eq!(cache.get(1, kind, "t"), Some(true));
        assert_eq!(cache.get(2, kind, "t"), None);
        assert_eq!(cache.get(2, kind, "t"), None);
        for i in 0..=DECISIONS_PER_KIND_MAX {
            cache.put(kind, &i.to_string(), false);
        }
        assert!(cache.kinds[0].1.len() <= DECISIONS_PER_KIND_MAX);
    }

    #[test]
    fn changes_are_durable_and_published() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = AclStore::open(dir.path(), true, Policy::default()).expect("open");
        let shard = ShardAcls::new(Arc::new(store));
        let a = topic("t", "User:alice", Operation::Write);
        let b = acl(
            ResourceType::Group,
            "g-",
            PatternType::Prefixed,
            "User:bob",
            Operation::Read,
            Permission::Allow,
        );
        shard.store.create(&[a.clone(), b.clone()]).expect("create");
        assert_eq!(shard.with(|set| set.version), 2);
        // Adding what is there changes nothing, not even the version.
        shard.store.create(std::slice::from_ref(&a)).expect("create again");
        assert_eq!(shard.store.version(), 2);
        assert!(shard.with(|set| set.authorize(
            &Policy::default(),
            ALICE,
            Operation::Write,
            ResourceType::Topic,
            "t"
        )));
        let reopened = AclStore::open(dir.path(), true, Policy::default()).expect("reopen");
        assert_eq!(reopened.load().acls().len(), 2);
        let only_groups = AclFilter::from_wire(WireAcl {
            resource_type: ResourceType::Group as i8,
            pattern: ANY,
            operation: ANY,
            permission: ANY,
            ..WireAcl::default()
        })
        .expect("filter");
        let removed = shard.store.delete(&[only_groups]).expect("delete");
        assert_eq!(removed, vec![vec![b]]);
        let reopened = AclStore::open(dir.path(), true, Policy::default()).expect("reopen");
        assert_eq!(reopened.load().acls().iter().collect::<Vec<_>>(), vec![&a]);
        std::fs::write(dir.path().join(ACLS_FILE), "[[acl]]\nname = 1\n").expect("damage");
        assert!(AclStore::open(dir.path(), true, Policy::default()).is_err());
    }
}
