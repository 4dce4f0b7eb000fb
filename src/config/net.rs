//! Connection settings shared by the outbound destinations, the ServiceNow
//! CMDB sync and the listener: TLS files and proxies, validated without I/O
//! (the files are read at start and by `incidentd check`).

use super::{FieldError, Secret};
pub use crate::net::settings::{ClientNet, ProxyConfig};
use crate::net::{ClientTls, ServerTls};
use std::path::PathBuf;

/// The raw proxy fields, wherever they appear.
#[derive(Debug, Default, Clone, Copy)]
pub struct RawProxyFields<'a> {
    pub proxy: Option<&'a str>,
    pub proxy_user: Option<&'a str>,
    pub proxy_password: Option<&'a str>,
    pub proxy_password_file: Option<&'a PathBuf>,
    pub no_proxy: Option<&'a str>,
}

impl RawProxyFields<'_> {
    fn any(&self) -> bool {
        self.proxy.is_some()
            || self.proxy_user.is_some()
            || self.proxy_password.is_some()
            || self.proxy_password_file.is_some()
            || self.no_proxy.is_some()
    }
}

fn push(errs: &mut Vec<FieldError>, at: &str, field: &str, message: impl Into<String>) {
    errs.push(FieldError {
        field: if at.is_empty() {
            field.to_string()
        } else {
            format!("{at}.{field}")
        },
        message: message.into(),
    });
}

/// A proxy setting: `"none"`, `"env"` or an `http://` / `https://` URL,
/// with optional basic credentials and a `no_proxy` list. Without any
/// proxy field here, `inherited` applies (the `[outbound]` setting).
pub fn proxy(
    errs: &mut Vec<FieldError>,
    at: &str,
    raw: RawProxyFields<'_>,
    inherited: &ProxyConfig,
) -> ProxyConfig {
    if !raw.any() {
        return inherited.clone();
    }
    let password = match (raw.proxy_password, raw.proxy_password_file) {
        (Some(_), Some(_)) => {
            push(
                errs,
                at,
                "proxy_password",
                "set the value or proxy_password_file, not both",
            );
            None
        }
        (Some(p), None) => Some(Secret::Inline(p.to_string())),
        (None, Some(f)) => Some(Secret::File(f.clone())),
        (None, None) => None,
    };
    let extras = raw.proxy_user.is_some() || password.is_some() || raw.no_proxy.is_some();
    match raw.proxy.map(str::trim) {
        None | Some("none") if extras => {
            push(
                errs,
                at,
                "proxy",
                "proxy_user, proxy_password and no_proxy need a proxy URL",
            );
            ProxyConfig::None
        }
        None | Some("none") => ProxyConfig::None,
        Some("env") if extras => {
            push(
                errs,
                at,
                "proxy",
                "with proxy = \"env\" the credentials and exceptions come from the environment (HTTPS_PROXY, NO_PROXY)",
            );
            ProxyConfig::Env
        }
        Some("env") => ProxyConfig::Env,
        Some(u) => match reqwest::Url::parse(u) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => {
                if raw.proxy_user.is_some() != password.is_some() {
                    push(
                        errs,
                        at,
                        "proxy_user",
                        "set proxy_user and proxy_password (or proxy_password_file) together",
                    );
                }
                ProxyConfig::Url {
                    url: u.to_string(),
                    user: raw.proxy_user.map(str::to_string),
                    password,
                    no_proxy: raw.no_proxy.map(str::to_string),
                }
            }
            _ => {
                push(
                    errs,
                    at,
                    "proxy",
                    format!(
                        "{:?}: \"none\", \"env\", or an http:// or https:// proxy URL",
                        crate::net::redact_url(u)
                    ),
                );
                ProxyConfig::None
            }
        },
    }
}

/// A client's TLS settings: `ca_file`, `system_roots`, and the mutual-TLS
/// pair `client_cert_file` + `client_key_file`.
pub fn client_tls(
    errs: &mut Vec<FieldError>,
    at: &str,
    ca_file: Option<&PathBuf>,
    system_roots: Option<bool>,
    client_cert_file: Option<&PathBuf>,
    client_key_file: Option<&PathBuf>,
) -> ClientTls {
    let system_roots = system_roots.unwrap_or(true);
    if !system_roots && ca_file.is_none() {
        push(
            errs,
            at,
            "system_roots",
            "false needs a ca_file: nothing would be trusted",
        );
    }
    let client_cert = match (client_cert_file, client_key_file) {
        (Some(c), Some(k)) => Some((c.clone(), k.clone())),
        (None, None) => None,
        _ => {
            push(
                errs,
                at,
                "client_cert_file",
                "set client_cert_file and client_key_file together",
            );
            None
        }
    };
    ClientTls {
        ca_file: ca_file.cloned(),
        system_roots,
        client_cert,
    }
}

/// The listener's TLS: `[http] tls_cert_file`, `tls_key_file`,
/// `tls_client_ca_file`.
pub fn server_tls(
    errs: &mut Vec<FieldError>,
    cert: Option<&PathBuf>,
    key: Option<&PathBuf>,
    client_ca: Option<&PathBuf>,
) -> Option<ServerTls> {
    match (cert, key) {
        (Some(c), Some(k)) => Some(ServerTls {
            cert_file: c.clone(),
            key_file: k.clone(),
            client_ca_file: client_ca.cloned(),
        }),
        (None, None) => {
            if client_ca.is_some() {
                push(
                    errs,
                    "http",
                    "tls_client_ca_file",
                    "client certificates need TLS: set tls_cert_file and tls_key_file",
                );
            }
            None
        }
        _ => {
            push(
                errs,
                "http",
                "tls_cert_file",
                "set tls_cert_file and tls_key_file together",
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxies_parse_inherit_and_report_their_fields() {
        let mut errs = Vec::new();
        let outer = proxy(
            &mut errs,
            "outbound",
            RawProxyFields {
                proxy: Some("http://proxy:3128"),
                no_proxy: Some("localhost,.internal"),
                ..RawProxyFields::default()
            },
            &ProxyConfig::None,
        );
        assert!(errs.is_empty(), "{errs:?}");
        assert!(matches!(&outer, ProxyConfig::Url { url, .. } if url == "http://proxy:3128"));
        // A destination without proxy fields inherits; "none" opts out.
        assert_eq!(
            proxy(&mut errs, "d", RawProxyFields::default(), &outer),
            outer
        );
        assert_eq!(
            proxy(
                &mut errs,
                "d",
                RawProxyFields {
                    proxy: Some("none"),
                    ..RawProxyFields::default()
                },
                &outer
            ),
            ProxyConfig::None
        );
        assert!(errs.is_empty());
        proxy(
            &mut errs,
            "d",
            RawProxyFields {
                proxy: Some("socks5://p:1080"),
                ..RawProxyFields::default()
            },
            &outer,
        );
        proxy(
            &mut errs,
            "e",
            RawProxyFields {
                proxy: Some("http://p:3128"),
                proxy_user: Some("u"),
                ..RawProxyFields::default()
            },
            &outer,
        );
        proxy(
            &mut errs,
            "f",
            RawProxyFields {
                proxy: Some("env"),
                no_proxy: Some("x"),
                ..RawProxyFields::default()
            },
            &outer,
        );
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["d.proxy", "e.proxy_user", "f.proxy"]);
    }

    #[test]
    fn tls_pairs_must_be_complete() {
        let mut errs = Vec::new();
        let p = PathBuf::from("/x");
        client_tls(&mut errs, "d", None, Some(false), Some(&p), None);
        server_tls(&mut errs, Some(&p), None, None);
        server_tls(&mut errs, None, None, Some(&p));
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "d.system_roots",
                "d.client_cert_file",
                "http.tls_cert_file",
                "http.tls_client_ca_file"
            ]
        );
    }
}
