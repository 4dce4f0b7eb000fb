//! CMDB sync from a ServiceNow-style Table API: CIs from `cmdb_ci`,
//! dependencies from `cmdb_rel_ci`, paginated with `sysparm_limit` /
//! `sysparm_offset`. The mapping from API records to the exchange format is
//! pure ([`to_cmdb`]); [`fetch`] is the thin I/O around it.

use super::model::{CiRecord, CmdbFile, ServiceRecord};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// ServiceNow relationship types in which the parent depends on the child.
pub const DEPENDENCY_TYPES: [&str; 4] = [
    "Depends on::Used by",
    "Runs on::Runs",
    "Hosted on::Hosts",
    "Uses::Used by",
];

/// CI classes that are business services, not configuration items.
const SERVICE_CLASSES: [&str; 5] = [
    "cmdb_ci_service",
    "cmdb_ci_service_business",
    "cmdb_ci_service_auto",
    "cmdb_ci_service_discovered",
    "cmdb_ci_service_technical",
];

const CI_FIELDS: &str = "sys_id,name,sys_class_name,host_name,fqdn,ip_address,support_group.name,owned_by.name,busines_criticality";
const REL_FIELDS: &str = "parent,child,type.name";
const MAX_PAGES: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum ServiceNowError {
    #[error("request to {url} failed: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url}: unexpected response: {message}")]
    Decode { url: String, message: String },
    #[error("{0}: too many pages; is the API ignoring sysparm_offset?")]
    Runaway(String),
}

/// One `cmdb_ci` record as the Table API returns it (references as sys_ids,
/// dot-walked names as `field.name` keys).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CiRow {
    #[serde(default)]
    pub sys_id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub sys_class_name: String,
    #[serde(default)]
    pub host_name: String,
    #[serde(default)]
    pub fqdn: String,
    #[serde(default)]
    pub ip_address: String,
    #[serde(default, rename = "support_group.name")]
    pub support_group: String,
    #[serde(default, rename = "owned_by.name")]
    pub owned_by: String,
    #[serde(default)]
    pub busines_criticality: String,
}

/// One `cmdb_rel_ci` record.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RelRow {
    #[serde(default)]
    pub parent: String,
    #[serde(default)]
    pub child: String,
    #[serde(default, rename = "type.name")]
    pub rel_type: String,
}

#[derive(Deserialize)]
struct Page<T> {
    result: Vec<T>,
}

/// Tier from `busines_criticality` ("1 - most critical" → 1).
fn tier(criticality: &str) -> Option<i64> {
    criticality
        .trim()
        .chars()
        .next()?
        .to_digit(10)
        .map(i64::from)
        .filter(|t| (1..=5).contains(t))
}

fn non_empty(v: &str) -> Option<String> {
    let v = v.trim();
    (!v.is_empty()).then(|| v.to_string())
}

/// Map API records into the exchange format. CIs are named by `name`
/// (what alerts carry in a `ci` label), falling back to `sys_id`.
pub fn to_cmdb(cis: &[CiRow], rels: &[RelRow]) -> CmdbFile {
    let mut by_sys: HashMap<&str, (bool, String)> = HashMap::new();
    let mut used: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut services = Vec::new();
    let mut records: Vec<CiRecord> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for row in cis {
        // Names are what alerts carry, but real CMDBs repeat them: a repeated
        // name gets its sys_id appended rather than failing the whole sync.
        let mut id = non_empty(&row.name).unwrap_or_else(|| row.sys_id.clone());
        if !used.insert(id.clone()) {
            id = format!("{id}#{}", row.sys_id);
            used.insert(id.clone());
        }
        let owner = non_empty(&row.support_group).or_else(|| non_empty(&row.owned_by));
        let is_service = SERVICE_CLASSES.contains(&row.sys_class_name.as_str());
        by_sys.insert(row.sys_id.as_str(), (is_service, id.clone()));
        if is_service {
            services.push(ServiceRecord {
                id: id.clone(),
                name: non_empty(&row.name),
                description: None,
                tier: tier(&row.busines_criticality),
                owner,
                sla: None,
                slo: Vec::new(),
            });
            continue;
        }
        let mut hostnames: Vec<String> = Vec::new();
        for h in [&row.host_name, &row.fqdn, &row.ip_address] {
            if let Some(h) = non_empty(h)
                && !hostnames.contains(&h)
            {
                hostnames.push(h);
            }
        }
        if let Some(short) =
            non_empty(&row.fqdn).and_then(|f| f.split('.').next().map(str::to_string))
            && !hostnames.contains(&short)
        {
            hostnames.push(short);
        }
        index.insert(id.clone(), records.len());
        records.push(CiRecord {
            id,
            name: None,
            class: Some(
                row.sys_class_name
                    .strip_prefix("cmdb_ci_")
                    .unwrap_or(&row.sys_class_name)
                    .to_string(),
            ),
            service: None,
            owner,
            hostnames,
            match_labels: BTreeMap::new(),
            depends_on: Vec::new(),
            runbook: None,
        });
    }
    for rel in rels {
        if !DEPENDENCY_TYPES.contains(&rel.rel_type.as_str()) {
            continue;
        }
        let (Some((p_service, parent)), Some((c_service, child))) = (
            by_sys.get(rel.parent.as_str()),
            by_sys.get(rel.child.as_str()),
        ) else {
            continue; // an end outside the synced CIs
        };
        match (p_service, c_service) {
            // A service depends on a CI: the CI serves that service.
            (true, false) => {
                if let Some(&i) = index.get(child)
                    && records[i].service.is_none()
                {
                    records[i].service = Some(parent.clone());
                }
            }
            (false, false) => {
                if let Some(&i) = index.get(parent)
                    && !records[i].depends_on.contains(child)
                    && parent != child
                {
                    records[i].depends_on.push(child.clone());
                }
            }
            _ => {}
        }
    }
    CmdbFile {
        version: 1,
        services,
        cis: records,
    }
}

/// How to reach the API.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub base_url: String,
    pub auth: Auth,
    pub page_size: u32,
    pub ci_query: Option<String>,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub enum Auth {
    Basic { user: String, password: String },
    Bearer(String),
}

/// Fetch every CI and dependency and map them.
pub async fn fetch(client: &reqwest::Client, ep: &Endpoint) -> Result<CmdbFile, ServiceNowError> {
    let cis: Vec<CiRow> =
        fetch_table(client, ep, "cmdb_ci", CI_FIELDS, ep.ci_query.as_deref()).await?;
    let rel_query = format!("type.nameIN{}", DEPENDENCY_TYPES.join(","));
    let rels: Vec<RelRow> =
        fetch_table(client, ep, "cmdb_rel_ci", REL_FIELDS, Some(&rel_query)).await?;
    Ok(to_cmdb(&cis, &rels))
}

async fn fetch_table<T: for<'de> Deserialize<'de>>(
    client: &reqwest::Client,
    ep: &Endpoint,
    table: &str,
    fields: &str,
    query: Option<&str>,
) -> Result<Vec<T>, ServiceNowError> {
    let url = format!("{}/api/now/table/{table}", ep.base_url);
    let mut out = Vec::new();
    let limit = ep.page_size.max(1);
    let mut offset = 0u64;
    for _ in 0..MAX_PAGES {
        let mut params = vec![
            ("sysparm_fields", fields.to_string()),
            ("sysparm_limit", limit.to_string()),
            ("sysparm_offset", offset.to_string()),
            ("sysparm_exclude_reference_link", "true".to_string()),
            ("sysparm_display_value", "false".to_string()),
        ];
        // A stable order, so rows do not shift between pages.
        let q = match query {
            Some(q) => format!("{q}^ORDERBYsys_id"),
            None => "ORDERBYsys_id".to_string(),
        };
        params.push(("sysparm_query", q));
        let (rows, more): (Vec<T>, More) = get_page(client, ep, &url, &params).await?;
        let n = rows.len();
        out.extend(rows);
        // Read ACLs drop rows after the query ran, so a short page need not
        // be the last: the `Link` header, when sent, says where to go on.
        offset = match more {
            More::At(next) if next > offset => next,
            More::Done => return Ok(out),
            _ if n < limit as usize => return Ok(out),
            _ => offset + u64::from(limit),
        };
    }
    Err(ServiceNowError::Runaway(url))
}

/// What the `Link` header says about the page after this one.
#[derive(Debug)]
enum More {
    /// No `Link` header (one page only, or not sent): judge by the row count.
    Unknown,
    /// A `Link` header without `rel="next"`: this was the last page.
    Done,
    /// The `sysparm_offset` of the `rel="next"` link.
    At(u64),
}

fn more_from_link(link: Option<&str>) -> More {
    let Some(mut rest) = link else {
        return More::Unknown;
    };
    // `<url>;rel="first",<url>;rel="next",...`; URLs may hold commas.
    while let Some(start) = rest.find('<') {
        let Some(end) = rest[start..].find('>').map(|e| start + e) else {
            break;
        };
        let url = &rest[start + 1..end];
        rest = &rest[end + 1..];
        let attrs = &rest[..rest.find('<').unwrap_or(rest.len())];
        let is_next = attrs
            .split([';', ','])
            .any(|a| matches!(a.trim(), "rel=\"next\"" | "rel=next"));
        if is_next {
            return url
                .split_once('?')
                .and_then(|(_, q)| {
                    q.split('&')
                        .find_map(|kv| kv.strip_prefix("sysparm_offset="))
                })
                .and_then(|o| o.parse().ok())
                .map_or(More::Unknown, More::At);
        }
    }
    More::Done
}

/// One page, retrying 429 and 5xx a few times (honouring `Retry-After`).
async fn get_page<T: for<'de> Deserialize<'de>>(
    client: &reqwest::Client,
    ep: &Endpoint,
    url: &str,
    params: &[(&str, String)],
) -> Result<(Vec<T>, More), ServiceNowError> {
    let mut backoff = Duration::from_millis(500);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut req = client
            .get(url)
            .query(params)
            .timeout(ep.timeout)
            .header("Accept", "application/json");
        req = match &ep.auth {
            Auth::Basic { user, password } => req.basic_auth(user, Some(password)),
            Auth::Bearer(token) => req.bearer_auth(token),
        };
        let resp = req.send().await.map_err(|source| ServiceNowError::Http {
            url: url.to_string(),
            source: source.without_url(),
        })?;
        let status = resp.status();
        if (status.as_u16() == 429 || status.is_server_error()) && attempt < 4 {
            let wait = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map_or(backoff, |s| Duration::from_secs(s.min(60)));
            tracing::warn!(url, status = status.as_u16(), retry_in = ?wait, "CMDB API busy; retrying");
            tokio::time::sleep(wait).await;
            backoff *= 2;
            continue;
        }
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(ServiceNowError::Status {
                url: url.to_string(),
                status: status.as_u16(),
                body: body.chars().take(300).collect(),
            });
        }
        let more = more_from_link(
            resp.headers()
                .get(reqwest::header::LINK)
                .and_then(|v| v.to_str().ok()),
        );
        let bytes = resp.bytes().await.map_err(|source| ServiceNowError::Http {
            url: url.to_string(),
            source: source.without_url(),
        })?;
        let page: Page<T> =
            serde_json::from_slice(&bytes).map_err(|e| ServiceNowError::Decode {
                url: url.to_string(),
                message: e.to_string(),
            })?;
        return Ok((page.result, more));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ci(sys_id: &str, name: &str, class: &str) -> CiRow {
        CiRow {
            sys_id: sys_id.into(),
            name: name.into(),
            sys_class_name: class.into(),
            ..CiRow::default()
        }
    }

    #[test]
    fn repeated_names_get_their_sys_id() {
        let file = to_cmdb(
            &[
                ci("a1", "web", "cmdb_ci_linux_server"),
                ci("a2", "web", "cmdb_ci_linux_server"),
            ],
            &[],
        );
        let ids: Vec<&str> = file.cis.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, vec!["web", "web#a2"]);
        assert!(crate::cmdb::Cmdb::build("sn", file).is_ok());
    }

    #[test]
    fn maps_services_cis_and_dependencies() {
        let mut host = ci("s1", "db-host-1", "cmdb_ci_linux_server");
        host.host_name = "db-host-1".into();
        host.fqdn = "db-host-1.prod.example.com".into();
        host.ip_address = "10.0.0.5".into();
        host.support_group = "team-platform".into();
        let db = ci("s2", "orders-db", "cmdb_ci_db_postgresql_instance");
        let app = ci("s3", "orders-api", "cmdb_ci_appl");
        let mut svc = ci("s4", "Orders", "cmdb_ci_service_business");
        svc.busines_criticality = "1 - most critical".into();
        let rel = |p: &str, c: &str, t: &str| RelRow {
            parent: p.into(),
            child: c.into(),
            rel_type: t.into(),
        };
        let file = to_cmdb(
            &[host, db, app, svc],
            &[
                rel("s2", "s1", "Runs on::Runs"),
                rel("s3", "s2", "Depends on::Used by"),
                rel("s4", "s3", "Depends on::Used by"),
                rel("s3", "s9", "Depends on::Used by"), // unknown end: skipped
                rel("s3", "s1", "Members::Member of"),  // not a dependency
            ],
        );
        assert_eq!(file.services.len(), 1);
        assert_eq!(
            (file.services[0].id.as_str(), file.services[0].tier),
            ("Orders", Some(1))
        );
        let get = |id: &str| file.cis.iter().find(|c| c.id == id).unwrap();
        assert_eq!(get("orders-db").depends_on, vec!["db-host-1"]);
        assert_eq!(get("orders-api").depends_on, vec!["orders-db"]);
        assert_eq!(get("orders-api").service.as_deref(), Some("Orders"));
        assert_eq!(get("orders-api").class.as_deref(), Some("appl"));
        assert_eq!(
            get("db-host-1").hostnames,
            vec!["db-host-1", "db-host-1.prod.example.com", "10.0.0.5"]
        );
        assert_eq!(get("db-host-1").owner.as_deref(), Some("team-platform"));
        let cmdb = crate::cmdb::Cmdb::build("sn", file).expect("valid CMDB");
        let app = cmdb.ci_by_id("orders-api").unwrap();
        let host = cmdb.ci_by_id("db-host-1").unwrap();
        assert!(cmdb.is_upstream(host, app));
        assert_eq!(
            cmdb.impacted_services(host)
                .iter()
                .map(|s| s.id.as_str())
                .collect::<Vec<_>>(),
            vec!["Orders"]
        );
    }
}
