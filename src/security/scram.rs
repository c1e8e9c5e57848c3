//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677), the server side, as a pure state
//! machine: messages in, messages out, no I/O and no clock. The caller looks the user's
//! credential up and supplies the server nonce.
//!
//! ```text
//!  client-first  n,,n=<user>,r=<cnonce>          ─▶ first()  ─▶ r=<cnonce+snonce>,s=<salt>,i=<n>
//!  client-final  c=biws,r=<nonce>,p=<proof>      ─▶ last()   ─▶ v=<server signature>
//! ```
//!
//! Only the salted forms are kept (StoredKey, ServerKey, salt, iterations): a password never
//! is. An unknown user goes through the same exchange with a made-up credential and fails at
//! the proof, so the first answer does not tell whether the user exists.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};

/// Kafka's SCRAM mechanisms, with the type ids of AlterUserScramCredentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mechanism {
    Sha256,
    Sha512,
}

/// Kafka's bounds on a SCRAM credential's iterations (`ScramMechanism`).
pub const ITERATIONS_MIN: u32 = 4096;
pub const ITERATIONS_MAX: u32 = 16384;

impl Mechanism {
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Sha256 => "SCRAM-SHA-256",
            Mechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    pub fn from_name(name: &str) -> Option<Mechanism> {
        match name {
            "SCRAM-SHA-256" => Some(Mechanism::Sha256),
            "SCRAM-SHA-512" => Some(Mechanism::Sha512),
            _ => None,
        }
    }

    /// The `mechanism` byte of AlterUserScramCredentials and DescribeUserScramCredentials.
    pub fn type_id(self) -> i8 {
        match self {
            Mechanism::Sha256 => 1,
            Mechanism::Sha512 => 2,
        }
    }

    pub fn from_type_id(id: i8) -> Option<Mechanism> {
        match id {
            1 => Some(Mechanism::Sha256),
            2 => Some(Mechanism::Sha512),
            _ => None,
        }
    }

    fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
            let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key)
                .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
            for part in parts {
                mac.update(part);
            }
            mac.finalize().into_bytes().to_vec()
        }
        match self {
            Mechanism::Sha256 => run::<Hmac<Sha256>>(key, parts),
            Mechanism::Sha512 => run::<Hmac<Sha512>>(key, parts),
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            Mechanism::Sha256 => Sha256::digest(data).to_vec(),
            Mechanism::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// SaltedPassword := Hi(Normalize(password), salt, i), Hi being PBKDF2 with this HMAC.
    /// (SASLprep is left out, as Kafka leaves it out: the password's UTF-8 bytes.)
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            Mechanism::Sha256 => {
                pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password, salt, iterations).to_vec()
            }
            Mechanism::Sha512 => {
                pbkdf2::pbkdf2_hmac_array::<Sha512, 64>(password, salt, iterations).to_vec()
            }
        }
    }
}

/// What the server keeps of a SCRAM password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
    pub iterations: u32,
}

impl Credential {
    /// From the salted password (what AlterUserScramCredentials carries).
    pub fn from_salted_password(
        mechanism: Mechanism,
        salted_password: &[u8],
        salt: &[u8],
        iterations: u32,
    ) -> Credential {
        let client_key = mechanism.hmac(salted_password, &[b"Client Key"]);
        Credential {
            salt: salt.to_vec(),
            stored_key: mechanism.hash(&client_key),
            server_key: mechanism.hmac(salted_password, &[b"Server Key"]),
            iterations,
        }
    }

    /// From a password in clear (the bootstrap credentials).
    pub fn from_password(
        mechanism: Mechanism,
        password: &str,
        salt: &[u8],
        iterations: u32,
    ) -> Credential {
        let salted = mechanism.salted_password(password.as_bytes(), salt, iterations);
        Credential::from_salted_password(mechanism, &salted, salt, iterations)
    }
}

/// Why an exchange failed. The text is for the broker's log; it never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure(pub String);

/// One SCRAM exchange on the server.
pub struct ScramServer {
    mechanism: Mechanism,
    state: State,
}

enum State {
    /// Waiting for client-first.
    Initial,
    /// server-first sent; waiting for client-final.
    Challenged {
        user: String,
        /// `None`: unknown user (the exchange goes on and fails at the proof).
        credential: Option<Credential>,
        gs2_header: String,
        client_first_bare: String,
        server_first: String,
        nonce: String,
    },
    Done,
}

impl ScramServer {
    pub fn new(mechanism: Mechanism) -> ScramServer {
        ScramServer { mechanism, state: State::Initial }
    }

    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// The user named in client-first, once it arrived.
    pub fn user(&self) -> Option<&str> {
        match &self.state {
            State::Challenged { user, .. } => Some(user),
            _ => None,
        }
    }

    /// Takes client-first, gives server-first. `server_nonce` must be fresh random
    /// printable characters without a comma; `fake_salt` stands in for an unknown user's.
    pub fn first(
        &mut self,
        message: &[u8],
        lookup: impl FnOnce(&str) -> Option<Credential>,
        server_nonce: &str,
        fake_salt: &[u8],
    ) -> Result<Vec<u8>, Failure> {
        if !matches!(self.state, State::Initial) {
            return Err(self.fail("client-first arrived twice"));
        }
        let text = std::str::from_utf8(message).map_err(|_| self.fail("not UTF-8"))?;
        // gs2-header: channel binding flag, optional authzid, then client-first-bare.
        let mut parts = text.splitn(3, ',');
        let (flag, authzid, bare) = match (parts.next(), parts.next(), parts.next()) {
            (Some(flag), Some(authzid), Some(bare)) => (flag, authzid, bare),
            _ => return Err(self.fail("client-first is not gs2-header,client-first-bare")),
        };
        match flag {
            "n" | "y" => {}
            _ => return Err(self.fail("channel binding is not supported")),
        }
        let mut attributes = bare.split(',');
        let user = match attributes.next().and_then(|a| a.strip_prefix("n=")) {
            Some(name) => decode_saslname(name).ok_or_else(|| self.fail("bad user name"))?,
            None => return Err(self.fail("client-first-bare has no n=")),
        };
        let client_nonce = match attributes.next().and_then(|a| a.strip_prefix("r=")) {
            Some(nonce) if !nonce.is_empty() => nonce,
            _ => return Err(self.fail("client-first-bare has no r=")),
        };
        // Extensions after the nonce (Kafka's tokenauth=true among them) are not served:
        // delegation tokens are not supported, so a token login fails at the proof.
        if let Some(authzid) = authzid.strip_prefix("a=") {
            match decode_saslname(authzid) {
                Some(authzid) if authzid == user => {}
                _ => return Err(self.fail("authorization id differs from the user")),
            }
        } else if !authzid.is_empty() {
            return Err(self.fail("bad gs2 authzid"));
        }
        if server_nonce.is_empty() || server_nonce.contains(',') {
            unreachable!("server nonce must be non-empty printable text without commas");
        }
        let credential = lookup(&user);
        let (salt, iterations) = match &credential {
            Some(c) => (c.salt.as_slice(), c.iterations),
            None => (fake_salt, ITERATIONS_MIN),
        };
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!("r={nonce},s={},i={iterations}", BASE64.encode(salt));
        let gs2_header = format!("{flag},{authzid},");
        self.state = State::Challenged {
            user,
            credential,
            gs2_header,
            client_first_bare: bare.to_string(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok(server_first.into_bytes())
    }

    /// Takes client-final, gives server-final and the authenticated user.
    pub fn last(&mut self, message: &[u8]) -> Result<(String, Vec<u8>), Failure> {
        let State::Challenged {
            user,
            credential,
            gs2_header,
            client_first_bare,
            server_first,
            nonce,
        } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(self.fail("client-final before client-first"));
        };
        let text = std::str::from_utf8(message).map_err(|_| self.fail("not UTF-8"))?;
        let Some((without_proof, proof)) = text.rsplit_once(",p=") else {
            return Err(self.fail("client-final has no proof"));
        };
        let mut attributes = without_proof.split(',');
        let binding = attributes.next().and_then(|a| a.strip_prefix("c="));
        if binding != Some(BASE64.encode(gs2_header.as_bytes()).as_str()) {
            return Err(self.fail("channel binding does not match the gs2 header"));
        }
        if attributes.next().and_then(|a| a.strip_prefix("r=")) != Some(nonce.as_str()) {
            return Err(self.fail("nonce does not match"));
        }
        let proof = BASE64.decode(proof).map_err(|_| self.fail("proof is not base64"))?;
        let Some(credential) = credential else {
            return Err(Failure(format!("unknown user {user:?}")));
        };
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = self.mechanism.hmac(&credential.stored_key, &[auth_message.as_bytes()]);
        if proof.len() != signature.len() {
            return Err(Failure(format!("wrong password for user {user:?}")));
        }
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
        if !equal_in_constant_time(&self.mechanism.hash(&client_key), &credential.stored_key) {
            return Err(Failure(format!("wrong password for user {user:?}")));
        }
        let server_signature =
            self.mechanism.hmac(&credential.server_key, &[auth_message.as_bytes()]);
        Ok((user, format!("v={}", BASE64.encode(server_signature)).into_bytes()))
    }

    fn fail(&mut self, reason: &str) -> Failure {
        self.state = State::Done;
        Failure(format!("{}: {reason}", self.mechanism.name()))
    }
}

/// One SCRAM exchange as the client (a broker logging in on another broker,
/// `security::inter_broker`): client-first, then client-final from server-first, then the
/// server's signature checked in server-final, as RFC 5802 and Kafka's ScramSaslClient.
pub struct ScramClient {
    mechanism: Mechanism,
    password: String,
    client_first_bare: String,
    nonce: String,
    /// The server signature server-final must carry (after `last`).
    server_signature: Option<Vec<u8>>,
}

impl ScramClient {
    /// `nonce`: fresh random printable characters without a comma.
    pub fn new(mechanism: Mechanism, user: &str, password: &str, nonce: &str) -> ScramClient {
        let name = user.replace('=', "=3D").replace(',', "=2C");
        ScramClient {
            mechanism,
            password: password.to_string(),
            client_first_bare: format!("n={name},r={nonce}"),
            nonce: nonce.to_string(),
            server_signature: None,
        }
    }

    pub fn first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// Takes server-first, gives client-final with the proof.
    pub fn last(&mut self, server_first: &[u8]) -> Result<Vec<u8>, Failure> {
        let fail = |reason: &str| Failure(format!("{}: {reason}", self.mechanism.name()));
        let text = std::str::from_utf8(server_first).map_err(|_| fail("not UTF-8"))?;
        let (mut nonce, mut salt, mut iterations) = (None, None, None);
        for attribute in text.split(',') {
            match attribute.split_once('=') {
                Some(("r", value)) => nonce = Some(value),
                Some(("s", value)) => salt = BASE64.decode(value).ok(),
                Some(("i", value)) => iterations = value.parse::<u32>().ok(),
                _ => {}
            }
        }
        let (Some(nonce), Some(salt), Some(iterations)) = (nonce, salt, iterations) else {
            return Err(fail("server-first lacks r=, s= or i="));
        };
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(fail("server nonce does not extend the client's"));
        }
        if !(ITERATIONS_MIN..=ITERATIONS_MAX).contains(&iterations) {
            return Err(fail("iterations out of range"));
        }
        let salted = self.mechanism.salted_password(self.password.as_bytes(), &salt, iterations);
        let client_key = self.mechanism.hmac(&salted, &[b"Client Key"]);
        let stored_key = self.mechanism.hash(&client_key);
        let without_proof = format!("c={},r={nonce}", BASE64.encode(b"n,,"));
        let auth_message = format!("{},{text},{without_proof}", self.client_first_bare);
        let signature = self.mechanism.hmac(&stored_key, &[auth_message.as_bytes()]);
        let proof: Vec<u8> = client_key.iter().zip(&signature).map(|(k, s)| k ^ s).collect();
        let server_key = self.mechanism.hmac(&salted, &[b"Server Key"]);
        self.server_signature = Some(self.mechanism.hmac(&server_key, &[auth_message.as_bytes()]));
        Ok(format!("{without_proof},p={}", BASE64.encode(proof)).into_bytes())
    }

    /// Checks server-final: the server knew the credential.
    pub fn verify(&self, server_final: &[u8]) -> Result<(), Failure> {
        let fail = |reason: &str| Failure(format!("{}: {reason}", self.mechanism.name()));
        let text = std::str::from_utf8(server_final).map_err(|_| fail("not UTF-8"))?;
        if let Some(error) = text.strip_prefix("e=") {
            return Err(fail(&format!("the server refused: {error}")));
        }
        let signature = text
            .strip_prefix("v=")
            .and_then(|v| BASE64.decode(v.split(',').next().unwrap_or_default()).ok())
            .ok_or_else(|| fail("server-final has no v="))?;
        match &self.server_signature {
            Some(expected) if equal_in_constant_time(expected, &signature) => Ok(()),
            _ => Err(fail("the server's signature does not match")),
        }
    }
}

/// Whether two byte strings are equal, in a time that does not depend on where they differ.
pub fn equal_in_constant_time(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// RFC 5802's saslname: `=2C` is a comma, `=3D` an equals sign, any other `=` is an error.
fn decode_saslname(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        match rest.get(at..at + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return None,
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal client, to run whole exchanges against the server.
    fn client_final(
        mechanism: Mechanism,
        password: &str,
        client_first_bare: &str,
        server_first: &str,
    ) -> (String, Vec<u8>) {
        let fields: Vec<&str> = server_first.split(',').collect();
        let nonce = fields[0].strip_prefix("r=").expect("r");
        let salt = BASE64.decode(fields[1].strip_prefix("s=").expect("s")).expect("salt");
        let iterations: u32 = fields[2].strip_prefix("i=").expect("i").parse().expect("i");
        let salted = mechanism.salted_password(password.as_bytes(), &salt, iterations);
        let client_key = mechanism.hmac(&salted, &[b"Client Key"]);
        let stored_key = mechanism.hash(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = mechanism.hmac(&stored_key, &[auth.as_bytes()]);
        let proof: Vec<u8> = client_key.iter().zip(&signature).map(|(k, s)| k ^ s).collect();
        let server_key = mechanism.hmac(&salted, &[b"Server Key"]);
        let expected = mechanism.hmac(&server_key, &[auth.as_bytes()]);
        (format!("{without_proof},p={}", BASE64.encode(proof)), expected)
    }

    /// RFC 7677 section 3: user "user", password "pencil".
    #[test]
    fn rfc7677_sha256_vector() {
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").expect("salt");
        let credential = Credential::from_password(Mechanism::Sha256, "pencil", &salt, 4096);
        let mut server = ScramServer::new(Mechanism::Sha256);
        let first = server
            .first(
                b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
                |user| (user == "user").then(|| credential.clone()),
                "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
                b"unused",
            )
            .expect("server-first");
        assert_eq!(
            std::str::from_utf8(&first).expect("utf8"),
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
             s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let (user, last) = server
            .last(
                b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                  p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            )
            .expect("server-final");
        assert_eq!(user, "user");
        assert_eq!(
            std::str::from_utf8(&last).expect("utf8"),
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    /// RFC 7677's client proof checked against a credential derived from the salted
    /// password (AlterUserScramCredentials' input) gives the same keys.
    #[test]
    fn credential_from_salted_password_matches_from_password() {
        let salt = b"0123456789abcdef";
        for mechanism in [Mechanism::Sha256, Mechanism::Sha512] {
            let salted = mechanism.salted_password(b"secret", salt, 4096);
            assert_eq!(
                Credential::from_salted_password(mechanism, &salted, salt, 4096),
                Credential::from_password(mechanism, "secret", salt, 4096)
            );
        }
    }

    #[test]
    fn whole_exchange_both_mechanisms_and_wrong_passwords() {
        for mechanism in [Mechanism::Sha256, Mechanism::Sha512] {
            let credential = Credential::from_password(mechanism, "admin-secret", b"salty", 4096);
            for (password, ok) in [("admin-secret", true), ("admin-secreT", false)] {
                let mut server = ScramServer::new(mechanism);
                let bare = "n=admin,r=clientnonce";
                let first = server
                    .first(
                        format!("n,,{bare}").as_bytes(),
                        |_| Some(credential.clone()),
                        "servernonce",
                        b"fake",
                    )
                    .expect("first");
                let first = String::from_utf8(first).expect("utf8");
                let (message, expected) = client_final(mechanism, password, bare, &first);
                match server.last(message.as_bytes()) {
                    Ok((user, last)) => {
                        assert!(ok);
                        assert_eq!(user, "admin");
                        assert_eq!(last, format!("v={}", BASE64.encode(expected)).into_bytes());
                    }
                    Err(Failure(reason)) => {
                        assert!(!ok, "{reason}");
                        assert!(!reason.contains(password), "{reason}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_client_logs_in_on_the_server_and_checks_its_signature() {
        for mechanism in [Mechanism::Sha256, Mechanism::Sha512] {
            let credential = Credential::from_password(mechanism, "pw", b"salty", 4096);
            let login = |password: &str| {
                let mut client = ScramClient::new(mechanism, "bro,ker=1", password, "cnonce");
                let mut server = ScramServer::new(mechanism);
                let lookup = |user: &str| (user == "bro,ker=1").then(|| credential.clone());
                let first = server.first(&client.first(), lookup, "snonce", b"fake").unwrap();
                let last = client.last(&first).unwrap();
                let (user, server_final) = server.last(&last)?;
                assert_eq!(user, "bro,ker=1");
                client.verify(&server_final).map(|_| ())
            };
            assert!(login("pw").is_ok());
            assert!(login("wrong").is_err());
            // A server that does not know the credential cannot sign.
            let mut client = ScramClient::new(mechanism, "u", "pw", "cnonce");
            let first = format!("r=cnonceS,s={},i=4096", BASE64.encode(b"salty"));
            client.last(first.as_bytes()).unwrap();
            assert!(client.verify(b"v=AAAA").is_err());
            assert!(client.last(b"r=other,s=AAAA,i=4096").is_err());
        }
    }

    #[test]
    fn unknown_user_is_challenged_then_fails() {
        let mut server = ScramServer::new(Mechanism::Sha256);
        let first = server.first(b"n,,n=nobody,r=abc", |_| None, "xyz", b"fakesalt").expect("1");
        let first = String::from_utf8(first).expect("utf8");
        assert!(first.starts_with("r=abcxyz,s="), "{first}");
        let (message, _) = client_final(Mechanism::Sha256, "x", "n=nobody,r=abc", &first);
        let error = server.last(message.as_bytes()).expect_err("unknown");
        assert!(error.0.contains("unknown user"), "{error:?}");
    }

    #[test]
    fn malformed_messages_fail_and_the_exchange_ends() {
        let credential = Credential::from_password(Mechanism::Sha256, "p", b"s", 4096);
        let lookup = |_: &str| Some(credential.clone());
        for bad in [
            &b"p=tls-unique,,n=a,r=b"[..],
            b"n,,r=b",
            b"n,,n=a",
            b"n,,n=a=2X,r=b",
            b"n,a=other,n=a,r=b",
            b"n",
            b"\xff\xfe",
        ] {
            let mut server = ScramServer::new(Mechanism::Sha256);
            assert!(server.first(bad, lookup, "s", b"f").is_err(), "{bad:?}");
            assert!(server.last(b"c=biws,r=bs,p=AAAA").is_err());
        }
        let mut server = ScramServer::new(Mechanism::Sha256);
        server.first(b"n,,n=a,r=b", lookup, "s", b"f").expect("first");
        // A nonce that is not the server's, and a channel binding that is not the header's.
        assert!(server.last(b"c=biws,r=bX,p=AAAA").is_err());
        let mut server = ScramServer::new(Mechanism::Sha256);
        server.first(b"n,,n=a,r=b", lookup, "s", b"f").expect("first");
        assert!(server.last(b"c=eSws,r=bs,p=AAAA").is_err());
    }

    #[test]
    fn saslnames_are_decoded() {
        assert_eq!(decode_saslname("a=2Cb=3Dc").as_deref(), Some("a,b=c"));
        assert_eq!(decode_saslname("plain").as_deref(), Some("plain"));
        assert_eq!(decode_saslname("bad=").as_deref(), None);
        assert_eq!(decode_saslname("bad=41").as_deref(), None);
        let mut server = ScramServer::new(Mechanism::Sha256);
        let mut seen = String::new();
        server
            .first(
                b"n,a=x=2Cy,n=x=2Cy,r=n",
                |user| {
                    seen = user.to_string();
                    None
                },
                "s",
                b"f",
            )
            .expect("first");
        assert_eq!(seen, "x,y");
    }

    #[test]
    fn mechanism_names_and_ids_round_trip() {
        for mechanism in [Mechanism::Sha256, Mechanism::Sha512] {
            assert_eq!(Mechanism::from_name(mechanism.name()), Some(mechanism));
            assert_eq!(Mechanism::from_type_id(mechanism.type_id()), Some(mechanism));
        }
        assert_eq!(Mechanism::from_name("SCRAM-SHA-1"), None);
        assert_eq!(Mechanism::from_type_id(0), None);
    }
}
