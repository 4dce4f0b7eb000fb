//! Connection settings as configured, below everything that connects:
//! secrets (inline or from a file, read at start), HTTP authentication,
//! proxies and the TLS of an outbound client. `config` validates and
//! builds them; the clients take them as they are.

use super::ClientTls;
use std::path::PathBuf;

/// A secret given inline or by file; files are read by `app`, not here.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Inline(String),
    File(PathBuf),
}

/// A config printed for debugging never shows an inline secret.
impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Inline(_) => f.write_str("Inline(***)"),
            Secret::File(p) => f.debug_tuple("File").field(p).finish(),
        }
    }
}

/// HTTP authentication of an ITSM API (ServiceNow, Jira).
#[derive(Debug, Clone, PartialEq)]
pub enum ServiceNowAuth {
    Basic { user: String, password: Secret },
    Bearer(Secret),
}

/// Which proxy outbound requests use, as configured (the password is read
/// from its file at start).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ProxyConfig {
    /// Direct; environment variables ignored.
    #[default]
    None,
    /// `HTTP_PROXY` / `HTTPS_PROXY` / `NO_PROXY` from the environment.
    Env,
    Url {
        url: String,
        user: Option<String>,
        password: Option<Secret>,
        no_proxy: Option<String>,
    },
}

/// TLS and proxy of one outbound client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientNet {
    pub tls: ClientTls,
    pub proxy: ProxyConfig,
}

impl Default for ClientNet {
    fn default() -> Self {
        ClientNet {
            tls: ClientTls::system(),
            proxy: ProxyConfig::None,
        }
    }
}
