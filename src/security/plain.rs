//! SASL PLAIN (RFC 4616) and the users file it checks against (`--sasl-plain-users-file`).
//!
//! The file holds one user a line, `name:hash`, with the hash in this scheme (blank lines and
//! lines starting with `#` are skipped):
//!
//! ```text
//!  alice:pbkdf2-sha256:<iterations>:<salt, base64>:<PBKDF2-HMAC-SHA256 of the password, base64>
//! ```
//!
//! Any tool makes one; in Python:
//! `base64.b64encode(hashlib.pbkdf2_hmac("sha256", password, salt, 100000))`. The broker
//! never sees a password in clear outside a login, and the file holds none.

use std::collections::HashMap;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use sha2::Sha256;

use crate::security::scram::equal_in_constant_time;

/// Fewest PBKDF2 iterations a users file may give: cheaper hashes are refused at start-up.
pub const PLAIN_ITERATIONS_MIN: u32 = 1000;
/// Most iterations: each PLAIN login costs one hash on the shard's executor.
pub const PLAIN_ITERATIONS_MAX: u32 = 1_000_000;

/// One user's password hash.
#[derive(Debug, Clone)]
pub struct PlainHash {
    iterations: u32,
    salt: Vec<u8>,
    hash: Vec<u8>,
}

impl PlainHash {
    /// Makes the hash of `password` (for tests and tools).
    pub fn new(password: &str, salt: &[u8], iterations: u32) -> PlainHash {
        let hash = pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password.as_bytes(), salt, iterations);
        PlainHash { iterations, salt: salt.to_vec(), hash: hash.to_vec() }
    }

    pub fn matches(&self, password: &str) -> bool {
        let hash = pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(
            password.as_bytes(),
            &self.salt,
            self.iterations,
        );
        equal_in_constant_time(&hash, &self.hash)
    }

    /// The hash as the users file spells it.
    pub fn to_line_text(&self) -> String {
        format!(
            "pbkdf2-sha256:{}:{}:{}",
            self.iterations,
            BASE64.encode(&self.salt),
            BASE64.encode(&self.hash)
        )
    }
}

/// Reads the users file; the error is one sentence that names the line.
pub fn read_users_file(path: &Path) -> Result<HashMap<String, PlainHash>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read --sasl-plain-users-file {}: {e}; check the path and its permissions",
            path.display()
        )
    })?;
    parse_users(&text).map_err(|e| format!("--sasl-plain-users-file {}: {e}", path.display()))
}

/// Parses the text of a users file (pure).
pub fn parse_users(text: &str) -> Result<HashMap<String, PlainHash>, String> {
    let mut users = HashMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |what: &str| {
            format!(
                "line {} {what}; write name:pbkdf2-sha256:<iterations>:<salt base64>:<hash \
                 base64>",
                number + 1
            )
        };
        let Some((name, hash)) = line.split_once(':') else {
            return Err(bad("has no colon"));
        };
        let fields: Vec<&str> = hash.split(':').collect();
        let [scheme, iterations, salt, hash] = fields[..] else {
            return Err(bad("does not have four hash fields"));
        };
        if scheme != "pbkdf2-sha256" {
            return Err(bad(&format!("uses the unknown scheme {scheme:?}")));
        }
        let iterations: u32 = iterations.parse().map_err(|_| bad("has bad iterations"))?;
        if !(PLAIN_ITERATIONS_MIN..=PLAIN_ITERATIONS_MAX).contains(&iterations) {
            return Err(bad(&format!(
                "has {iterations} iterations, outside \
                 {PLAIN_ITERATIONS_MIN}..={PLAIN_ITERATIONS_MAX}"
            )));
        }
        let salt = BASE64.decode(salt).map_err(|_| bad("has a salt that is not base64"))?;
        let hash = BASE64.decode(hash).map_err(|_| bad("has a hash that is not base64"))?;
        if hash.len() != 32 || salt.is_empty() || name.is_empty() {
            return Err(bad("has an empty name or salt, or a hash that is not 32 bytes"));
        }
        if users.insert(name.to_string(), PlainHash { iterations, salt, hash }).is_some() {
            return Err(bad(&format!("repeats the user {name:?}")));
        }
    }
    Ok(users)
}

/// The user and password of a PLAIN message, `authzid NUL authcid NUL password`. An authzid
/// other than the user is refused, as Kafka refuses it.
pub fn parse_message(message: &[u8]) -> Result<(String, String), String> {
    let text = std::str::from_utf8(message).map_err(|_| "PLAIN: not UTF-8".to_string())?;
    let mut parts = text.split('\0');
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("PLAIN: not authzid NUL user NUL password".into());
    };
    if user.is_empty() || password.is_empty() {
        return Err("PLAIN: empty user or password".into());
    }
    if !authzid.is_empty() && authzid != user {
        return Err(format!("PLAIN: authorization id differs from the user {user:?}"));
    }
    Ok((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_file_round_trip_and_password_check() {
        let hash = PlainHash::new("alice-secret", b"0123456789", 1000);
        let text = format!("# users\n\nalice:{}\n", hash.to_line_text());
        let users = parse_users(&text).expect("valid");
        assert!(users["alice"].matches("alice-secret"));
        assert!(!users["alice"].matches("alice-secreT"));
        assert!(!users["alice"].matches(""));
    }

    /// The scheme is the standard PBKDF2-HMAC-SHA256: a hash made by Python's hashlib
    /// (`pbkdf2_hmac("sha256", b"pw", b"salt", 1000)`) is accepted.
    #[test]
    fn a_hash_made_elsewhere_is_accepted() {
        let line = "bob:pbkdf2-sha256:1000:c2FsdA==:CjglNVXON/XHKmtwP5loFOvyQfIDrxRuk9zesDHFVn4=";
        let users = parse_users(line).expect("valid");
        assert!(users["bob"].matches("pw"));
    }

    #[test]
    fn bad_lines_name_the_line() {
        for bad in [
            "nocolon",
            "a:md5:1000:c2FsdA==:aGFzaA==",
            "a:pbkdf2-sha256:10:c2FsdA==:CjglNVXON/XHKmtwP5loFOvyQfIDrxRuk9zesDHFVn4=",
            "a:pbkdf2-sha256:1000:!!:CjglNVXON/XHKmtwP5loFOvyQfIDrxRuk9zesDHFVn4=",
            "a:pbkdf2-sha256:1000:c2FsdA==:c2hvcnQ=",
            "a:pbkdf2-sha256:1000:c2FsdA==",
        ] {
            let error = parse_users(&format!("# ok\n{bad}\n")).expect_err(bad);
            assert!(error.starts_with("line 2 "), "{error}");
        }
    }

    #[test]
    fn plain_messages() {
        assert_eq!(parse_message(b"\0alice\0pw"), Ok(("alice".into(), "pw".into())));
        assert_eq!(parse_message(b"alice\0alice\0pw"), Ok(("alice".into(), "pw".into())));
        assert!(parse_message(b"bob\0alice\0pw").is_err());
        assert!(parse_message(b"\0alice\0").is_err());
        assert!(parse_message(b"\0alice").is_err());
        assert!(parse_message(b"\0a\0b\0c").is_err());
    }
}
