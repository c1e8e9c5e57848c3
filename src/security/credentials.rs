//! The SCRAM credentials: `__spate_meta/scram-credentials` in the data dir (TOML, salted
//! keys only, written whole to a temporary file, fsynced and renamed, as the catalog is),
//! the bootstrap credentials of `--scram-bootstrap`, and the in-memory table every shard
//! authenticates against.
//!
//! Reads (a login) load the current table without a lock (`ArcSwap`); a change
//! (AlterUserScramCredentials, rare and administrative) takes the one writer lock, writes the
//! file and then swaps the table in, so what a login sees is always what is on the disk.
//!
//! Clustered, the credentials are on the metadata log instead (`cluster::records`,
//! ScramCredential): the table is replaced by the log's (`replace`) whenever it changes, and
//! the file is only read once, to carry what it holds to the log (`controller`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::security::scram::{Credential, Mechanism, ITERATIONS_MAX, ITERATIONS_MIN};

/// The file in the data dir's `__spate_meta`.
pub const CREDENTIALS_FILE: &str = "scram-credentials";

/// Salt bytes of a credential made here (bootstrap): 32 random bytes.
const SALT_BYTES: usize = 32;

impl BootstrapCredential {
    /// The credential with a fresh random salt.
    pub fn salted(&self) -> Credential {
        let mut salt = [0u8; SALT_BYTES];
        getrandom::getrandom(&mut salt)
            .unwrap_or_else(|e| unreachable!("the kernel's random source failed: {e}"));
        Credential::from_password(self.mechanism, &self.password, &salt, self.iterations)
    }
}

/// The credentials by user and mechanism.
pub type Table = BTreeMap<(String, Mechanism), Credential>;

/// The credential table of the process (one, shared by the shards).
pub struct ScramStore {
    path: PathBuf,
    table: ArcSwap<Table>,
    /// Serializes changes: each writes the whole file, so two at once could lose one.
    writer: Mutex<()>,
}

#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default, rename = "credential")]
    credentials: Vec<Entry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Entry {
    user: String,
    mechanism: String,
    iterations: u32,
    salt: String,
    stored_key: String,
    server_key: String,
}

/// One change of AlterUserScramCredentials.
#[derive(Debug, Clone)]
pub enum Change {
    Upsert { user: String, mechanism: Mechanism, credential: Credential },
    Delete { user: String, mechanism: Mechanism },
}

/// Why a change was refused, as Kafka's error codes tell it.
#[derive(Debug, PartialEq, Eq)]
pub enum ChangeError {
    /// RESOURCE_NOT_FOUND: a deletion of a credential that does not exist.
    NotFound,
    /// The file could not be written (KAFKA_STORAGE_ERROR).
    Storage(String),
    /// Clustered: the metadata log did not take it (the code and message to answer).
    Refused(crate::model::ErrorCode, String),
}

impl ScramStore {
    /// Reads the file in `meta_dir` (none yet: no credentials).
    pub fn open(meta_dir: &Path) -> Result<ScramStore, String> {
        let path = meta_dir.join(CREDENTIALS_FILE);
        let table = match std::fs::read_to_string(&path) {
            Ok(text) => parse(&text).map_err(|e| {
                format!("{} is damaged ({e}); restore it or remove it", path.display())
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Table::new(),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        Ok(ScramStore { path, table: ArcSwap::from_pointee(table), writer: Mutex::new(()) })
    }

    pub fn get(&self, user: &str, mechanism: Mechanism) -> Option<Credential> {
        self.table.load().get(&(user.to_string(), mechanism)).cloned()
    }

    /// Every credential (clustered: what the file held, for the log).
    pub fn entries(&self) -> Table {
        (**self.table.load()).clone()
    }

    /// Clustered: the credentials become the metadata log's (nothing is written; the log
    /// is durable). Whether they changed.
    pub fn replace(&self, table: &Table) -> bool {
        let _writing = self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if **self.table.load() == *table {
            return false;
        }
        self.table.store(Arc::new(table.clone()));
        true
    }

    /// Every user with the mechanisms and iterations they have, by user.
    pub fn describe(&self) -> BTreeMap<String, Vec<(Mechanism, u32)>> {
        let mut out: BTreeMap<String, Vec<(Mechanism, u32)>> = BTreeMap::new();
        for ((user, mechanism), credential) in self.table.load().iter() {
            out.entry(user.clone()).or_default().push((*mechanism, credential.iterations));
        }
        out
    }

    /// Applies the changes (each on its own: the result per change), writes the file once,
    /// then publishes the new table. Blocking (a small file and an fsync): admin only.
    pub fn apply(&self, changes: Vec<Change>) -> Vec<Result<(), ChangeError>> {
        let _writing = self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut table: Table = (**self.table.load()).clone();
        let mut results: Vec<Result<(), ChangeError>> = changes
            .into_iter()
            .map(|change| match change {
                Change::Upsert { user, mechanism, credential } => {
                    table.insert((user, mechanism), credential);
                    Ok(())
                }
                Change::Delete { user, mechanism } => match table.remove(&(user, mechanism)) {
                    Some(_) => Ok(()),
                    None => Err(ChangeError::NotFound),
                },
            })
            .collect();
        if results.iter().any(Result::is_ok) {
            if let Err(e) = super::write_file(&self.path, &render(&table)) {
                let message = format!("cannot write {}: {e}", self.path.display());
                for result in &mut results {
                    if result.is_ok() {
                        *result = Err(ChangeError::Storage(message.clone()));
                    }
                }
                return results;
            }
            self.table.store(Arc::new(table));
        }
        results
    }

    /// Adds the bootstrap credentials that are not there yet (a restart with the same
    /// `--scram-bootstrap` keeps a password changed since through the admin API).
    pub fn bootstrap(&self, credentials: &[BootstrapCredential]) -> Result<usize, String> {
        let changes: Vec<Change> = credentials
            .iter()
            .filter(|c| self.get(&c.user, c.mechanism).is_none())
            .map(|c| Change::Upsert {
                user: c.user.clone(),
                mechanism: c.mechanism,
                credential: c.salted(),
            })
            .collect();
        let added = changes.len();
        for result in self.apply(changes) {
            if let Err(ChangeError::Storage(e)) = result {
                return Err(e);
            }
        }
        Ok(added)
    }
}

/// One `--scram-bootstrap` credential, as kafka-storage's `--add-scram` spells it:
/// `SCRAM-SHA-256=[name=admin,password=admin-secret]` (optionally `,iterations=8192`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapCredential {
    pub mechanism: Mechanism,
    pub user: String,
    pub password: String,
    pub iterations: u32,
}

impl BootstrapCredential {
    /// Parses one `--scram-bootstrap` value; the error is one sentence with the fix.
    pub fn parse(text: &str) -> Result<BootstrapCredential, String> {
        let usage = "write it as SCRAM-SHA-256=[name=admin,password=admin-secret]";
        let (mechanism, rest) = text.split_once('=').ok_or_else(|| {
            format!("--scram-bootstrap {:?} has no mechanism; {usage}", redact(text))
        })?;
        let mechanism = Mechanism::from_name(mechanism.trim()).ok_or_else(|| {
            format!(
                "--scram-bootstrap names the unknown mechanism {mechanism:?}; use SCRAM-SHA-256 \
                 or SCRAM-SHA-512"
            )
        })?;
        let inner =
            rest.trim().strip_prefix('[').and_then(|r| r.strip_suffix(']')).ok_or_else(|| {
                format!("--scram-bootstrap {:?} lacks [...]; {usage}", redact(text))
            })?;
        let (mut user, mut password, mut iterations) = (None, None, ITERATIONS_MIN);
        for field in split_fields(inner) {
            let (key, value) = field
                .split_once('=')
                .ok_or_else(|| format!("--scram-bootstrap has a field without =; {usage}"))?;
            let value = unquote(value.trim());
            match key.trim() {
                "name" => user = Some(value),
                "password" => password = Some(value),
                "iterations" => {
                    iterations = value
                        .parse()
                        .ok()
                        .filter(|i| (ITERATIONS_MIN..=ITERATIONS_MAX).contains(i))
                        .ok_or_else(|| {
                            format!(
                                "--scram-bootstrap iterations {value:?} must be from \
                                 {ITERATIONS_MIN} to {ITERATIONS_MAX}"
                            )
                        })?
                }
                "salt" | "saltedpassword" => {
                    return Err(format!(
                        "--scram-bootstrap field {key:?} is not supported; give name and \
                         password"
                    ))
                }
                other => return Err(format!("--scram-bootstrap has the unknown field {other:?}")),
            }
        }
        match (user, password) {
            (Some(user), Some(password)) if !user.is_empty() && !password.is_empty() => {
                Ok(BootstrapCredential { mechanism, user, password, iterations })
            }
            _ => Err(format!("--scram-bootstrap needs a name and a password; {usage}")),
        }
    }
}

/// The bootstrap text without its password, for error messages.
fn redact(text: &str) -> String {
    match text.find("password=") {
        Some(at) => format!("{}password=...", &text[..at]),
        None => text.to_string(),
    }
}

/// Splits `a=1,b="x,y"` on the commas outside quotes.
fn split_fields(text: &str) -> Vec<&str> {
    let mut fields = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (at, c) in text.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                fields.push(&text[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    fields.push(&text[start..]);
    fields.into_iter().filter(|f| !f.trim().is_empty()).collect()
}

fn unquote(value: &str) -> String {
    value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value).to_string()
}

fn parse(text: &str) -> Result<Table, String> {
    let file: File = toml::from_str(text).map_err(|e| e.to_string().replace('\n', " "))?;
    let mut table = Table::new();
    for entry in file.credentials {
        let mechanism = Mechanism::from_name(&entry.mechanism)
            .ok_or_else(|| format!("unknown mechanism {:?}", entry.mechanism))?;
        let decode = |field: &str| BASE64.decode(field).map_err(|e| format!("bad base64: {e}"));
        let credential = Credential {
            salt: decode(&entry.salt)?,
            stored_key: decode(&entry.stored_key)?,
            server_key: decode(&entry.server_key)?,
            iterations: entry.iterations,
        };
        table.insert((entry.user, mechanism), credential);
    }
    Ok(table)
}

fn render(table: &Table) -> String {
    let file = File {
        credentials: table
            .iter()
            .map(|((user, mechanism), credential)| Entry {
                user: user.clone(),
                mechanism: mechanism.name().to_string(),
                iterations: credential.iterations,
                salt: BASE64.encode(&credential.salt),
                stored_key: BASE64.encode(&credential.stored_key),
                server_key: BASE64.encode(&credential.server_key),
            })
            .collect(),
    };
    let body = toml::to_string(&file).unwrap_or_else(|e| unreachable!("credentials render: {e}"));
    format!("# SCRAM credentials (salted keys, no passwords); written by spate.\n{body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_syntax_is_kafka_storages() {
        let c = BootstrapCredential::parse("SCRAM-SHA-256=[name=admin,password=admin-secret]")
            .expect("valid");
        assert_eq!(c.mechanism, Mechanism::Sha256);
        assert_eq!(
            (c.user.as_str(), c.password.as_str(), c.iterations),
            ("admin", "admin-secret", 4096)
        );
        let c = BootstrapCredential::parse(
            "SCRAM-SHA-512=[name=\"al,ice\",password=\"p,w\",iterations=8192]",
        )
        .expect("valid");
        assert_eq!((c.user.as_str(), c.password.as_str(), c.iterations), ("al,ice", "p,w", 8192));
        for bad in [
            "SCRAM-SHA-1=[name=a,password=b]",
            "SCRAM-SHA-256=name=a,password=b",
            "SCRAM-SHA-256=[name=a]",
            "SCRAM-SHA-256=[name=a,password=b,iterations=10]",
            "SCRAM-SHA-256=[name=a,password=b,color=red]",
            "nothing",
        ] {
            let error = BootstrapCredential::parse(bad).expect_err(bad);
            assert!(!error.contains("password=b"), "{error}");
        }
    }

    #[test]
    fn changes_are_durable_and_salted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ScramStore::open(dir.path()).expect("open");
        let bootstrap =
            [BootstrapCredential::parse("SCRAM-SHA-256=[name=admin,password=admin-secret]")
                .expect("valid")];
        assert_eq!(store.bootstrap(&bootstrap), Ok(1));
        assert_eq!(store.bootstrap(&bootstrap), Ok(0));
        let bob = Credential::from_password(Mechanism::Sha512, "bob-pw", b"salt", 4096);
        let results = store.apply(vec![
            Change::Upsert {
                user: "bob".into(),
                mechanism: Mechanism::Sha512,
                credential: bob.clone(),
            },
            Change::Delete { user: "carol".into(), mechanism: Mechanism::Sha256 },
        ]);
        assert_eq!(results, vec![Ok(()), Err(ChangeError::NotFound)]);
        let text = std::fs::read_to_string(dir.path().join(CREDENTIALS_FILE)).expect("file");
        assert!(!text.contains("admin-secret") && !text.contains("bob-pw"), "{text}");
        let reopened = ScramStore::open(dir.path()).expect("reopen");
        assert_eq!(reopened.get("bob", Mechanism::Sha512), Some(bob));
        let admin = reopened.get("admin", Mechanism::Sha256).expect("admin");
        assert_eq!(
            admin,
            Credential::from_password(Mechanism::Sha256, "admin-secret", &admin.salt, 4096)
        );
        assert_eq!(reopened.describe()["bob"], vec![(Mechanism::Sha512, 4096)]);
        let results = reopened
            .apply(vec![Change::Delete { user: "bob".into(), mechanism: Mechanism::Sha512 }]);
        assert_eq!(results, vec![Ok(())]);
        assert!(ScramStore::open(dir.path())
            .expect("open")
            .get("bob", Mechanism::Sha512)
            .is_none());
    }

    #[test]
    fn a_damaged_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(CREDENTIALS_FILE), "[[credential]]\nuser = 1\n")
            .expect("write");
        let error = ScramStore::open(dir.path()).err().expect("damaged");
        assert!(error.contains("damaged"), "{error}");
    }
}
