//! From validated settings to connections: reads the credential files the
//! config names (proxy passwords, the store password, Kafka secrets) and
//! builds HTTP clients, PostgreSQL options and librdkafka properties; and,
//! for `incidentd check`, loads every TLS file and says what would fail or
//! leak before anything starts.

use crate::config::net::{ClientNet, ProxyConfig};
use crate::config::outbound::DestinationConfig;
use crate::config::{Config, KafkaConfig, Secret, StoreBackend};
use crate::net::{self, ClientOptions, ProxyMode};
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::time::Duration;

/// The text of a secret: inline, or the trimmed content of its file.
pub fn read_secret(s: &Secret, what: &str) -> Result<String> {
    match s {
        Secret::Inline(t) => Ok(t.clone()),
        Secret::File(p) => {
            let t = std::fs::read_to_string(p)
                .with_context(|| format!("reading the {what} file {}", p.display()))?;
            let t = t.trim().to_string();
            if t.is_empty() {
                bail!("the {what} file {} is empty", p.display());
            }
            Ok(t)
        }
    }
}

/// The proxy of a client, its password read.
fn proxy_mode(p: &ProxyConfig, what: &str) -> Result<ProxyMode> {
    Ok(match p {
        ProxyConfig::None => ProxyMode::None,
        ProxyConfig::Env => ProxyMode::Env,
        ProxyConfig::Url {
            url,
            user,
            password,
            no_proxy,
        } => ProxyMode::Url(net::Proxy {
            url: url.clone(),
            auth: match (user, password) {
                (Some(u), Some(p)) => Some((
                    u.clone(),
                    read_secret(p, &format!("{what} proxy password"))?,
                )),
                _ => None,
            },
            no_proxy: no_proxy.clone(),
        }),
    })
}

/// Options of an HTTP client with `n`'s TLS and proxy.
pub fn client_options(n: &ClientNet, timeout: Duration, what: &str) -> Result<ClientOptions> {
    Ok(ClientOptions {
        tls: n.tls.clone(),
        proxy: proxy_mode(&n.proxy, what)?,
        timeout,
        connect_timeout: timeout.min(Duration::from_secs(5)),
    })
}

/// The HTTP client of a destination.
pub fn destination_client(d: &DestinationConfig) -> Result<reqwest::Client> {
    let o = client_options(&d.net, d.timeout, &d.name)?;
    net::http_client(&o).with_context(|| format!("outbound destination {}", d.name))
}

/// PostgreSQL connection options, the password file read.
pub fn pg_options(
    url: &str,
    password: Option<&Secret>,
) -> Result<sqlx::postgres::PgConnectOptions> {
    let password = password
        .map(|p| read_secret(p, "store password"))
        .transpose()?;
    crate::store::pg_connect_options(url, password.as_deref())
        .with_context(|| format!("store.url {}", net::redact_url(url)))
}

/// Kafka settings with `librdkafka_secret_files` read into properties,
/// and the trust of the other clients: librdkafka's OpenSSL is built in,
/// so it probes the usual CA bundle paths and would not see
/// `SSL_CERT_FILE` / `SSL_CERT_DIR`; without an `ssl.ca.location` of its
/// own, Kafka gets the one these name.
pub fn kafka_with_secrets(k: &KafkaConfig) -> Result<KafkaConfig> {
    let mut out = k.clone();
    for (key, path) in &k.secret_files {
        let v = read_secret(&Secret::File(path.clone()), &format!("kafka {key}"))?;
        out.librdkafka.push((key.clone(), v));
    }
    out.secret_files.clear();
    let env = |v: &str| std::env::var(v).ok().filter(|s| !s.is_empty());
    let add = kafka_ca_from_env(
        &out.librdkafka,
        env("SSL_CERT_FILE").as_deref(),
        env("SSL_CERT_DIR").as_deref(),
    );
    out.librdkafka.extend(add);
    Ok(out)
}

/// The CA location to add for `SSL_CERT_FILE` / `SSL_CERT_DIR`
/// (`ssl.ca.location`, for the brokers), unless the properties already say
/// where the CAs are.
fn kafka_ca_from_env(
    props: &[(String, String)],
    cert_file: Option<&str>,
    cert_dir: Option<&str>,
) -> Vec<(String, String)> {
    // A directory of hashed certificates (SSL_CERT_DIR may list several;
    // librdkafka takes one).
    let Some(ca) = cert_file.map(str::to_string).or_else(|| {
        cert_dir
            .and_then(|d| d.split(':').next())
            .map(str::to_string)
    }) else {
        return Vec::new();
    };
    let set = props.iter().any(|(k, _)| {
        matches!(
            k.trim_start_matches("consumer.")
                .trim_start_matches("producer."),
            "ssl.ca.location" | "ssl.ca.pem" | "ssl.ca.certificate.stores"
        )
    });
    if set {
        Vec::new()
    } else {
        vec![("ssl.ca.location".to_string(), ca)]
    }
}

/// File descriptors kept free for everything but client connections: the
/// store, outbound and Kafka sockets, logs, the runtime.
const FD_RESERVE: u64 = 64;

/// `configured`, lowered so that client connections cannot take the file
/// descriptors the rest of the daemon needs (the soft `RLIMIT_NOFILE`, read
/// from /proc on Linux; elsewhere the configured value stands).
pub fn max_connections(configured: usize) -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| fd_soft_limit(&t));
    match soft {
        Some(limit) => {
            let room =
                usize::try_from(limit.saturating_sub(FD_RESERVE).max(16)).unwrap_or(usize::MAX);
            if room < configured {
                tracing::info!(
                    configured,
                    limit = room,
                    fd_limit = limit,
                    "http.max_connections lowered to fit the file-descriptor limit"
                );
            }
            configured.min(room)
        }
        None => configured,
    }
}

/// The soft "Max open files" of a /proc/<pid>/limits text.
fn fd_soft_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
}

/// Whether a host (name or address) is the local machine.
fn local_host(h: &str) -> bool {
    let h = h.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback())
}

/// Whether a URL's host is the local machine (plain HTTP is fine there).
fn loopback(url: &str) -> bool {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(local_host))
        .unwrap_or(false)
}

/// What `incidentd check` finds about connections: errors (a file that
/// does not load, a key that does not match its certificate) and warnings
/// (a credential that would travel in clear).
#[derive(Debug, Default)]
pub struct ConnectionReport {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

/// Said when the incident API is open to a network: anyone who reaches the
/// port could acknowledge, resolve and hold incidents, or post a change
/// window that mutes a CI.
pub fn open_api_warning(cfg: &Config) -> Option<String> {
    (cfg.api_tokens.is_empty() && !cfg.listen.ip().is_loopback()).then(|| {
        format!(
            "listening on {} with no API token: anyone who reaches this port can acknowledge, resolve and hold incidents and post change windows; set api.operator_tokens (and api.read_tokens) or listen on 127.0.0.1",
            cfg.listen
        )
    })
}

/// Load every TLS file and proxy credential the configuration names.
pub fn check_connections(cfg: &Config) -> ConnectionReport {
    let mut r = ConnectionReport::default();
    r.warnings.extend(open_api_warning(cfg));
    for t in &cfg.api_tokens {
        if let Err(e) = read_secret(&t.secret, &format!("API token {}", t.name)) {
            r.errors.push(format!("api: {e:#}"));
        }
    }
    for (i, d) in cfg.outbound.iter().enumerate() {
        let at = format!("outbound.destinations[{i}] ({})", d.name);
        if let Err(e) = destination_client(d) {
            r.errors.push(format!("{at}: {e:#}"));
        } else if d.url.starts_with("https://")
            && let Some(e) = net::tls::trust_problem(&d.net.tls)
        {
            r.errors.push(format!("{at}: {e}"));
        }
        if d.sends_credential() && d.url.starts_with("http://") && !loopback(&d.url) {
            r.warnings.push(format!(
                "{at}: {} is plain http:// to another host: its credential would travel unencrypted",
                d.display_url()
            ));
        }
        if let Some(api) = d.api_url() {
            if api.starts_with("https://")
                && !d.url.starts_with("https://")
                && let Some(e) = net::tls::trust_problem(&d.net.tls)
            {
                r.errors.push(format!("{at}: {e}"));
            }
            if api.starts_with("http://") && !loopback(api) {
                r.warnings.push(format!(
                    "{at}: api_url {} is plain http:// to another host: the REST API key would travel unencrypted",
                    net::redact_url(api)
                ));
            }
        }
    }
    if let Some(sn) = &cfg.servicenow {
        if let Err(e) = client_options(&sn.net, sn.timeout, "cmdb.servicenow")
            .and_then(|o| net::http_client(&o).map_err(anyhow::Error::from))
        {
            r.errors.push(format!("cmdb.servicenow: {e:#}"));
        }
        if sn.url.starts_with("http://") && !loopback(&sn.url) {
            r.warnings.push(format!(
                "cmdb.servicenow: {} is plain http:// to another host: its credential would travel unencrypted",
                net::redact_url(&sn.url)
            ));
        }
    }
    if let Some(tls) = &cfg.listen_tls
        && let Err(e) = net::tls::server_config(tls)
    {
        r.errors.push(format!("http.tls: {e}"));
    }
    if let StoreBackend::Postgres { url, password, .. } = &cfg.store {
        match pg_options(url, password.as_ref()) {
            Ok(o) => {
                use sqlx::postgres::PgSslMode;
                let weak = matches!(
                    o.get_ssl_mode(),
                    PgSslMode::Disable | PgSslMode::Allow | PgSslMode::Prefer
                );
                let local = o.get_socket().is_some()
                    || o.get_host().starts_with('/')
                    || local_host(o.get_host());
                if weak && !local {
                    r.warnings.push(format!(
                        "store.url: sslmode={} to {}: the connection may be unencrypted and the server is not verified; use sslmode=verify-full",
                        ssl_mode_name(o.get_ssl_mode()),
                        o.get_host()
                    ));
                }
            }
            Err(e) => r.errors.push(format!("store: {e:#}")),
        }
        for (key, file) in pg_files(url) {
            if let Err(e) = check_pem(&file, key == "sslkey") {
                r.errors.push(format!("store.url {key}: {e}"));
            }
        }
    }
    if let Some(k) = &cfg.kafka {
        let protocol = k
            .librdkafka
            .iter()
            .rev()
            .find(|(key, _)| {
                key.trim_start_matches("consumer.")
                    .trim_start_matches("producer.")
                    == "security.protocol"
            })
            .map(|(_, v)| v.to_ascii_lowercase());
        let remote = k.brokers.split(',').any(|b| {
            let host = b.trim().rsplit_once(':').map_or(b.trim(), |(h, _)| h);
            !local_host(host)
        });
        if protocol.as_deref() == Some("sasl_plaintext") && remote {
            r.warnings.push(format!(
                "kafka: security.protocol = sasl_plaintext to {}: the SASL credentials and every alert travel unencrypted; use sasl_ssl",
                k.brokers
            ));
        }
        for (key, path) in &k.secret_files {
            if let Err(e) = read_secret(&Secret::File(path.clone()), key) {
                r.errors
                    .push(format!("kafka.librdkafka_secret_files.{key:?}: {e:#}"));
            }
        }
        for (key, v) in &k.librdkafka {
            let key_file = key.ends_with("ssl.key.location");
            if key.ends_with("ssl.ca.location") && v == "probe" {
                continue;
            }
            if key.ends_with("ssl.ca.location")
                || key.ends_with("ssl.certificate.location")
                || key_file
            {
                let p = Path::new(v);
                if p.is_dir() {
                    continue;
                }
                if let Err(e) = check_pem(p, key_file) {
                    r.errors.push(format!("kafka.librdkafka.{key:?}: {e}"));
                }
            }
        }
    }
    r
}

fn ssl_mode_name(m: sqlx::postgres::PgSslMode) -> &'static str {
    use sqlx::postgres::PgSslMode as M;
    match m {
        M::Disable => "disable",
        M::Allow => "allow",
        M::Prefer => "prefer",
        M::Require => "require",
        M::VerifyCa => "verify-ca",
        M::VerifyFull => "verify-full",
    }
}

/// The certificate and key files a PostgreSQL URL names.
fn pg_files(url: &str) -> Vec<(&'static str, std::path::PathBuf)> {
    let Ok(u) = reqwest::Url::parse(url) else {
        return Vec::new();
    };
    u.query_pairs()
        .filter_map(|(k, v)| {
            let key = match k.as_ref() {
                "sslrootcert" | "ssl-root-cert" | "ssl-ca" if v != "system" => "sslrootcert",
                "sslcert" | "ssl-cert" => "sslcert",
                "sslkey" | "ssl-key" => "sslkey",
                _ => return None,
            };
            Some((key, std::path::PathBuf::from(v.as_ref())))
        })
        .collect()
}

/// A PEM file of certificates (or, with `key`, holding a private key).
fn check_pem(path: &Path, key: bool) -> Result<(), net::TlsError> {
    if key {
        net::tls::load_key(path).map(|_| ())
    } else {
        net::tls::load_certs(path).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_trusts_what_ssl_cert_file_names_unless_told_otherwise() {
        let none: Vec<(String, String)> = Vec::new();
        let both = |ca: &str| vec![("ssl.ca.location".to_string(), ca.to_string())];
        assert_eq!(
            kafka_ca_from_env(&none, Some("/etc/corp/ca.pem"), Some("/etc/ssl/certs")),
            both("/etc/corp/ca.pem")
        );
        assert_eq!(
            kafka_ca_from_env(&none, None, Some("/etc/corp/certs:/etc/ssl/certs")),
            both("/etc/corp/certs")
        );
        assert!(kafka_ca_from_env(&none, None, None).is_empty());
        let own = vec![("consumer.ssl.ca.location".to_string(), "/x".to_string())];
        assert!(kafka_ca_from_env(&own, Some("/etc/corp/ca.pem"), None).is_empty());
    }

    #[test]
    fn the_fd_limit_is_read_from_proc() {
        let t = "Limit                     Soft Limit           Hard Limit           Units     \nMax cpu time              unlimited            unlimited            seconds   \nMax open files            256                  524288               files     \n";
        assert_eq!(fd_soft_limit(t), Some(256));
        assert_eq!(fd_soft_limit("nothing"), None);
    }

    #[test]
    fn clear_text_is_judged_by_host() {
        assert!(loopback("http://127.0.0.1:9/x"));
        assert!(loopback("http://localhost/x"));
        assert!(loopback("http://[::1]:80/"));
        assert!(!loopback("http://snow.example.com"));
        assert!(!loopback("http://10.0.0.1"));
    }
}
