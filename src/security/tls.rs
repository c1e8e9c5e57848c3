//! The TLS server configuration: the certificate chain and key (`--tls-cert-file`,
//! `--tls-key-file`, PEM), and the CA that client certificates must chain to when
//! `--tls-client-ca-file` is given (mTLS: a client without a valid certificate is refused in
//! the handshake). Loaded at start-up, where each problem ends in one sentence with the fix,
//! and again on SIGHUP, where a problem is logged and the previous configuration kept: new
//! connections get the new certificate, open ones keep theirs.
//!
//! The principal of a client certificate is its subject as an RFC 2253 name, the form
//! Kafka's default principal builder gives (`User:CN=client,O=Example`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

/// Where the TLS material comes from.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// The current server configuration, swapped whole on a reload.
pub struct Tls {
    files: TlsFiles,
    current: ArcSwap<ServerConfig>,
}

impl Tls {
    /// Loads the files; the error is one sentence with the fix.
    pub fn load(files: TlsFiles) -> Result<Tls, String> {
        let config = server_config(&files)?;
        Ok(Tls { files, current: ArcSwap::from_pointee(config) })
    }

    /// The configuration a new connection uses.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// Reads the files again; on a problem the previous configuration stays.
    pub fn reload(&self) -> Result<(), String> {
        let config = server_config(&self.files)?;
        self.current.store(Arc::new(config));
        Ok(())
    }

    pub fn mutual(&self) -> bool {
        self.files.client_ca.is_some()
    }
}

fn server_config(files: &TlsFiles) -> Result<ServerConfig, String> {
    // ring rather than aws-lc-rs: aws-lc-rs needs cmake and a long C build on every
    // machine. ring's provider is deprecated for lacking post-quantum key exchange, which
    // Kafka clients (OpenSSL 3, the JDK) do not negotiate with a broker yet.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = read_certificates(&files.cert, "--tls-cert-file")?;
    let key = read_key(&files.key)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for certificate in read_certificates(path, "--tls-client-ca-file")? {
                roots.add(certificate).map_err(|e| {
                    format!(
                        "--tls-client-ca-file {} holds a certificate that is not a usable CA \
                         ({e}); give the PEM of the CA that signs client certificates",
                        path.display()
                    )
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| {
                    format!("--tls-client-ca-file {} cannot verify clients ({e})", path.display())
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        format!(
            "--tls-key-file {} does not go with --tls-cert-file {} ({e}); give the key of the \
             first certificate in the chain",
            files.key.display(),
            files.cert.display()
        )
    })?;
    // No ALPN: Kafka clients send none. Session resumption through the default in-memory
    // cache (per shard's copy of the config, bounded by rustls).
    config.ignore_client_order = false;
    Ok(config)
}

fn read_certificates(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read(path, flag)?;
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&bytes).collect::<Result<_, _>>().map_err(|e| {
            format!("{flag} {} is not valid PEM ({e}); give a PEM file", path.display())
        })?;
    if chain.is_empty() {
        return Err(format!(
            "{flag} {} holds no CERTIFICATE block; give a PEM certificate file",
            path.display()
        ));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = read(path, "--tls-key-file")?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        format!(
            "--tls-key-file {} holds no usable private key ({e}); give an unencrypted PEM key \
             (PKCS#8, RSA or EC)",
            path.display()
        )
    })
}

fn read(path: &Path, flag: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| {
        format!("cannot read {flag} {}: {e}; check the path and its permissions", path.display())
    })
}

/// The principal of a client certificate: its subject as an RFC 2253 name (the RDNs in
/// reverse order of the DER, comma-separated, known attribute types by keyword), or `None`
/// when the certificate cannot be parsed.
pub fn principal_of(certificate: &[u8]) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate).ok()?;
    let rdns: Vec<String> = parsed
        .subject()
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|attribute| {
                    let oid = attribute.attr_type().to_id_string();
                    let key = keyword(&oid).map(str::to_string).unwrap_or(oid);
                    let value = match attribute.as_str() {
                        Ok(text) => escape(text),
                        Err(_) => format!("#{}", hex(attribute.as_slice())),
                    };
                    format!("{key}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    Some(rdns.into_iter().rev().collect::<Vec<_>>().join(","))
}

fn keyword(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

/// RFC 2253 escaping of an attribute value.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (at, c) in text.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (at == 0 && (c == '#' || c == ' '))
            || (at + 1 == text.chars().count() && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc2253_escaping() {
        assert_eq!(escape("plain"), "plain");
        assert_eq!(escape("a,b+c"), "a\\,b\\+c");
        assert_eq!(escape("#x "), "\\#x\\ ");
    }

    #[test]
    fn missing_files_say_which_option() {
        let files = TlsFiles {
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
            client_ca: None,
        };
        let error = Tls::load(files).err().expect("missing");
        assert!(error.starts_with("cannot read --tls-cert-file /nonexistent/cert.pem"), "{error}");
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, "not pem at all\n").expect("write");
        let files = TlsFiles { cert, key: "/nonexistent/key.pem".into(), client_ca: None };
        let error = Tls::load(files).err().expect("no certificate");
        assert!(error.contains("no CERTIFICATE"), "{error}");
    }
}
