//! The one way outbound HTTP clients are built (destinations, the
//! ServiceNow CMDB sync): rustls with the configured trust, the configured
//! proxy or none, no redirects followed, bounded timeouts.

use super::tls::{ClientTls, TlsError, client_config};
use std::time::Duration;

/// Where requests go through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ProxyMode {
    /// Straight to the destination; proxy variables in the environment are
    /// ignored (a daemon's environment is rarely what its operator meant).
    #[default]
    None,
    /// `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY` and `NO_PROXY` from the
    /// environment, as curl reads them.
    Env,
    /// This proxy.
    Url(Proxy),
}

/// An explicit proxy (`http://` or `https://`). https destinations are
/// reached through it with `CONNECT`, so it sees the host and port only.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    pub url: String,
    /// Basic credentials for the proxy (`Proxy-Authorization`).
    pub auth: Option<(String, String)>,
    /// Hosts reached directly: comma-separated names, `.domain` suffixes,
    /// IPs and CIDR blocks (curl's `NO_PROXY` syntax).
    pub no_proxy: Option<String>,
}

/// Never print the proxy password.
impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("url", &super::redact::redact_url(&self.url))
            .field("user", &self.auth.as_ref().map(|(u, _)| u))
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

/// Everything a client is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    pub tls: ClientTls,
    pub proxy: ProxyMode,
    /// Whole request, answer included.
    pub timeout: Duration,
    pub connect_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("proxy {url}: {message}")]
    Proxy { url: String, message: String },
    #[error("building the HTTP client: {0}")]
    Build(String),
}

/// An HTTP client for one destination.
pub fn http_client(o: &ClientOptions) -> Result<reqwest::Client, ClientError> {
    let mut b = reqwest::Client::builder()
        .use_preconfigured_tls(client_config(&o.tls)?)
        // Only the configured host is ever called: a 3xx is an answer,
        // not an instruction.
        .redirect(reqwest::redirect::Policy::none())
        .timeout(o.timeout)
        .connect_timeout(o.connect_timeout)
        .user_agent(concat!("incidentd/", env!("CARGO_PKG_VERSION")));
    b = match &o.proxy {
        ProxyMode::None => b.no_proxy(),
        // reqwest reads the environment's proxy variables by default.
        ProxyMode::Env => b,
        ProxyMode::Url(p) => {
            let bad = |e: reqwest::Error| ClientError::Proxy {
                url: super::redact::redact_url(&p.url),
                message: super::error::chain(&e),
            };
            let mut proxy = reqwest::Proxy::all(&p.url).map_err(bad)?;
            if let Some((user, password)) = &p.auth {
                proxy = proxy.basic_auth(user, password);
            }
            if let Some(list) = &p.no_proxy {
                proxy = proxy.no_proxy(reqwest::NoProxy::from_string(list));
            }
            b.no_proxy().proxy(proxy)
        }
    };
    b.build()
        .map_err(|e| ClientError::Build(super::error::chain(&e)))
}
