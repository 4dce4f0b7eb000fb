//! The service catalog and the CIs, as the CMDB in force has them:
//! `GET /api/v1/services` with each service's live SLO figures and its
//! active incidents, `GET /api/v1/cis` one summary line per CI. The views
//! are pure functions of the CMDB, the SLO book and the incidents.

use super::{ApiError, Shared, check_api_token, next, page, query, shared_cmdb};
use crate::cmdb::Cmdb;
use crate::domain::{Incident, Priority, Timestamp};
use crate::kpi::{KpiBook, Kpis};
use crate::slo::SloBook;
use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;

/// SLA targets of a service per priority, in seconds (absent: none).
#[derive(Debug, Serialize, PartialEq)]
pub struct SlaTargets {
    pub response_seconds: BTreeMap<&'static str, u64>,
    pub resolution_seconds: BTreeMap<&'static str, u64>,
}

/// One SLO with its figures as of the request (the same as the
/// `incidentd_slo_*` series a scrape at that instant would show).
#[derive(Debug, Serialize, PartialEq)]
pub struct SloView {
    pub name: String,
    /// Target availability as a ratio (0.999).
    pub objective: f64,
    pub window_seconds: u64,
    /// The figures, `null` until the SLO book has been built with this
    /// SLO (a catalog reloaded within the last `slo.refresh`).
    pub figures: Option<SloFiguresView>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct SloFiguresView {
    /// Availability over the window (1 − bad / valid).
    pub sli: f64,
    /// Share of the error budget left; below 0 once overspent.
    pub error_budget_remaining: f64,
    pub bad_seconds: f64,
    pub valid_seconds: f64,
    /// Error ratio over each window divided by the budget (1 − objective),
    /// by window (`5m` … `3d`, and `slo` for the SLO's own window).
    pub burn_rates: BTreeMap<&'static str, f64>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct ServiceView {
    pub id: String,
    pub name: String,
    pub tier: u8,
    pub owner: Option<String>,
    pub sla: SlaTargets,
    pub slos: Vec<SloView>,
    /// Active (open or acknowledged) incidents impacting it.
    pub open_incidents: u64,
    /// The most urgent priority among them.
    pub highest_priority: Option<Priority>,
    /// Of the SLA timers decided over the last 30 days (met, or breached)
    /// of incidents impacting it, the share met; `null` when none was.
    pub sla_compliance: Option<f64>,
    /// Noise reduction, incidents with MTTA and MTTR, change outcomes and
    /// SLA compliance by kind, as of the KPI book's last refresh; `null`
    /// for a service added since.
    pub kpis: Option<Kpis>,
}

/// How far back SLA compliance looks.
pub const SLA_COMPLIANCE_WINDOW: std::time::Duration = crate::kpi::SLA_WINDOW;

/// Every service of the catalog with its SLOs' figures at `now`, the
/// active incidents among `incidents` that impact it, and its SLA
/// compliance over `recent`.
pub(crate) fn services_view(
    cmdb: &Cmdb,
    book: &SloBook,
    kpis: &KpiBook,
    incidents: &[Incident],
    recent: &[Incident],
    now: Timestamp,
    pause_on: &[String],
) -> Vec<ServiceView> {
    let record = crate::kpi::sla_tally(cmdb, recent, now, pause_on).by_service;
    let mut open: BTreeMap<&str, (u64, Option<Priority>)> = BTreeMap::new();
    for inc in incidents.iter().filter(|i| i.state.is_active()) {
        for s in &inc.impacted_services {
            let e = open.entry(s.as_str()).or_default();
            e.0 += 1;
            e.1 = Some(e.1.map_or(inc.priority, |p| p.min(inc.priority)));
        }
    }
    let targets = |t: &[Option<std::time::Duration>; 5]| {
        Priority::ALL
            .iter()
            .zip(t)
            .filter_map(|(p, d)| d.map(|d| (p.as_str(), d.as_secs())))
            .collect()
    };
    cmdb.services()
        .iter()
        .map(|s| {
            let slos = s
                .slos
                .iter()
                .map(|o| {
                    let figures = book
                        .series
                        .iter()
                        .find(|x| x.service == s.id && x.slo == o.name)
                        .map(|x| {
                            let f = x.figures(now);
                            SloFiguresView {
                                sli: f.sli,
                                error_budget_remaining: f.budget_remaining,
                                bad_seconds: f.bad_seconds,
                                valid_seconds: f.valid_seconds,
                                burn_rates: f.burn_rates.into_iter().collect(),
                            }
                        });
                    SloView {
                        name: o.name.clone(),
                        objective: o.objective,
                        window_seconds: o.window.as_secs(),
                        figures,
                    }
                })
                .collect();
            let (count, top) = open.get(s.id.as_str()).copied().unwrap_or_default();
            ServiceView {
                id: s.id.clone(),
                name: s.name.clone(),
                tier: s.tier,
                owner: s.owner.clone(),
                sla: SlaTargets {
                    response_seconds: targets(&s.response),
                    resolution_seconds: targets(&s.resolution),
                },
                slos,
                open_incidents: count,
                highest_priority: top,
                sla_compliance: record
                    .get(&s.id)
                    .map(|[r, s]| (r.0 + s.0, r.1 + s.1))
                    .filter(|(_, decided)| *decided > 0)
                    .map(|(met, decided)| met as f64 / decided as f64),
                kpis: kpis.services.get(&s.id).cloned(),
            }
        })
        .collect()
}

/// `GET /api/v1/services`.
pub(super) async fn list_services(
    State(st): State<Shared>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_api_token(&st, &headers)?;
    let now = st.clock.now();
    let services = catalog(&st, now).await?;
    let kpis = st.kpi.book();
    Ok(Json(json!({
        "services": services,
        "as_of": now,
        "overall": kpis.overall,
        "kpis_as_of": kpis.as_of,
    })))
}

/// The service catalog with its figures at `now` (the API and the web
/// board's services page).
pub(crate) async fn catalog(
    st: &super::AppState,
    now: Timestamp,
) -> Result<Vec<ServiceView>, ApiError> {
    // Every active incident, without its fingerprints: those "open at
    // some time since now", of any priority (P5 and more urgent).
    let incidents = st.store.slo_incidents(now, Priority::ALL[4]).await?;
    let recent = st
        .store
        .slo_incidents(now.saturating_sub(SLA_COMPLIANCE_WINDOW), Priority::ALL[4])
        .await?;
    let cmdb = shared_cmdb(st);
    let book = st.slo.book();
    let kpis = st.kpi.book();
    Ok(services_view(
        &cmdb,
        &book,
        &kpis,
        &incidents,
        &recent,
        now,
        &st.sla_pause_on,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CiParams {
    class: Option<String>,
    service: Option<String>,
    offset: Option<u64>,
    limit: Option<u32>,
}

/// One CI as a list shows it.
#[derive(Debug, Serialize, PartialEq)]
pub(super) struct CiSummary {
    id: String,
    name: Option<String>,
    class: String,
    service: Option<String>,
    owner: Option<String>,
    /// Who takes an incident rooted here (the CI's owner, else its
    /// service's), unless a rule assigns another group.
    assignment_group: Option<String>,
    depends_on: Vec<String>,
    /// How many CIs depend on it directly.
    dependent_count: usize,
}

/// The CIs of `class` and `service` (each when given), sorted by id.
pub(super) fn ci_summaries(
    cmdb: &Cmdb,
    class: Option<&str>,
    service: Option<&str>,
) -> Vec<CiSummary> {
    let mut out: Vec<CiSummary> = cmdb
        .cis()
        .map(|(idx, c)| (idx, c, c.service.map(|s| cmdb.service(s).id.as_str())))
        .filter(|(_, c, s)| {
            class.is_none_or(|k| c.class == k) && service.is_none_or(|w| *s == Some(w))
        })
        .map(|(idx, c, s)| CiSummary {
            id: c.id.clone(),
            name: c.name.clone(),
            class: c.class.clone(),
            service: s.map(str::to_string),
            owner: c.owner.clone(),
            assignment_group: cmdb.assignment_group(idx).map(str::to_string),
            depends_on: cmdb
                .depends_on(idx)
                .iter()
                .map(|d| cmdb.ci(*d).id.clone())
                .collect(),
            dependent_count: cmdb.dependents(idx).len(),
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// `GET /api/v1/cis?class=&service=&offset=&limit=`.
pub(super) async fn list_cis(
    State(st): State<Shared>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_api_token(&st, &headers)?;
    let p: CiParams = query(raw.as_deref())?;
    let page = page("limit", p.offset, p.limit, 500)?;
    let cmdb = shared_cmdb(&st);
    fn nonempty(v: &Option<String>) -> Option<&str> {
        v.as_deref().filter(|s| !s.is_empty())
    }
    let all = ci_summaries(&cmdb, nonempty(&p.class), nonempty(&p.service));
    let total = all.len();
    let rows: Vec<CiSummary> = all
        .into_iter()
        .skip(usize::try_from(page.offset).unwrap_or(usize::MAX))
        .take(page.limit as usize)
        .collect();
    let next = next(page, rows.len()).filter(|n| *n < total as u64);
    Ok(Json(
        json!({ "cis": rows, "total": total, "next_offset": next }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::IncidentState;

    fn cmdb() -> Cmdb {
        crate::cmdb::parse_yaml(
            "test",
            r#"
version: 1
services:
  - id: shop
    tier: 1
    owner: team-shop
    sla: { response: { P1: 15m }, resolution: { P1: 4h } }
    slo: [{ name: availability, objective: 99.9, window: 30d }]
  - { id: blog, tier: 3 }
cis:
  - { id: db, class: database, service: shop, owner: dba }
  - { id: web, class: application, service: shop, depends_on: [db] }
  - { id: cms, class: application, service: blog, depends_on: [db] }
"#,
        )
        .expect("valid CMDB")
    }

    fn incident(p: u8, services: &[&str], state: IncidentState) -> Incident {
        let mut i = Incident::test_default();
        i.priority = Priority::new(p).expect("priority");
        i.impacted_services = services.iter().map(|s| s.to_string()).collect();
        i.state = state;
        i
    }

    #[test]
    fn services_carry_slo_figures_and_their_active_incidents() {
        let c = cmdb();
        let now = Timestamp(40 * 86_400_000);
        // 30 minutes down, ended 10 minutes ago.
        let book = SloBook::build(
            &c,
            &[{
                let mut i = incident(1, &["shop"], IncidentState::Resolved);
                i.opened_at = Timestamp(now.0 - 40 * 60_000);
                i.resolved_at = Some(Timestamp(now.0 - 10 * 60_000));
                i
            }],
            &[],
            &Priority::ALL[..2],
        );
        let open = [
            incident(3, &["shop", "blog"], IncidentState::Open),
            incident(2, &["shop"], IncidentState::Acknowledged),
            incident(1, &["blog"], IncidentState::Resolved),
        ];
        let v = services_view(&c, &book, &KpiBook::default(), &open, &open, now, &[]);
        assert_eq!(v.len(), 2);
        let shop = &v[0];
        assert_eq!(
            (shop.open_incidents, shop.highest_priority),
            (2, Priority::new(2))
        );
        assert_eq!(shop.sla.response_seconds.get("P1"), Some(&900));
        assert_eq!(shop.sla.resolution_seconds.get("P1"), Some(&14_400));
        let slo = &shop.slos[0];
        assert!((slo.objective - 0.999).abs() < 1e-12);
        assert_eq!(slo.window_seconds, 30 * 86_400);
        let f = slo.figures.as_ref().expect("figures");
        assert_eq!(f.bad_seconds, 1800.0);
        assert!((f.error_budget_remaining - (1.0 - 1800.0 / 2592.0)).abs() < 1e-9);
        assert!((f.burn_rates["1h"] - 500.0).abs() < 1e-6);
        assert_eq!(f.burn_rates["5m"], 0.0);
        assert!(f.burn_rates.contains_key("slo"));
        let blog = &v[1];
        assert_eq!(
            (blog.open_incidents, blog.highest_priority),
            (1, Priority::new(3))
        );
        assert!(blog.slos.is_empty());
        // A catalog newer than the book: the SLO is listed without figures.
        let empty = services_view(
            &c,
            &SloBook::default(),
            &KpiBook::default(),
            &[],
            &[],
            now,
            &[],
        );
        assert_eq!(empty[0].slos[0].figures, None);
        assert_eq!(empty[0].open_incidents, 0);
    }

    #[test]
    fn cis_filter_by_class_and_service_sorted_by_id() {
        let c = cmdb();
        let all = ci_summaries(&c, None, None);
        let ids: Vec<&str> = all.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["cms", "db", "web"]);
        let db = &all[1];
        assert_eq!(db.assignment_group.as_deref(), Some("dba"));
        assert_eq!(db.dependent_count, 2);
        // Without an owner of its own, the service's owner takes it.
        assert_eq!(all[2].assignment_group.as_deref(), Some("team-shop"));
        assert_eq!(all[2].depends_on, ["db"]);
        let apps = ci_summaries(&c, Some("application"), Some("shop"));
        assert_eq!(apps.len(), 1);
        assert_eq!(apps[0].id, "web");
        assert!(ci_summaries(&c, None, Some("nope")).is_empty());
    }
}
