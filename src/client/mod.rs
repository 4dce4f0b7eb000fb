//! `incidentd incidents|services|cis|alerts`: a client of a running
//! daemon's HTTP API, for the on-call engineer's terminal. Each command is
//! one or two requests and a pure formatter (`format.rs`); `-o json`
//! prints the API's answer unchanged, for scripts.
//!
//! Exit codes (the contract scripts rely on): 0 success; 1 the server
//! answered an error (its message printed); 2 a usage error (clap, or an
//! unreadable token file or CA); 3 the server could not be reached (the
//! message names the URL); 4 not found.

pub mod cli;
pub mod format;

use crate::net::{ClientOptions, ClientTls, ProxyMode};
use cli::{
    ActArgs, AlertsArgs, CiFilter, CisArgs, CisCmd, ClientCommand, Conn, HoldArgs, IncidentFilter,
    IncidentsArgs, IncidentsCmd, Output,
};
use serde_json::{Value, json};
use std::time::Duration;

/// Why a command failed, and so its exit code.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Settings the client cannot use: a token file or CA that cannot be
    /// read, a server URL that is not http(s).
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach incidentd at {url}: {cause}")]
    Unreachable { url: String, cause: String },
    #[error("{message}")]
    NotFound { message: String },
    #[error("the server answered {status}: {message}")]
    Server { status: u16, message: String },
    #[error("unexpected answer from {url}: {cause}")]
    Answer { url: String, cause: String },
}

impl ClientError {
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Server { .. } | ClientError::Answer { .. } => 1,
            ClientError::Usage(_) => 2,
            ClientError::Unreachable { .. } => 3,
            ClientError::NotFound { .. } => 4,
        }
    }
}

/// A connection to one daemon.
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// The server's base URL without a trailing slash; only http and https.
fn base_url(server: &str) -> Result<String, ClientError> {
    let base = server.trim().trim_end_matches('/').to_string();
    let url = reqwest::Url::parse(&base)
        .map_err(|e| ClientError::Usage(format!("--server {server:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ClientError::Usage(format!(
            "--server {server:?}: only http:// and https:// URLs"
        )));
    }
    Ok(base)
}

/// Whether `base` names this machine: such a server is never reached
/// through a proxy (a proxy from the environment could not reach it).
fn is_loopback(base: &str) -> bool {
    reqwest::Url::parse(base).is_ok_and(|u| {
        let host = u.host_str().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    })
}

/// The bearer token: `--token-file` (trimmed), else `$INCIDENTD_TOKEN`.
fn token(conn: &Conn, env: Option<String>) -> Result<Option<String>, ClientError> {
    if let Some(f) = &conn.token_file {
        let t = std::fs::read_to_string(f)
            .map_err(|e| ClientError::Usage(format!("--token-file {}: {e}", f.display())))?;
        let t = t.trim().to_string();
        if t.is_empty() {
            return Err(ClientError::Usage(format!(
                "--token-file {}: the file is empty",
                f.display()
            )));
        }
        return Ok(Some(t));
    }
    Ok(env.map(|t| t.trim().to_string()).filter(|t| !t.is_empty()))
}

impl Client {
    pub fn new(conn: &Conn) -> Result<Client, ClientError> {
        let base = base_url(&conn.server)?;
        let tls = ClientTls {
            ca_file: conn.ca_file.clone(),
            system_roots: true,
            client_cert: conn.client_cert.clone().zip(conn.client_key.clone()),
        };
        let timeout = Duration::from_secs(conn.timeout.max(1));
        let http = crate::net::http_client(&ClientOptions {
            tls,
            // As curl does, a proxy from the environment, except for this
            // machine (as Go's clients, amtool's among them, do).
            proxy: if is_loopback(&base) {
                ProxyMode::None
            } else {
                ProxyMode::Env
            },
            timeout,
            connect_timeout: timeout,
        })
        .map_err(|e| ClientError::Usage(crate::net::chain(&e)))?;
        Ok(Client {
            token: token(conn, std::env::var("INCIDENTD_TOKEN").ok())?,
            base,
            http,
        })
    }

    /// One request; the JSON answer of a 2xx, else the error it names.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url).query(query);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| {
            if e.is_connect() || e.is_timeout() {
                // Its causes only: the top message repeats the URL.
                let cause = std::error::Error::source(&e)
                    .map_or_else(|| crate::net::chain(&e), crate::net::chain);
                ClientError::Unreachable {
                    url: self.base.clone(),
                    cause,
                }
            } else {
                ClientError::Answer {
                    url: url.clone(),
                    cause: crate::net::chain(&e),
                }
            }
        })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| ClientError::Answer {
            url: url.clone(),
            cause: crate::net::chain(&e),
        })?;
        let v: Result<Value, _> = serde_json::from_slice(&bytes);
        if status.is_success() {
            return v.map_err(|e| ClientError::Answer {
                url,
                cause: format!("not JSON ({e})"),
            });
        }
        Err(answered_error(status.as_u16(), v.ok(), &bytes))
    }

    async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ClientError> {
        self.call(reqwest::Method::GET, path, query, None).await
    }
}

/// The error a non-2xx answer means, with the server's message (its JSON
/// `error`, else the start of its body).
fn answered_error(status: u16, json: Option<Value>, body: &[u8]) -> ClientError {
    let message = json
        .as_ref()
        .and_then(|v| v["error"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            format!("HTTP {status}: {}", format::cut(text.trim(), 200))
        });
    match status {
        404 => ClientError::NotFound { message },
        401 => ClientError::Server {
            status,
            message: format!("{message} (set INCIDENTD_TOKEN or --token-file)"),
        },
        _ => ClientError::Server { status, message },
    }
}

/// The width tables are fitted to: `$COLUMNS` when the shell exports it,
/// else 120 (wide enough for most terminals; a pipe gets the same).
fn width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse::<usize>().ok())
        .filter(|w| *w >= 40)
        .unwrap_or(120)
}

/// What a command prints: the JSON as it came, or the table made from it.
fn render(output: Output, v: &Value, table: impl FnOnce(&Value) -> String) -> String {
    match output {
        Output::Json => {
            let mut s = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
            s.push('\n');
            s
        }
        Output::Table => table(v),
    }
}

fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

/// Who acts when `--by` is not given: the login name, if known.
fn default_actor(by: Option<String>) -> Option<String> {
    by.or_else(|| std::env::var("USER").ok())
        .filter(|b| !b.trim().is_empty())
}

/// Runs one client command; what to print on stdout.
pub async fn run(cmd: ClientCommand) -> Result<String, ClientError> {
    match cmd {
        ClientCommand::Incidents(a) => incidents(a).await,
        ClientCommand::Services(a) => {
            let c = Client::new(&a.conn)?;
            let v = c.get("/api/v1/services", &[]).await?;
            Ok(render(a.conn.output, &v, |v| {
                let mut out = format::services_table(v, width());
                if let Some(k) = format::kpis_table(v, width()) {
                    out.push_str("\nITSM KPIs (incidents, means and changes over 30 days unless named; SLA met: response/resolution; noise cut: 1 - incidents / alerts not suppressed)\n");
                    out.push_str(&k);
                }
                out
            }))
        }
        ClientCommand::Cis(a) => cis(a).await,
        ClientCommand::Alerts(a) => alerts(a).await,
    }
}

async fn incidents(a: IncidentsArgs) -> Result<String, ClientError> {
    let IncidentsArgs { cmd, filter, conn } = a;
    if cmd
        .as_ref()
        .is_some_and(|c| !matches!(c, IncidentsCmd::List(_)))
        && filter != IncidentFilter::default()
    {
        return Err(ClientError::Usage(
            "--state, --priority, --service and --limit go with listing incidents, not with one"
                .into(),
        ));
    }
    let c = Client::new(&conn)?;
    let out = conn.output;
    match cmd {
        None => list_incidents(&c, out, filter).await,
        Some(IncidentsCmd::List(f)) => list_incidents(&c, out, f.or(filter)).await,
        Some(IncidentsCmd::Show { id }) => {
            let v = c.get(&format!("/api/v1/incidents/{id}"), &[]).await?;
            Ok(render(out, &v, |v| {
                format::incident_detail(v, now(), width())
            }))
        }
        Some(IncidentsCmd::Ack(ActArgs { id, by })) => act(&c, out, id, "ack", by, None).await,
        Some(IncidentsCmd::Resolve(ActArgs { id, by })) => {
            act(&c, out, id, "resolve", by, None).await
        }
        Some(IncidentsCmd::Resume(ActArgs { id, by })) => {
            act(&c, out, id, "resume", by, None).await
        }
        Some(IncidentsCmd::Hold(HoldArgs { id, reason, by })) => {
            act(&c, out, id, "hold", by, Some(reason)).await
        }
    }
}

/// A filter's query parameters (the empty ones left out).
fn incident_query(f: &IncidentFilter) -> Vec<(&'static str, String)> {
    let mut q = vec![
        ("state", f.state.clone().unwrap_or_else(|| "active".into())),
        ("limit", f.limit.unwrap_or(100).to_string()),
    ];
    if let Some(p) = &f.priority {
        q.push(("priority", p.clone()));
    }
    if let Some(s) = &f.service {
        q.push(("service", s.clone()));
    }
    q
}

async fn list_incidents(c: &Client, out: Output, f: IncidentFilter) -> Result<String, ClientError> {
    let v = c.get("/api/v1/incidents", &incident_query(&f)).await?;
    Ok(render(out, &v, |v| {
        format::incidents_table(v, now(), width())
    }))
}

async fn act(
    c: &Client,
    out: Output,
    id: i64,
    op: &str,
    by: Option<String>,
    reason: Option<String>,
) -> Result<String, ClientError> {
    let mut body = json!({});
    if let Some(b) = default_actor(by) {
        body["by"] = json!(b);
    }
    if let Some(r) = reason {
        body["reason"] = json!(r);
    }
    let v = c
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/incidents/{id}/{op}"),
            &[],
            Some(body),
        )
        .await?;
    Ok(render(out, &v, |v| format::action_done(op, v)))
}

fn ci_query(f: &CiFilter) -> Vec<(&'static str, String)> {
    let mut q = vec![("limit", f.limit.unwrap_or(500).to_string())];
    if let Some(k) = &f.class {
        q.push(("class", k.clone()));
    }
    if let Some(s) = &f.service {
        q.push(("service", s.clone()));
    }
    q
}

async fn cis(a: CisArgs) -> Result<String, ClientError> {
    if matches!(a.cmd, Some(CisCmd::Show { .. })) && a.filter != CiFilter::default() {
        return Err(ClientError::Usage(
            "--class, --service and --limit go with listing CIs, not with one".into(),
        ));
    }
    let c = Client::new(&a.conn)?;
    let out = a.conn.output;
    let filter = match a.cmd {
        Some(CisCmd::Show { id }) => {
            let path = format!("/api/v1/cis/{}", encode_segment(&id));
            let v = c.get(&path, &[]).await?;
            return Ok(render(out, &v, format::ci_detail));
        }
        Some(CisCmd::List(f)) => f.or(a.filter),
        None => a.filter,
    };
    let v = c.get("/api/v1/cis", &ci_query(&filter)).await?;
    Ok(render(out, &v, |v| format::cis_table(v, width())))
}

/// A CI id as one path segment (ids may hold `/`, spaces, …).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn alerts(a: AlertsArgs) -> Result<String, ClientError> {
    let c = Client::new(&a.conn)?;
    let mut q = vec![("limit", a.limit.to_string())];
    if a.suppressed {
        q.push(("suppressed", "true".into()));
    }
    for (k, v) in [
        ("alertname", &a.alertname),
        ("service", &a.service),
        ("ci", &a.ci),
    ] {
        if let Some(v) = v {
            q.push((k, v.clone()));
        }
    }
    let v = c.get("/api/v1/alerts", &q).await?;
    Ok(render(a.conn.output, &v, |v| {
        format::alerts_table(v, a.suppressed, now(), width())
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(server: &str) -> Conn {
        Conn {
            server: server.into(),
            token_file: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
            timeout: 10,
            output: Output::Table,
        }
    }

    #[test]
    fn servers_are_http_urls_without_trailing_slash() {
        assert_eq!(
            base_url("http://127.0.0.1:9797/").ok().as_deref(),
            Some("http://127.0.0.1:9797")
        );
        assert!(matches!(base_url("ftp://x"), Err(ClientError::Usage(_))));
        assert!(matches!(base_url("nowhere"), Err(ClientError::Usage(_))));
        assert!(is_loopback("http://127.0.0.1:9797"));
        assert!(is_loopback("https://localhost:1"));
        assert!(is_loopback("http://[::1]:9797"));
        assert!(!is_loopback("https://incidentd.example:9797"));
    }

    #[test]
    fn the_token_file_wins_over_the_environment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("token");
        std::fs::write(&f, "s3cret\n").expect("write");
        let mut c = conn("http://127.0.0.1:1");
        assert_eq!(
            token(&c, Some("env".into())).ok().flatten().as_deref(),
            Some("env")
        );
        assert_eq!(token(&c, Some("  ".into())).ok().flatten(), None);
        c.token_file = Some(f);
        assert_eq!(
            token(&c, Some("env".into())).ok().flatten().as_deref(),
            Some("s3cret")
        );
        c.token_file = Some(dir.path().join("missing"));
        assert_eq!(token(&c, None).map_err(|e| e.exit_code()), Err(2));
    }

    #[test]
    fn answers_become_exit_codes_with_the_servers_message() {
        let e = answered_error(
            404,
            Some(json!({"error": "incident 9 not found", "detail": {"id": 9}})),
            b"",
        );
        assert_eq!(
            (e.exit_code(), e.to_string()),
            (4, "incident 9 not found".into())
        );
        let e = answered_error(
            409,
            Some(json!({"error": "incident 3 is already acknowledged"})),
            b"",
        );
        assert_eq!(e.exit_code(), 1);
        assert!(e.to_string().contains("409") && e.to_string().contains("already acknowledged"));
        let e = answered_error(
            401,
            Some(json!({"error": "missing or wrong bearer token"})),
            b"",
        );
        assert!(e.to_string().contains("INCIDENTD_TOKEN"), "{e}");
        let e = answered_error(502, None, b"<html>bad gateway</html>");
        assert!(e.to_string().contains("HTTP 502: <html>bad gateway"), "{e}");
    }

    #[test]
    fn filters_merge_from_before_and_after_list() {
        let before = IncidentFilter {
            state: Some("all".into()),
            limit: Some(5),
            ..IncidentFilter::default()
        };
        let after = IncidentFilter {
            priority: Some("P1".into()),
            limit: Some(7),
            ..IncidentFilter::default()
        };
        let q = incident_query(&after.or(before));
        assert_eq!(
            q,
            [
                ("state", "all".to_string()),
                ("limit", "7".to_string()),
                ("priority", "P1".to_string())
            ]
        );
        let q = incident_query(&IncidentFilter::default());
        assert_eq!(
            q,
            [
                ("state", "active".to_string()),
                ("limit", "100".to_string())
            ]
        );
    }

    #[test]
    fn ids_are_one_path_segment() {
        assert_eq!(encode_segment("pg-main_1.a"), "pg-main_1.a");
        assert_eq!(encode_segment("a/b c"), "a%2Fb%20c");
    }
}
