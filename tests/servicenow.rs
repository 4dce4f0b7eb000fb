//! CMDB sync from a ServiceNow-style Table API, against a local server that
//! answers the way the Table API does: `GET /api/now/table/{table}` with
//! `sysparm_limit` / `sysparm_offset` paging (`X-Total-Count` and `Link`
//! headers), `sysparm_fields` projection with dot-walked reference fields,
//! `sysparm_query` filtering, references as bare sys_ids when
//! `sysparm_exclude_reference_link=true` (else `{link, value}` objects),
//! basic or bearer authentication, and errors as
//! `{"error": {"message", "detail"}, "status": "failure"}`.
//!
//! The server records every request, so the tests assert what the client
//! asked for (offsets, fields, query, credentials), not only what it built.
//! Everything listens on 127.0.0.1.

mod support;

use axum::Router;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use incidentd::cmdb::Cmdb;
use incidentd::cmdb::servicenow::{self, Auth, Endpoint};
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{Children, poll_until};

const USER: &str = "svc.incidentd";
const PASSWORD: &str = "s3cr3t: with colon";
const TOKEN: &str = "tok-7f3a9c";
/// What the client is configured with in the paging tests.
const PAGE: u64 = 1000;
/// CIs in the big instance (2 services, 4 named CIs, the rest filler servers).
const BIG: usize = 2500;

// ---------------------------------------------------------------------------
// The fake instance.

type Row = Map<String, Value>;

#[derive(Clone)]
enum Creds {
    Basic(&'static str, &'static str),
    Bearer(&'static str),
}

impl Creds {
    fn header(&self) -> String {
        match self {
            Creds::Basic(u, p) => format!("Basic {}", base64(format!("{u}:{p}").as_bytes())),
            Creds::Bearer(t) => format!("Bearer {t}"),
        }
    }
}

/// How the instance misbehaves, besides answering.
#[derive(Default)]
struct Quirks {
    /// Answer the first request with 429 and `Retry-After: 1`.
    throttle_first: bool,
    /// Tables the integration user may not read (403, every time).
    forbidden: Vec<&'static str>,
    /// Answer everything with 503 and `Retry-After: 0`.
    unavailable: bool,
    /// sys_ids that read ACLs hide: the Table API drops them from a page
    /// after the query ran, so such a page holds fewer than
    /// `sysparm_limit` rows although more pages follow.
    acl_hidden: HashSet<String>,
}

#[derive(Clone, Debug)]
struct Seen {
    table: String,
    params: Vec<(String, String)>,
    authorization: Option<String>,
    status: u16,
    at: Instant,
}

impl Seen {
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn offset(&self) -> u64 {
        self.param("sysparm_offset")
            .map_or(0, |o| o.parse().expect("numeric sysparm_offset"))
    }
}

struct Instance {
    base: String,
    tables: HashMap<String, Vec<Row>>,
    creds: Creds,
    throttle: AtomicBool,
    quirks: Quirks,
    seen: Mutex<Vec<Seen>>,
}

impl Instance {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn seen_on(&self, table: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.table == table)
            .collect()
    }
}

/// The table a reference field points to.
fn reference(table: &str, field: &str) -> Option<&'static str> {
    match (table, field) {
        ("cmdb_ci", "support_group") => Some("sys_user_group"),
        ("cmdb_ci", "owned_by") => Some("sys_user"),
        ("cmdb_rel_ci", "parent" | "child") => Some("cmdb_ci"),
        ("cmdb_rel_ci", "type") => Some("cmdb_rel_type"),
        _ => None,
    }
}

/// A field's raw value, following dot-walked references (`type.name`).
fn walk(inst: &Instance, table: &str, row: &Row, path: &str) -> Option<String> {
    match path.split_once('.') {
        None => row.get(path).and_then(Value::as_str).map(str::to_string),
        Some((field, rest)) => {
            let target = reference(table, field)?;
            let id = row.get(field)?.as_str()?;
            let referenced = inst.tables[target]
                .iter()
                .find(|r| r["sys_id"].as_str() == Some(id))?;
            walk(inst, target, referenced, rest)
        }
    }
}

/// The subset of the encoded query language the client may use.
fn matches(inst: &Instance, table: &str, row: &Row, query: &str) -> Result<bool, String> {
    for cond in query.split('^').filter(|c| !c.is_empty()) {
        if cond.starts_with("ORDERBY") {
            continue;
        }
        let ok = if let Some((field, list)) = cond.split_once("IN") {
            let v = walk(inst, table, row, field).unwrap_or_default();
            list.split(',').any(|x| x == v)
        } else if let Some((field, value)) = cond.split_once("!=") {
            walk(inst, table, row, field).unwrap_or_default() != value
        } else if let Some((field, value)) = cond.split_once('=') {
            walk(inst, table, row, field).unwrap_or_default() == value
        } else {
            return Err(format!("unsupported condition {cond:?}"));
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

fn project(inst: &Instance, table: &str, row: &Row, fields: Option<&str>, links: bool) -> Row {
    let names: Vec<String> = match fields {
        Some(f) => f.split(',').map(str::to_string).collect(),
        None => row.keys().cloned().collect(),
    };
    let mut out = Row::new();
    for name in names {
        if name.contains('.') {
            let v = walk(inst, table, row, &name).unwrap_or_default();
            out.insert(name, Value::String(v));
            continue;
        }
        let Some(v) = row.get(&name) else {
            continue; // unknown fields are left out
        };
        let v = match (reference(table, &name), v.as_str()) {
            (Some(target), Some(id)) if links && !id.is_empty() => json!({
                "link": format!("{}/api/now/table/{target}/{id}", inst.base),
                "value": id,
            }),
            _ => v.clone(),
        };
        out.insert(name, v);
    }
    out
}

fn failure(status: StatusCode, message: &str, detail: &str) -> Response {
    let body = json!({"error": {"message": message, "detail": detail}, "status": "failure"});
    (status, axum::Json(body)).into_response()
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b',' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn page_link(inst: &Instance, table: &str, params: &[(String, String)], offset: u64) -> String {
    let query: Vec<String> = params
        .iter()
        .filter(|(k, _)| k != "sysparm_offset")
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .chain(std::iter::once(format!("sysparm_offset={offset}")))
        .collect();
    format!("{}/api/now/table/{table}?{}", inst.base, query.join("&"))
}

async fn table(
    State(inst): State<Arc<Instance>>,
    UrlPath(table): UrlPath<String>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let resp = answer(&inst, &table, &params, authorization.as_deref());
    inst.seen.lock().unwrap().push(Seen {
        table,
        params,
        authorization,
        status: resp.status().as_u16(),
        at: Instant::now(),
    });
    resp
}

fn answer(
    inst: &Instance,
    table: &str,
    params: &[(String, String)],
    authorization: Option<&str>,
) -> Response {
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if authorization != Some(inst.creds.header().as_str()) {
        let mut r = failure(
            StatusCode::UNAUTHORIZED,
            "User Not Authenticated",
            "Required to provide Auth information",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"Service-now\""),
        );
        return r;
    }
    if inst.quirks.forbidden.contains(&table) {
        return failure(
            StatusCode::FORBIDDEN,
            "User Not Authorized",
            &format!("ACL Exception Read not granted on table {table}"),
        );
    }
    if inst.throttle.swap(false, Ordering::SeqCst) {
        let mut r = failure(
            StatusCode::TOO_MANY_REQUESTS,
            "Rate limit exceeded",
            "Too many requests for the integration user; retry later",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    }
    if inst.quirks.unavailable {
        let mut r = failure(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service Unavailable",
            "The instance is hibernating",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("0"));
        return r;
    }
    let Some(rows) = inst.tables.get(table) else {
        return failure(
            StatusCode::BAD_REQUEST,
            &format!("Invalid table {table}"),
            "",
        );
    };
    let mut hits = Vec::new();
    for row in rows {
        match matches(inst, table, row, param("sysparm_query").unwrap_or("")) {
            Ok(true) => hits.push(row),
            Ok(false) => {}
            Err(m) => return failure(StatusCode::BAD_REQUEST, "Invalid query", &m),
        }
    }
    let number = |name: &str, default: u64| param(name).map_or(Some(default), |v| v.parse().ok());
    let (Some(offset), Some(limit)) =
        (number("sysparm_offset", 0), number("sysparm_limit", 10_000))
    else {
        return failure(
            StatusCode::BAD_REQUEST,
            "Invalid sysparm_offset or sysparm_limit",
            "",
        );
    };
    let limit = limit.max(1);
    let total = hits.len() as u64;
    let links = param("sysparm_exclude_reference_link") != Some("true");
    let result: Vec<Value> = hits
        .iter()
        .skip(offset as usize)
        .take(limit as usize)
        // Read ACLs run after the query: hidden rows leave holes in the page.
        .filter(|r| {
            !inst
                .quirks
                .acl_hidden
                .contains(r["sys_id"].as_str().unwrap_or(""))
        })
        .map(|r| Value::Object(project(inst, table, r, param("sysparm_fields"), links)))
        .collect();
    let mut resp = axum::Json(json!({ "result": result })).into_response();
    let h = resp.headers_mut();
    h.insert("X-Total-Count", HeaderValue::from(total));
    if total > limit {
        let last = (total - 1) / limit * limit;
        let mut parts = vec![format!(
            "<{}>;rel=\"first\"",
            page_link(inst, table, params, 0)
        )];
        if offset > 0 {
            let prev = offset.saturating_sub(limit);
            parts.push(format!(
                "<{}>;rel=\"prev\"",
                page_link(inst, table, params, prev)
            ));
        }
        if offset + limit < total {
            parts.push(format!(
                "<{}>;rel=\"next\"",
                page_link(inst, table, params, offset + limit)
            ));
        }
        parts.push(format!(
            "<{}>;rel=\"last\"",
            page_link(inst, table, params, last)
        ));
        h.insert(
            header::LINK,
            HeaderValue::from_str(&parts.join(",")).expect("ASCII Link header"),
        );
    }
    resp
}

async fn serve(tables: HashMap<String, Vec<Row>>, creds: Creds, quirks: Quirks) -> Arc<Instance> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let inst = Arc::new(Instance {
        base: format!("http://{addr}"),
        tables,
        creds,
        throttle: AtomicBool::new(quirks.throttle_first),
        quirks,
        seen: Mutex::new(Vec::new()),
    });
    let app = Router::new()
        .route("/api/now/table/{table}", get(table))
        .with_state(inst.clone());
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("fake instance");
    });
    inst
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (b(0) << 16) | (b(1) << 8) | b(2);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// The instance's content.

fn row(pairs: &[(&str, &str)]) -> Row {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), Value::String((*v).to_string())))
        .collect()
}

fn ci(sys_id: &str, name: &str, class: &str, group: &str) -> Row {
    row(&[
        ("sys_id", sys_id),
        ("name", name),
        ("sys_class_name", class),
        ("support_group", group),
        ("owned_by", ""),
        ("host_name", ""),
        ("fqdn", ""),
        ("ip_address", ""),
        ("busines_criticality", ""),
        ("operational_status", "1"),
        ("asset_tag", "P1000479"),
    ])
}

fn rel(n: usize, parent: &str, child: &str, rel_type: &str) -> Row {
    row(&[
        ("sys_id", &format!("rel-{n:05}")),
        ("parent", parent),
        ("child", child),
        ("type", rel_type),
        ("connection_strength", "always"),
    ])
}

/// Two business services, an application chain down to a host, and
/// `BIG - 6` filler servers paired by "Depends on" relations:
///
/// ```text
/// Payments  (tier 1) → pay-api    ┐
///                                 ├→ pay-db → (Runs on) db-host-07
/// Reporting (tier 3) → report-job ┘
/// ```
fn instance_tables(total_cis: usize) -> HashMap<String, Vec<Row>> {
    let groups = vec![
        row(&[("sys_id", "grp-db"), ("name", "team-db")]),
        row(&[("sys_id", "grp-pay"), ("name", "team-payments")]),
        row(&[("sys_id", "grp-rep"), ("name", "team-reporting")]),
        row(&[("sys_id", "grp-plat"), ("name", "team-platform")]),
    ];
    let users = vec![row(&[("sys_id", "usr-dana"), ("name", "Dana Whitfield")])];
    let types = vec![
        row(&[("sys_id", "rt-dep"), ("name", "Depends on::Used by")]),
        row(&[("sys_id", "rt-runs"), ("name", "Runs on::Runs")]),
        row(&[("sys_id", "rt-member"), ("name", "Members::Member of")]),
        row(&[("sys_id", "rt-conn"), ("name", "Connects to::Connected by")]),
    ];
    let mut pay = ci("svc-pay", "Payments", "cmdb_ci_service_business", "grp-pay");
    pay.insert("busines_criticality".into(), "1 - most critical".into());
    let mut rep = ci(
        "svc-rep",
        "Reporting",
        "cmdb_ci_service_technical",
        "grp-rep",
    );
    rep.insert("busines_criticality".into(), "3 - less critical".into());
    let mut host = ci("ci-host", "db-host-07", "cmdb_ci_linux_server", "");
    host.insert("owned_by".into(), "usr-dana".into());
    host.insert("host_name".into(), "db-host-07".into());
    host.insert("fqdn".into(), "db-host-07.prod.example.net".into());
    host.insert("ip_address".into(), "10.20.0.7".into());
    let mut cis = vec![
        pay,
        rep,
        ci("ci-api", "pay-api", "cmdb_ci_appl", "grp-pay"),
        ci("ci-job", "report-job", "cmdb_ci_appl", "grp-rep"),
        ci(
            "ci-db",
            "pay-db",
            "cmdb_ci_db_postgresql_instance",
            "grp-db",
        ),
        host,
    ];
    let fillers = total_cis - cis.len();
    for i in 0..fillers {
        let name = format!("srv-{i:04}");
        let mut r = ci(
            &format!("ci-srv-{i:04}"),
            &name,
            "cmdb_ci_linux_server",
            "grp-plat",
        );
        r.insert("host_name".into(), name.clone().into());
        r.insert(
            "ip_address".into(),
            format!("10.100.{}.{}", i / 250, i % 250 + 1).into(),
        );
        cis.push(r);
    }
    let mut rels = vec![
        rel(0, "svc-pay", "ci-api", "rt-dep"),
        rel(1, "svc-rep", "ci-job", "rt-dep"),
        rel(2, "ci-api", "ci-db", "rt-dep"),
        rel(3, "ci-job", "ci-db", "rt-dep"),
        rel(4, "ci-db", "ci-host", "rt-runs"),
    ];
    if fillers >= 2 {
        // Not dependencies: the query must keep them out.
        rels.push(rel(5, "ci-api", "ci-srv-0000", "rt-member"));
        rels.push(rel(6, "ci-api", "ci-srv-0001", "rt-conn"));
    }
    for k in 0..fillers / 2 {
        let (a, b) = (
            format!("ci-srv-{:04}", 2 * k),
            format!("ci-srv-{:04}", 2 * k + 1),
        );
        let n = rels.len();
        rels.push(rel(n, &a, &b, "rt-dep"));
        rels.push(rel(n + 1, &a, &b, "rt-member"));
    }
    HashMap::from([
        ("cmdb_ci".to_string(), cis),
        ("cmdb_rel_ci".to_string(), rels),
        ("sys_user_group".to_string(), groups),
        ("sys_user".to_string(), users),
        ("cmdb_rel_type".to_string(), types),
    ])
}

fn endpoint(inst: &Instance, auth: Auth, page_size: u32) -> Endpoint {
    Endpoint {
        base_url: inst.base.clone(),
        auth,
        page_size,
        ci_query: None,
        timeout: Duration::from_secs(10),
    }
}

fn basic() -> Auth {
    Auth::Basic {
        user: USER.into(),
        password: PASSWORD.into(),
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        // Only 127.0.0.1 is ever asked; never through a proxy from the environment.
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client")
}

fn offsets(seen: &[Seen]) -> Vec<(u16, u64)> {
    seen.iter().map(|s| (s.status, s.offset())).collect()
}

// ---------------------------------------------------------------------------
// The fake answers like the Table API (so the tests below mean something).

#[tokio::test]
async fn fake_instance_answers_in_the_table_api_shape() {
    let inst = serve(
        instance_tables(20),
        Creds::Basic(USER, PASSWORD),
        Quirks::default(),
    )
    .await;
    let client = http();
    let url = format!("{}/api/now/table/cmdb_ci", inst.base);

    let resp = client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "failure");
    assert_eq!(body["error"]["message"], "User Not Authenticated");

    let resp = client
        .get(&url)
        .basic_auth(USER, Some(PASSWORD))
        .query(&[
            ("sysparm_fields", "name,support_group,support_group.name"),
            ("sysparm_limit", "5"),
            ("sysparm_offset", "10"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-total-count"], "20");
    let link = resp.headers()["link"].to_str().unwrap().to_string();
    assert!(link.contains("sysparm_offset=15>;rel=\"next\""), "{link}");
    assert!(link.contains("sysparm_offset=15>;rel=\"last\""), "{link}");
    let body: Value = resp.json().await.unwrap();
    let first = &body["result"][0];
    assert_eq!(first.as_object().unwrap().len(), 3, "only the asked fields");
    assert_eq!(first["support_group.name"], "team-platform");
    assert_eq!(first["support_group"]["value"], "grp-plat");
    assert!(
        first["support_group"]["link"]
            .as_str()
            .unwrap()
            .ends_with("/sys_user_group/grp-plat")
    );

    let resp = client
        .get(format!("{}/api/now/table/cmdb_rel_ci", inst.base))
        .basic_auth(USER, Some(PASSWORD))
        .query(&[
            ("sysparm_fields", "parent,child,type.name"),
            ("sysparm_query", "type.nameINRuns on::Runs"),
            ("sysparm_exclude_reference_link", "true"),
        ])
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["result"],
        json!([{"parent": "ci-db", "child": "ci-host", "type.name": "Runs on::Runs"}])
    );
}

// ---------------------------------------------------------------------------
// fetch: the client against the instance.

#[tokio::test]
async fn fetch_pages_maps_and_retries_after_429() {
    let inst = serve(
        instance_tables(BIG),
        Creds::Basic(USER, PASSWORD),
        Quirks {
            throttle_first: true,
            ..Quirks::default()
        },
    )
    .await;
    let started = Instant::now();
    let file = servicenow::fetch(&http(), &endpoint(&inst, basic(), PAGE as u32))
        .await
        .expect("fetch succeeds after the 429");
    let took = started.elapsed();

    // What was asked: the 429'd first page again after Retry-After, then
    // pages at the right offsets, every time with the credentials.
    let ci_reqs = inst.seen_on("cmdb_ci");
    assert_eq!(
        offsets(&ci_reqs),
        vec![(429, 0), (200, 0), (200, 1000), (200, 2000)]
    );
    let gap = ci_reqs[1].at - ci_reqs[0].at;
    assert!(
        gap >= Duration::from_millis(990) && gap < Duration::from_secs(5),
        "retry after {gap:?}, Retry-After said 1 s"
    );
    assert!(took >= Duration::from_secs(1), "{took:?}");
    let rel_reqs = inst.seen_on("cmdb_rel_ci");
    // 1,252 dependency relations (the 1,249 others are filtered by the query).
    assert_eq!(offsets(&rel_reqs), vec![(200, 0), (200, 1000)]);
    let want_auth = Creds::Basic(USER, PASSWORD).header();
    for s in inst.seen() {
        assert_eq!(
            s.authorization.as_deref(),
            Some(want_auth.as_str()),
            "{s:?}"
        );
        assert_eq!(s.param("sysparm_limit"), Some("1000"), "{s:?}");
        assert_eq!(
            s.param("sysparm_exclude_reference_link"),
            Some("true"),
            "{s:?}"
        );
    }
    let ci_fields: HashSet<&str> = ci_reqs[1]
        .param("sysparm_fields")
        .expect("sysparm_fields on cmdb_ci")
        .split(',')
        .collect();
    for f in [
        "sys_id",
        "name",
        "sys_class_name",
        "host_name",
        "fqdn",
        "ip_address",
        "support_group.name",
        "busines_criticality",
    ] {
        assert!(
            ci_fields.contains(f),
            "cmdb_ci fields lack {f}: {ci_fields:?}"
        );
    }
    assert!(!ci_fields.contains("asset_tag"), "{ci_fields:?}");
    let rel_fields: HashSet<&str> = rel_reqs[0]
        .param("sysparm_fields")
        .expect("sysparm_fields on cmdb_rel_ci")
        .split(',')
        .collect();
    assert_eq!(rel_fields, HashSet::from(["parent", "child", "type.name"]));
    let rel_query = rel_reqs[0].param("sysparm_query").expect("type filter");
    assert!(
        rel_query.starts_with("type.nameIN")
            && rel_query.contains("Depends on::Used by")
            && rel_query.contains("Runs on::Runs")
            && !rel_query.contains("Members::Member of"),
        "{rel_query}"
    );

    // What was built.
    let services: Vec<(&str, Option<i64>, Option<&str>)> = file
        .services
        .iter()
        .map(|s| (s.id.as_str(), s.tier, s.owner.as_deref()))
        .collect();
    assert_eq!(
        services,
        vec![
            ("Payments", Some(1), Some("team-payments")),
            ("Reporting", Some(3), Some("team-reporting")),
        ]
    );
    assert_eq!(file.cis.len(), BIG - 2, "every CI but the two services");
    let get = |id: &str| {
        file.cis
            .iter()
            .find(|c| c.id == id)
            .unwrap_or_else(|| panic!("CI {id} missing"))
    };
    let api = get("pay-api");
    assert_eq!(api.class.as_deref(), Some("appl"));
    assert_eq!(api.service.as_deref(), Some("Payments"));
    assert_eq!(api.owner.as_deref(), Some("team-payments"));
    assert_eq!(api.depends_on, vec!["pay-db"]);
    assert_eq!(get("report-job").service.as_deref(), Some("Reporting"));
    let db = get("pay-db");
    assert_eq!(db.class.as_deref(), Some("db_postgresql_instance"));
    assert_eq!(db.depends_on, vec!["db-host-07"], "Runs on::Runs");
    assert_eq!(db.service, None, "no service relates to it directly");
    let host = get("db-host-07");
    assert_eq!(
        host.hostnames,
        vec!["db-host-07", "db-host-07.prod.example.net", "10.20.0.7"]
    );
    assert_eq!(
        host.owner.as_deref(),
        Some("Dana Whitfield"),
        "owned_by.name"
    );
    assert!(host.depends_on.is_empty());
    assert_eq!(get("srv-0000").depends_on, vec!["srv-0001"]);
    assert_eq!(get("srv-2492").depends_on, vec!["srv-2493"]);
    assert!(get("srv-2493").depends_on.is_empty());
    assert_eq!(get("srv-2493").hostnames, vec!["srv-2493", "10.100.9.244"]);

    // And it is a valid CMDB whose impact analysis follows the relations.
    let cmdb = Cmdb::build("servicenow", file).expect("valid CMDB");
    let host = cmdb.ci_by_id("db-host-07").unwrap();
    let impacted: Vec<(String, u8)> = cmdb
        .impacted_services(host)
        .into_iter()
        .map(|s| (s.id, s.tier))
        .collect();
    assert_eq!(
        impacted,
        vec![("Payments".to_string(), 1), ("Reporting".to_string(), 3)]
    );
}

#[tokio::test]
async fn fetch_with_bearer_token_and_rejected_credentials() {
    let inst = serve(instance_tables(12), Creds::Bearer(TOKEN), Quirks::default()).await;
    let client = http();

    let file = servicenow::fetch(&client, &endpoint(&inst, Auth::Bearer(TOKEN.into()), 5))
        .await
        .expect("bearer token accepted");
    assert_eq!(file.cis.len(), 10);
    assert_eq!(
        offsets(&inst.seen_on("cmdb_ci")),
        vec![(200, 0), (200, 5), (200, 10)]
    );
    for s in inst.seen() {
        assert_eq!(
            s.authorization.as_deref(),
            Some("Bearer tok-7f3a9c"),
            "{s:?}"
        );
    }

    for auth in [Auth::Bearer("tok-wrong".into()), basic()] {
        let before = inst.seen().len();
        let err = servicenow::fetch(&client, &endpoint(&inst, auth.clone(), 5))
            .await
            .expect_err("wrong credentials fail");
        let msg = err.to_string();
        assert!(
            msg.contains("401")
                && msg.contains("User Not Authenticated")
                && msg.contains("cmdb_ci"),
            "{auth:?}: {msg}"
        );
        assert_eq!(
            inst.seen().len() - before,
            1,
            "{auth:?}: a 401 is not retried"
        );
    }
}

#[tokio::test]
async fn permanent_403_fails_at_once_with_the_reason() {
    let inst = serve(
        instance_tables(12),
        Creds::Basic(USER, PASSWORD),
        Quirks {
            forbidden: vec!["cmdb_rel_ci"],
            ..Quirks::default()
        },
    )
    .await;
    let started = Instant::now();
    let err = servicenow::fetch(&http(), &endpoint(&inst, basic(), 100))
        .await
        .expect_err("403 is an error");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let msg = err.to_string();
    assert!(
        msg.contains("/api/now/table/cmdb_rel_ci")
            && msg.contains("403")
            && msg.contains("ACL Exception Read not granted on table cmdb_rel_ci"),
        "{msg}"
    );
    assert_eq!(inst.seen_on("cmdb_rel_ci").len(), 1, "403 is not retried");
}

#[tokio::test]
async fn unavailable_instance_gives_up_after_bounded_retries() {
    let inst = serve(
        instance_tables(12),
        Creds::Basic(USER, PASSWORD),
        Quirks {
            unavailable: true,
            ..Quirks::default()
        },
    )
    .await;
    let err = tokio::time::timeout(
        Duration::from_secs(20),
        servicenow::fetch(&http(), &endpoint(&inst, basic(), 100)),
    )
    .await
    .expect("fetch gives up in time")
    .expect_err("503 every time is an error");
    assert!(err.to_string().contains("503"), "{err}");
    let n = inst.seen().len();
    assert!((2..=4).contains(&n), "retried {n} times");
}

/// Read ACLs hide some rows of the first page: ServiceNow then returns fewer
/// rows than `sysparm_limit` although `X-Total-Count` and the `Link` header's
/// `next` say more pages follow. A short page is not the last page.
#[tokio::test]
async fn short_page_from_read_acls_is_not_the_end() {
    let hidden: HashSet<String> = (100..110).map(|i| format!("ci-srv-{i:04}")).collect();
    let inst = serve(
        instance_tables(BIG),
        Creds::Basic(USER, PASSWORD),
        Quirks {
            acl_hidden: hidden.clone(),
            ..Quirks::default()
        },
    )
    .await;
    let file = servicenow::fetch(&http(), &endpoint(&inst, basic(), PAGE as u32))
        .await
        .expect("fetch succeeds");
    assert_eq!(
        offsets(&inst.seen_on("cmdb_ci")),
        vec![(200, 0), (200, 1000), (200, 2000)]
    );
    assert_eq!(file.cis.len(), BIG - 2 - hidden.len());
    assert!(
        file.cis.iter().any(|c| c.id == "srv-2493"),
        "last page read"
    );
}

// ---------------------------------------------------------------------------
// End to end: `incidentd serve` syncs from the instance, merges with its
// CMDB file, and correlates alerts against the synced CIs.

const E2E_DEADLINE: Duration = Duration::from_secs(30);

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_syncs_servicenow_merges_with_file_and_correlates() {
    let inst = serve(
        instance_tables(8),
        Creds::Basic(USER, PASSWORD),
        Quirks {
            throttle_first: true,
            ..Quirks::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let cmdb_file = dir.join("cmdb.yaml");
    write(
        &cmdb_file,
        "version: 1\n\
         services:\n  - id: web\n    name: Web shop\n    tier: 2\n    owner: team-web\n\
         cis:\n  - id: web-host-1\n    class: host\n    service: web\n    hostnames: [web-host-1]\n",
    );
    let password_file = dir.join("sn-password");
    // A trailing newline, as editors leave it: not part of the password.
    write(&password_file, &format!("{PASSWORD}\n"));
    let config = dir.join("incidentd.toml");
    write(
        &config,
        &format!(
            "[incident]\nauto_resolve_hold = \"0s\"\n\
             [cmdb]\nfile = {file:?}\n\
             [cmdb.servicenow]\nurl = {url:?}\nuser = {USER:?}\npassword_file = {pw:?}\n\
             interval = \"10s\"\npage_size = 3\ntimeout = \"5s\"\n",
            file = cmdb_file.display().to_string(),
            url = format!("{}/", inst.base),
            pw = password_file.display().to_string(),
        ),
    );
    let data_dir = dir.join("data");
    std::fs::create_dir(&data_dir).expect("mkdir data");
    let port = support::free_ports(1)[0];
    let base = format!("http://127.0.0.1:{port}");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_incidentd"));
    cmd.arg("serve")
        .arg("--config")
        .arg(&config)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--rules")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("rules"))
        .env("NO_PROXY", "127.0.0.1")
        .env("no_proxy", "127.0.0.1")
        .current_dir(dir);
    for v in ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"] {
        cmd.env_remove(v);
    }
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "info,incidentd=debug");
    }
    let mut children = Children::default();
    children.spawn("incidentd", cmd, dir);
    let client = http();

    // The CI only ServiceNow knows appears once the first sync (429 first,
    // then three pages of three) is merged in.
    let url = format!("{base}/api/v1/cis/pay-db");
    let db = poll_until(
        "pay-db synced from ServiceNow",
        E2E_DEADLINE,
        &mut children,
        async || support::get_json(&client, &url).await,
    )
    .await;
    assert_eq!(db["class"], "db_postgresql_instance");
    assert_eq!(db["owner"], "team-db");
    assert_eq!(db["depends_on"], json!(["db-host-07"]));
    let mut dependents: Vec<&str> = db["dependents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    dependents.sort_unstable();
    assert_eq!(dependents, vec!["pay-api", "report-job"]);
    assert_eq!(db["upstream"], json!(["db-host-07"]));
    assert_eq!(
        db["impacted_services"],
        json!([{"id": "Payments", "tier": 1}, {"id": "Reporting", "tier": 3}])
    );
    let host = support::get_json(&client, &format!("{base}/api/v1/cis/db-host-07"))
        .await
        .expect("db-host-07");
    assert_eq!(
        host["hostnames"],
        json!(["db-host-07", "db-host-07.prod.example.net", "10.20.0.7"])
    );
    let api = support::get_json(&client, &format!("{base}/api/v1/cis/pay-api"))
        .await
        .expect("pay-api");
    assert_eq!(api["service"], "Payments");

    // The file's CI is still there: the sources are merged, not replaced.
    let web = support::get_json(&client, &format!("{base}/api/v1/cis/web-host-1"))
        .await
        .expect("web-host-1 from the CMDB file");
    assert_eq!(web["service"], "web");
    assert_eq!(web["impacted_services"], json!([{"id": "web", "tier": 2}]));

    // What the daemon asked: credentials from the password file (trimmed),
    // the 429 retried, pages of 3 at offsets 0, 3, 6.
    let want_auth = Creds::Basic(USER, PASSWORD).header();
    let seen = inst.seen();
    assert!(
        seen.iter()
            .all(|s| s.authorization.as_deref() == Some(want_auth.as_str())),
        "{seen:?}"
    );
    let ci_reqs = inst.seen_on("cmdb_ci");
    assert_eq!(
        offsets(&ci_reqs[..4]),
        vec![(429, 0), (200, 0), (200, 3), (200, 6)]
    );

    // An alert on the synced CI opens an incident rooted there, assigned to
    // its support group, with the services it hurts.
    let resp = client
        .post(format!("{base}/api/v1/alerts"))
        .json(&json!([{
            "labels": {"alertname": "PostgresDown", "ci": "pay-db", "severity": "critical"},
            "annotations": {"summary": "pay-db is not accepting connections"},
        }]))
        .send()
        .await
        .expect("POST /api/v1/alerts");
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    let list = format!("{base}/api/v1/incidents?state=all");
    let incident = poll_until(
        "incident rooted at pay-db",
        E2E_DEADLINE,
        &mut children,
        async || {
            let v = support::get_json(&client, &list).await?;
            v["incidents"]
                .as_array()
                .and_then(|a| a.iter().find(|i| i["root_ci"] == "pay-db").cloned())
                .ok_or_else(|| format!("no incident rooted at pay-db yet: {v}"))
        },
    )
    .await;
    assert_eq!(incident["assignment_group"], "team-db", "{incident}");
    assert_eq!(
        incident["impacted_services"],
        json!(["Payments", "Reporting"]),
        "{incident}"
    );
    assert_eq!(incident["state"], "open", "{incident}");
}
