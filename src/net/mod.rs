//! Network plumbing every connection shares: TLS settings (client trust,
//! client certificates, the listener's certificate), outbound proxies, the
//! HTTP client built from them, error chains that name their cause, and the
//! redaction that keeps secrets in URLs out of logs, errors and the store.
//!
//! A leaf module: it depends on no other module of this crate, so config,
//! outbound, the CMDB sync and the listener can all use it.

pub mod client;
pub mod error;
pub mod listener;
pub mod redact;
pub mod server;
pub mod settings;
pub mod tls;

pub use client::{ClientOptions, Proxy, ProxyMode, http_client};
pub use error::{FailureReason, chain};
pub use redact::{redact_text, redact_url};
pub use tls::{ClientTls, ServerTls, TlsError};
