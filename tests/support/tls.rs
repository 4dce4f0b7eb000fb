//! Real TLS for the suites: a certificate authority made in the test
//! (rcgen), server and client certificates it signs, HTTPS serving of an
//! axum router (optionally requiring client certificates), and an HTTP
//! CONNECT proxy that logs what it is asked. Nothing here mocks TLS: the
//! daemon and its peers run real handshakes against these certificates.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// A certificate authority that exists only for one test.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pub pem: String,
}

/// A certificate with its key, as PEM, and where they were written.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("self-signed CA");
        let pem = issuer.pem();
        TestCa { issuer, pem }
    }

    /// Write the CA certificate to `dir/<file>`.
    pub fn write(&self, dir: &Path, file: &str) -> PathBuf {
        let p = dir.join(file);
        std::fs::write(&p, &self.pem).expect("write CA");
        p
    }

    fn issue(&self, dir: &Path, stem: &str, names: &[&str], client: bool) -> Issued {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or(stem));
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        let cert_file = dir.join(format!("{stem}.crt"));
        let key_file = dir.join(format!("{stem}.key"));
        std::fs::write(&cert_file, cert.pem()).expect("write cert");
        std::fs::write(&key_file, key.serialize_pem()).expect("write key");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_file,
            key_file,
        }
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn server(&self, dir: &Path, stem: &str, names: &[&str]) -> Issued {
        self.issue(dir, stem, names, false)
    }

    /// A client certificate named `cn`.
    pub fn client(&self, dir: &Path, stem: &str, cn: &str) -> Issued {
        self.issue(dir, stem, &[cn], true)
    }
}

#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls server configuration for `leaf`; with `client_ca`, clients
/// must present a certificate it signed.
pub fn server_config(leaf: &Issued, client_ca: Option<&TestCa>) -> rustls::ServerConfig {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("leaf PEM");
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key PEM");
    let b = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let b = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).expect("CA PEM"))
                .expect("CA root");
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .expect("client verifier");
            b.with_client_cert_verifier(v)
        }
        None => b.with_no_client_auth(),
    };
    b.with_single_cert(certs, key).expect("server config")
}

/// What an HTTPS server saw of its clients' handshakes.
#[derive(Default)]
pub struct HandshakeLog {
    /// Handshakes that failed, with the error.
    pub failed: Vec<String>,
    pub completed: usize,
}

struct TlsAccept {
    tcp: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    log: Arc<Mutex<HandshakeLog>>,
}

impl axum::serve::Listener for TlsAccept {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((s, a)) = self.tcp.accept().await else {
                continue;
            };
            match self.acceptor.accept(s).await {
                Ok(t) => {
                    self.log.lock().expect("log").completed += 1;
                    return (t, a);
                }
                Err(e) => self.log.lock().expect("log").failed.push(e.to_string()),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// Serve `router` over HTTPS on 127.0.0.1 with `config`; the base URL
/// (`https://127.0.0.1:PORT` or, with `host`, `https://host:PORT`) and the
/// handshake log.
pub async fn serve_https(
    router: axum::Router,
    config: rustls::ServerConfig,
    host: &str,
) -> (String, Arc<Mutex<HandshakeLog>>) {
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind https");
    let port = tcp.local_addr().expect("addr").port();
    let log = Arc::new(Mutex::new(HandshakeLog::default()));
    let listener = TlsAccept {
        tcp,
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        log: log.clone(),
    };
    tokio::spawn(async move {
        axum::serve(listener, router).await.expect("https server");
    });
    (format!("https://{host}:{port}"), log)
}

/// An HTTP proxy on 127.0.0.1 that tunnels `CONNECT` requests and records
/// the request line and headers of everything it is asked. Plain
/// (absolute-form) requests are recorded and answered 502: a client that
/// sends one through this proxy has shown it the whole request.
#[derive(Clone)]
pub struct ConnectProxy {
    pub url: String,
    /// Each request's head (request line and headers) as received.
    pub seen: Arc<Mutex<Vec<String>>>,
    /// `Proxy-Authorization` required (`Basic base64(user:pass)`), if set.
    required_auth: Option<String>,
}

impl ConnectProxy {
    pub async fn start(required_auth: Option<&str>) -> ConnectProxy {
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let url = format!("http://{}", tcp.local_addr().expect("addr"));
        let p = ConnectProxy {
            url,
            seen: Arc::default(),
            required_auth: required_auth.map(str::to_string),
        };
        let me = p.clone();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = tcp.accept().await else {
                    continue;
                };
                let me = me.clone();
                tokio::spawn(async move { me.handle(s).await });
            }
        });
        p
    }

    pub fn requests(&self) -> Vec<String> {
        self.seen.lock().expect("proxy log").clone()
    }

    async fn handle(&self, s: TcpStream) {
        let mut reader = BufReader::new(s);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" || line == "\n" {
                break;
            }
            head.push_str(&line);
        }
        self.seen.lock().expect("proxy log").push(head.clone());
        let mut s = reader.into_inner();
        let first = head.lines().next().unwrap_or_default().to_string();
        if let Some(want) = &self.required_auth {
            let ok = head.lines().any(|l| {
                l.to_ascii_lowercase().starts_with("proxy-authorization:")
                    && l.split_once(':').is_some_and(|(_, v)| v.trim() == want)
            });
            if !ok {
                let _ = s
                    .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\r\n")
                    .await;
                return;
            }
        }
        let mut parts = first.split_whitespace();
        let (Some("CONNECT"), Some(target)) = (parts.next(), parts.next()) else {
            let _ = s
                .write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                .await;
            return;
        };
        let Ok(mut upstream) = TcpStream::connect(target).await else {
            let _ = s
                .write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                .await;
            return;
        };
        if s.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
        let _ = tokio::io::copy_bidirectional(&mut s, &mut upstream).await;
    }
}
