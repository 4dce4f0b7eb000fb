//! Errors that name their cause. A failed HTTP call's top-level message
//! ("error sending request") says nothing an operator can act on; the
//! cause is several sources down ("invalid peer certificate: UnknownIssuer",
//! "Connection refused", "dns error"). [`chain`] joins them all, and
//! [`FailureReason`] sorts a failure into a bounded metric label.

use std::error::Error;

/// Every message of an error and its sources, joined by ": ", with a
/// source that repeats its parent's text left out, and any URL redacted.
pub fn chain(e: &(dyn Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = err.source();
    }
    super::redact::redact_text(&parts.join(": "))
}

/// Why an outbound call failed: the `reason` label of
/// `incidentd_outbound_failures_total` (a closed set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// The TLS handshake failed: an untrusted or expired certificate, a
    /// name mismatch, a client certificate refused.
    Tls,
    /// No TCP connection (refused, unreachable, reset), or the proxy
    /// refused the tunnel.
    Connect,
    /// No answer in time.
    Timeout,
    /// The host name did not resolve.
    Dns,
    /// The destination answered with a status that is not success.
    HttpStatus,
    /// Anything else (a body that could not be read, …).
    Other,
}

impl FailureReason {
    pub const ALL: [FailureReason; 6] = [
        FailureReason::Tls,
        FailureReason::Connect,
        FailureReason::Timeout,
        FailureReason::Dns,
        FailureReason::HttpStatus,
        FailureReason::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Tls => "tls",
            FailureReason::Connect => "connect",
            FailureReason::Timeout => "timeout",
            FailureReason::Dns => "dns",
            FailureReason::HttpStatus => "http_status",
            FailureReason::Other => "other",
        }
    }

    /// The reason a transport error (no HTTP answer) failed.
    pub fn of(e: &reqwest::Error) -> FailureReason {
        if e.is_timeout() {
            return FailureReason::Timeout;
        }
        let mut cur: Option<&(dyn Error + 'static)> = Some(e);
        let mut texts = String::new();
        while let Some(err) = cur {
            if err.is::<rustls::Error>() {
                return FailureReason::Tls;
            }
            if let Some(io) = err.downcast_ref::<std::io::Error>() {
                if io
                    .get_ref()
                    .is_some_and(|inner| inner.is::<rustls::Error>())
                {
                    return FailureReason::Tls;
                }
                if io.kind() == std::io::ErrorKind::TimedOut {
                    return FailureReason::Timeout;
                }
            }
            texts.push_str(&err.to_string().to_ascii_lowercase());
            texts.push('\n');
            cur = err.source();
        }
        if texts.contains("dns error") || texts.contains("failed to lookup address") {
            FailureReason::Dns
        } else if texts.contains("certificate") || texts.contains("tls handshake") {
            FailureReason::Tls
        } else if e.is_connect() || texts.contains("tunnel") || texts.contains("connection") {
            FailureReason::Connect
        } else {
            FailureReason::Other
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl Error for E {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|e| e as &(dyn Error + 'static))
        }
    }

    #[test]
    fn the_chain_names_every_cause_once_and_hides_secrets() {
        let e = E(
            "error sending request for url (https://h/x?token=abc)",
            Some(Box::new(E(
                "client error (Connect)",
                Some(Box::new(E(
                    "invalid peer certificate: UnknownIssuer",
                    Some(Box::new(E("UnknownIssuer", None))),
                ))),
            ))),
        );
        assert_eq!(
            chain(&e),
            "error sending request for url (https://h/x?token=***): client error (Connect): invalid peer certificate: UnknownIssuer"
        );
    }

    #[tokio::test]
    async fn transport_failures_are_sorted_by_cause() {
        // A port nothing listens on: connection refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(1);
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        let e = client
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await
            .expect_err("nothing listens there");
        assert_eq!(
            FailureReason::of(&e),
            FailureReason::Connect,
            "{}",
            chain(&e)
        );
        let e = client
            .get("http://no-such-host.invalid/")
            .send()
            .await
            .expect_err("an .invalid name never resolves");
        assert_eq!(FailureReason::of(&e), FailureReason::Dns, "{}", chain(&e));
        assert!(chain(&e).contains("dns error"), "{}", chain(&e));
    }
}
