//! `GET /api/v1/alerts`: the alerts firing now, with the incident each
//! went to, or (`suppressed=true`) the ones a rule suppressed, with that
//! rule and its reason: what an on-call engineer asks first ("what is
//! firing, and what is being kept from me?").

use super::{ApiError, Shared, check_api_token, next, page, query, shared_cmdb};
use crate::cmdb::Cmdb;
use crate::domain::{Fingerprint, IncidentId, LabelSet, Source, Timestamp};
use crate::store::{AlertQuery, AlertRecord};
use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertParams {
    #[serde(default)]
    suppressed: bool,
    alertname: Option<String>,
    service: Option<String>,
    ci: Option<String>,
    offset: Option<u64>,
    limit: Option<u32>,
}

/// The rule that suppressed an alert, and the reason it gave.
#[derive(Debug, Serialize, PartialEq)]
pub(super) struct SuppressedBy {
    rule: String,
    reason: String,
}

/// One firing alert as the list shows it.
#[derive(Debug, Serialize, PartialEq)]
pub(super) struct AlertItem {
    fingerprint: Fingerprint,
    alertname: String,
    labels: LabelSet,
    annotations: LabelSet,
    starts_at: Timestamp,
    source: Source,
    generator_url: String,
    /// The incident it went to (`null` when suppressed, or when no rule
    /// opened one).
    incident: Option<IncidentId>,
    /// The CI it is bound to, and that CI's business service.
    ci: Option<String>,
    service: Option<String>,
    suppressed: Option<SuppressedBy>,
    /// The change whose window it fired in.
    change: Option<String>,
    flapping: bool,
    deliveries: u64,
    first_seen: Timestamp,
    last_seen: Timestamp,
}

/// The list's view of a stored alert: its CI read back from the key the
/// engine stored, its service from the CMDB in force.
pub(super) fn alert_item(cmdb: &Cmdb, a: AlertRecord) -> AlertItem {
    let alertname = a.labels.get("alertname").unwrap_or_default().to_string();
    let ci = crate::correlate::ci_of_key(&a.key, &alertname).map(str::to_string);
    let service = ci
        .as_deref()
        .and_then(|c| cmdb.ci_by_id(c))
        .and_then(|c| cmdb.ci(c).service)
        .map(|s| cmdb.service(s).id.clone());
    AlertItem {
        fingerprint: a.fingerprint,
        alertname,
        labels: a.labels,
        annotations: a.annotations,
        starts_at: a.starts_at,
        source: a.source,
        generator_url: a.generator_url,
        incident: a.incident,
        ci,
        service,
        suppressed: a
            .suppressed
            .map(|(rule, reason)| SuppressedBy { rule, reason }),
        change: a.change,
        flapping: a.flapping,
        deliveries: a.deliveries,
        first_seen: a.first_seen,
        last_seen: a.last_seen,
    }
}

/// The CIs whose alerts a request asks for: the one named by `ci`, those
/// of `service`, or both at once (their intersection); `None` for any.
pub(super) fn ci_filter(
    cmdb: &Cmdb,
    ci: Option<&str>,
    service: Option<&str>,
) -> Option<Vec<String>> {
    let of_service = service.map(|s| {
        cmdb.cis()
            .filter(|(_, c)| c.service.is_some_and(|i| cmdb.service(i).id == s))
            .map(|(_, c)| c.id.clone())
            .collect::<Vec<_>>()
    });
    match (ci, of_service) {
        (None, None) => None,
        (Some(ci), None) => Some(vec![ci.to_string()]),
        (None, Some(list)) => Some(list),
        (Some(ci), Some(list)) => Some(list.into_iter().filter(|c| c == ci).collect()),
    }
}

/// `GET /api/v1/alerts?suppressed=&alertname=&service=&ci=&offset=&limit=`.
pub(super) async fn list_alerts(
    State(st): State<Shared>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_api_token(&st, &headers)?;
    let p: AlertParams = query(raw.as_deref())?;
    let page = page("limit", p.offset, p.limit, 500)?;
    let cmdb = shared_cmdb(&st);
    let nonempty = |v: Option<String>| v.filter(|s| !s.is_empty());
    let (ci, service) = (nonempty(p.ci), nonempty(p.service));
    let rows = st
        .store
        .list_alerts(AlertQuery {
            suppressed: p.suppressed,
            alertname: nonempty(p.alertname),
            cis: ci_filter(&cmdb, ci.as_deref(), service.as_deref()),
            page,
        })
        .await?;
    let got = rows.len();
    let alerts: Vec<AlertItem> = rows.into_iter().map(|a| alert_item(&cmdb, a)).collect();
    Ok(Json(
        json!({ "alerts": alerts, "next_offset": next(page, got) }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AlertStatus;

    fn cmdb() -> Cmdb {
        crate::cmdb::parse_yaml(
            "test",
            "version: 1\nservices:\n  - { id: shop, tier: 1 }\n  - { id: blog, tier: 3 }\ncis:\n  - { id: db, service: shop }\n  - { id: web, service: shop, depends_on: [db] }\n  - { id: cms, service: blog }\n",
        )
        .expect("valid CMDB")
    }

    fn record(key: &str, suppressed: Option<(&str, &str)>) -> AlertRecord {
        let labels: LabelSet = [("alertname".to_string(), "PgDown".to_string())]
            .into_iter()
            .collect();
        AlertRecord {
            fingerprint: Fingerprint(7),
            status: AlertStatus::Firing,
            labels,
            annotations: LabelSet::new(),
            starts_at: Timestamp(0),
            ends_at: None,
            source: Source::Api,
            generator_url: String::new(),
            incident: None,
            key: key.into(),
            suppressed: suppressed.map(|(a, b)| (a.into(), b.into())),
            change: None,
            flapping: false,
            first_seen: Timestamp(0),
            last_seen: Timestamp(0),
            deliveries: 1,
            shard: 0,
        }
    }

    #[test]
    fn an_alert_shows_its_ci_service_and_suppression() {
        let c = cmdb();
        let a = alert_item(&c, record("PgDown|ci:db", Some(("quiet", "planned"))));
        assert_eq!(a.ci.as_deref(), Some("db"));
        assert_eq!(a.service.as_deref(), Some("shop"));
        assert_eq!(
            a.suppressed,
            Some(SuppressedBy {
                rule: "quiet".into(),
                reason: "planned".into()
            })
        );
        // Keyed by host: no CI, no service.
        let b = alert_item(&c, record("PgDown|host:h1", None));
        assert_eq!((b.ci, b.service, b.suppressed), (None, None, None));
        // A `ci` label the CMDB does not know: the CI, but no service.
        let u = alert_item(&c, record("PgDown|ci:ghost", None));
        assert_eq!((u.ci.as_deref(), u.service), (Some("ghost"), None));
    }

    #[test]
    fn filters_name_the_cis_of_a_service() {
        let c = cmdb();
        assert_eq!(ci_filter(&c, None, None), None);
        assert_eq!(ci_filter(&c, Some("x"), None), Some(vec!["x".to_string()]));
        assert_eq!(
            ci_filter(&c, None, Some("shop")),
            Some(vec!["db".to_string(), "web".to_string()])
        );
        assert_eq!(ci_filter(&c, Some("cms"), Some("shop")), Some(vec![]));
        assert_eq!(ci_filter(&c, None, Some("nope")), Some(vec![]));
    }
}
