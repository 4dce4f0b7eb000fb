//! TLS with rustls (ring): the client side of every outbound HTTPS call and
//! the daemon's own listener. Certificates and keys are PEM files, read when
//! a configuration is built (at start, and again on SIGHUP for the
//! listener), so a rotated certificate takes effect without a restart.
//!
//! Client trust follows what operators already do for curl and OpenSSL:
//! the operating system's store, with `SSL_CERT_FILE` / `SSL_CERT_DIR`
//! honoured (that is how corporate CAs are installed), plus a destination's
//! own `ca_file`. There is deliberately no way to turn verification off.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("{path}: no certificate in the file (PEM \"CERTIFICATE\" blocks expected)")]
    NoCertificate { path: String },
    #[error("{key}: the private key does not belong to the certificate in {cert}")]
    KeyMismatch { cert: String, key: String },
    #[error(
        "no trusted CA: the system store is empty (install ca-certificates, or set SSL_CERT_FILE) and no ca_file is set"
    )]
    NoRoots,
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(String),
}

/// How a client verifies the servers it calls, and which certificate it
/// shows them. Paths are read when the configuration is built.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// PEM bundle of CAs trusted besides (or, with `system_roots` false,
    /// instead of) the operating system's.
    pub ca_file: Option<PathBuf>,
    /// Trust the operating system's store (and `SSL_CERT_FILE` /
    /// `SSL_CERT_DIR`). True unless a `ca_file` is meant to replace it.
    pub system_roots: bool,
    /// Mutual TLS: the client certificate (chain) and its key.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

impl ClientTls {
    /// The default: the system store only, no client certificate.
    pub fn system() -> ClientTls {
        ClientTls {
            system_roots: true,
            ..ClientTls::default()
        }
    }
}

/// The listener's certificate and, for client-certificate authentication,
/// the CAs whose certificates it accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// When set, every client must present a certificate signed by one of
    /// these CAs (Alertmanager's `tls_config.cert_file`).
    pub client_ca_file: Option<PathBuf>,
}

/// ring: the one provider this build has (reqwest and sqlx use it too, so
/// one C build, and no cmake). rustls marks its constructor deprecated for
/// lacking post-quantum key exchange, which no destination requires yet.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_error(path: &Path, message: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// Every certificate in a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, pem_message(&e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, pem_message(&e)))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error(path, pem_message(&e)))
}

fn pem_message(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error as P;
    match e {
        P::Io(io) => io.to_string(),
        P::NoItemsFound => "no PEM item of the expected kind (a private key?) found".into(),
        other => format!("not valid PEM: {other:?}"),
    }
}

/// Load a certificate chain and its key and check that they belong
/// together (the error otherwise shows only at the first handshake).
pub fn load_pair(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let certs = load_certs(cert)?;
    let k = load_key(key)?;
    let signing = provider()
        .key_provider
        .load_private_key(k.clone_key())
        .map_err(|e| file_error(key, format!("unusable private key: {e}")))?;
    let certified = rustls::sign::CertifiedKey::new(certs.clone(), signing);
    match certified.keys_match() {
        Ok(()) => Ok((certs, k)),
        // Keys whose public half ring cannot derive are not checked here.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok((certs, k)),
        Err(_) => Err(TlsError::KeyMismatch {
            cert: cert.display().to_string(),
            key: key.display().to_string(),
        }),
    }
}

/// The trust store a client configuration verifies servers against.
fn roots(tls: &ClientTls) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    if tls.system_roots {
        // Honours SSL_CERT_FILE and SSL_CERT_DIR, as OpenSSL does. A bad
        // file among many in a system directory is skipped, as there.
        let found = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(found.certs);
    }
    if let Some(ca) = &tls.ca_file {
        for cert in load_certs(ca)? {
            roots
                .add(cert)
                .map_err(|e| file_error(ca, format!("not a usable CA certificate: {e}")))?;
        }
    }
    Ok(roots)
}

/// Why no server could be verified with `tls`: nothing trusted at all (no
/// system CA bundle, no `ca_file`). Not an error for a client that only
/// calls plain-HTTP URLs; `check` reports it for https ones.
pub fn trust_problem(tls: &ClientTls) -> Option<TlsError> {
    match roots(tls) {
        Ok(r) if r.is_empty() => Some(TlsError::NoRoots),
        Ok(_) => None,
        Err(e) => Some(e),
    }
}

/// A rustls client configuration: TLS 1.2 and 1.3, the trust of `tls`,
/// its client certificate if any.
pub fn client_config(tls: &ClientTls) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(tls)?);
    let mut config = match &tls.client_cert {
        Some((cert, key)) => {
            let (certs, key) = load_pair(cert, key)?;
            builder.with_client_auth_cert(certs, key)?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A rustls server configuration for the listener.
pub fn server_config(tls: &ServerTls) -> Result<ServerConfig, TlsError> {
    let (certs, key) = load_pair(&tls.cert_file, &tls.key_file)?;
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match &tls.client_ca_file {
        Some(ca) => {
            let mut store = RootCertStore::empty();
            for cert in load_certs(ca)? {
                store
                    .add(cert)
                    .map_err(|e| file_error(ca, format!("not a usable CA certificate: {e}")))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(store),
                provider(),
            )
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
