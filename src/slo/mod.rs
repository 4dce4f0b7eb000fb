//! Service level objectives from the incident timeline (DESIGN §1, §7): a
//! pure computation over time intervals, so that the figures can be
//! recomputed from the store at any time (after a restart, or when an
//! incident's start is backdated) and always agree with it.
//!
//! Downtime of a service is the union of the intervals during which an
//! incident of a qualifying priority impacting it was open; time inside
//! maintenance windows counts neither as bad nor as valid. Everything is in
//! milliseconds internally and reported in seconds.

pub mod export;
pub mod sla;

use crate::change::ChangeRecord;
use crate::cmdb::Cmdb;
use crate::domain::{Incident, Priority, Timestamp};
use rustc_hash::FxHashMap;
use std::time::Duration;

/// How SLO downtime is read from the incident record (`[slo]`).
#[derive(Debug, Clone, PartialEq)]
pub struct SloConfig {
    /// Incidents of these priorities count as downtime of the services
    /// they impact.
    pub priorities: Vec<Priority>,
    /// How often the downtime intervals are re-read from the store.
    pub refresh: Duration,
}

impl Default for SloConfig {
    fn default() -> Self {
        SloConfig {
            priorities: Priority::ALL[..2].to_vec(),
            refresh: Duration::from_secs(5),
        }
    }
}

/// A half-open time interval `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    pub start: Timestamp,
    pub end: Timestamp,
}

impl Interval {
    pub fn new(start: Timestamp, end: Timestamp) -> Interval {
        Interval { start, end }
    }

    fn len(self) -> i64 {
        self.end.0.saturating_sub(self.start.0).max(0)
    }
}

/// The windows burn rates are reported over (label `window`); `slo` is the
/// SLO's own window.
pub const BURN_WINDOWS: [(&str, Duration); 7] = [
    ("5m", Duration::from_secs(5 * 60)),
    ("30m", Duration::from_secs(30 * 60)),
    ("1h", Duration::from_secs(3600)),
    ("2h", Duration::from_secs(2 * 3600)),
    ("6h", Duration::from_secs(6 * 3600)),
    ("1d", Duration::from_secs(86_400)),
    ("3d", Duration::from_secs(3 * 86_400)),
];

/// Sorted, non-overlapping intervals covering exactly what `intervals`
/// cover (empty ones dropped).
pub fn merge(intervals: &[Interval]) -> Vec<Interval> {
    let mut v: Vec<Interval> = intervals.iter().copied().filter(|i| i.len() > 0).collect();
    v.sort_by_key(|i| (i.start, i.end));
    let mut out: Vec<Interval> = Vec::with_capacity(v.len());
    for i in v {
        match out.last_mut() {
            Some(last) if i.start <= last.end => last.end = last.end.max(i.end),
            _ => out.push(i),
        }
    }
    out
}

/// Length of `merged` (from [`merge`]) inside `clip`, minus what `minus`
/// (also merged) covers.
fn covered(merged: &[Interval], clip: Interval, minus: &[Interval]) -> i64 {
    let mut total = 0;
    for i in merged {
        let s = i.start.max(clip.start);
        let e = i.end.min(clip.end);
        if e <= s {
            continue;
        }
        let mut len = e.0 - s.0;
        for m in minus {
            let ms = m.start.max(s);
            let me = m.end.min(e);
            if me > ms {
                len -= me.0 - ms.0;
            }
        }
        total += len;
    }
    total
}

/// What one SLO reports at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct SloFigures {
    /// Seconds of the SLO window outside maintenance.
    pub valid_seconds: f64,
    /// Seconds of downtime in the window, outside maintenance.
    pub bad_seconds: f64,
    /// Availability over the window: 1 − bad / valid (1 with nothing valid).
    pub sli: f64,
    /// ((1 − T) − (1 − A)) / (1 − T); below 0 once the budget is overspent.
    pub budget_remaining: f64,
    /// Burn rate per window of [`BURN_WINDOWS`], then `("slo", …)` for the
    /// whole window: the error ratio over the window divided by 1 − T.
    pub burn_rates: Vec<(&'static str, f64)>,
}

/// The figures of an SLO with `objective` (a ratio, e.g. 0.999) over
/// `window`, at `now`, for the given downtime and maintenance intervals
/// (open incidents end at `now`; any order, overlaps allowed).
pub fn compute(
    objective: f64,
    window: Duration,
    now: Timestamp,
    downtime: &[Interval],
    maintenance: &[Interval],
) -> SloFigures {
    compute_merged(
        objective,
        window,
        now,
        &merge(downtime),
        &merge(maintenance),
    )
}

/// [`compute`] over intervals already [`merge`]d: what a scrape runs, so
/// that it does no sorting. An interval may end in the future (an incident
/// still open is stored as ending at [`Timestamp::MAX`]): only the part up
/// to `now` counts.
pub fn compute_merged(
    objective: f64,
    window: Duration,
    now: Timestamp,
    down: &[Interval],
    maint: &[Interval],
) -> SloFigures {
    let budget = 1.0 - objective;
    // Error ratio over the last `w`: bad / valid, both outside maintenance.
    let ratio = |w: Duration| -> (f64, f64, f64) {
        let clip = Interval::new(now.saturating_sub(w), now);
        let valid = covered(&[clip], clip, maint) as f64 / 1000.0;
        let bad = covered(down, clip, maint) as f64 / 1000.0;
        let r = if valid > 0.0 { bad / valid } else { 0.0 };
        (valid, bad, r)
    };
    let burn = |r: f64| if budget > 0.0 { r / budget } else { 0.0 };
    let (valid_seconds, bad_seconds, error) = ratio(window);
    let sli = 1.0 - error;
    let budget_remaining = if budget > 0.0 {
        (budget - error) / budget
    } else {
        0.0
    };
    let mut burn_rates: Vec<(&'static str, f64)> = BURN_WINDOWS
        .iter()
        .map(|(name, w)| (*name, burn(ratio(*w).2)))
        .collect();
    burn_rates.push(("slo", burn(error)));
    SloFigures {
        valid_seconds,
        bad_seconds,
        sli,
        budget_remaining,
        burn_rates,
    }
}

/// Seconds of downtime and of valid time (both outside maintenance) in
/// `[since, now)`: what the `_seconds_total` counters count from `since`.
pub fn seconds_between(
    since: Timestamp,
    now: Timestamp,
    down: &[Interval],
    maint: &[Interval],
) -> (f64, f64) {
    let clip = Interval::new(since, now.max(since));
    (
        covered(down, clip, maint) as f64 / 1000.0,
        covered(&[clip], clip, maint) as f64 / 1000.0,
    )
}

/// One SLO of the service catalog with the intervals that feed it.
#[derive(Debug, Clone, PartialEq)]
pub struct SloSeries {
    pub service: String,
    pub slo: String,
    pub objective: f64,
    pub window: Duration,
    /// Merged downtime; an incident still open ends at [`Timestamp::MAX`].
    pub downtime: Vec<Interval>,
    /// Merged maintenance windows.
    pub maintenance: Vec<Interval>,
}

impl SloSeries {
    pub fn figures(&self, now: Timestamp) -> SloFigures {
        compute_merged(
            self.objective,
            self.window,
            now,
            &self.downtime,
            &self.maintenance,
        )
    }
}

/// Every SLO of the catalog with its downtime, built from the incident
/// record: the input of each scrape, rebuilt from the store periodically.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SloBook {
    pub series: Vec<SloSeries>,
}

/// How far back the store must be read for `cmdb`'s SLOs at any instant:
/// the longest SLO window, and at least the longest burn-rate window.
pub fn horizon(cmdb: &Cmdb) -> Duration {
    cmdb.services()
        .iter()
        .flat_map(|s| s.slos.iter().map(|o| o.window))
        .chain(BURN_WINDOWS.iter().map(|(_, w)| *w))
        .max()
        .unwrap_or(Duration::ZERO)
}

impl SloBook {
    /// Downtime per service from `incidents` (those with a priority in
    /// `qualifying` count, over `[opened_at, resolved_at)`, for every
    /// service they impact), and maintenance from the planned `changes`
    /// (a change's window counts for every service its CI's failure would
    /// hurt). Services without an SLO are left out.
    pub fn build(
        cmdb: &Cmdb,
        incidents: &[Incident],
        changes: &[ChangeRecord],
        qualifying: &[Priority],
    ) -> SloBook {
        let services = cmdb.services();
        let index: FxHashMap<&str, usize> = services
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.as_str(), i))
            .collect();
        let mut down: Vec<Vec<Interval>> = vec![Vec::new(); services.len()];
        let mut maint: Vec<Vec<Interval>> = vec![Vec::new(); services.len()];
        for inc in incidents
            .iter()
            .filter(|i| qualifying.contains(&i.priority))
        {
            let iv = Interval::new(inc.opened_at, inc.resolved_at.unwrap_or(Timestamp::MAX));
            for s in &inc.impacted_services {
                if let Some(&i) = index.get(s.as_str()) {
                    down[i].push(iv);
                }
            }
        }
        for c in changes.iter().filter(|c| c.state.is_planned()) {
            let Some(ci) = cmdb.ci_by_id(&c.ci) else {
                continue;
            };
            for s in cmdb.impacted_services(ci) {
                if let Some(&i) = index.get(s.id.as_str()) {
                    maint[i].push(Interval::new(c.start, c.end));
                }
            }
        }
        let mut series = Vec::new();
        for (i, svc) in services.iter().enumerate() {
            if svc.slos.is_empty() {
                continue;
            }
            let downtime = merge(&down[i]);
            let maintenance = merge(&maint[i]);
            for slo in &svc.slos {
                series.push(SloSeries {
                    service: svc.id.clone(),
                    slo: slo.name.clone(),
                    objective: slo.objective,
                    window: slo.window,
                    downtime: downtime.clone(),
                    maintenance: maintenance.clone(),
                });
            }
        }
        SloBook { series }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;
    const T0: i64 = 1_795_000_000_000;
    const DAYS_30: Duration = Duration::from_secs(30 * 86_400);

    fn at(min: i64) -> Timestamp {
        Timestamp(T0 + min * MIN)
    }

    fn iv(a: i64, b: i64) -> Interval {
        Interval::new(at(a), at(b))
    }

    fn burn(f: &SloFigures, w: &str) -> f64 {
        f.burn_rates
            .iter()
            .find(|(n, _)| *n == w)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no window {w}"))
    }

    #[test]
    fn thirty_minutes_down_on_a_999_service_leaves_0_3056_of_the_budget() {
        // The issue's scripted outage: 30 minutes, ended 10 minutes ago.
        let f = compute(0.999, DAYS_30, at(100), &[iv(60, 90)], &[]);
        assert_eq!(f.bad_seconds, 1800.0);
        assert_eq!(f.valid_seconds, 2_592_000.0);
        assert!((f.budget_remaining - (1.0 - 1800.0 / 2592.0)).abs() < 1e-9);
        assert!((f.budget_remaining - 0.3056).abs() < 0.001);
        assert!((f.sli - (1.0 - 1800.0 / 2_592_000.0)).abs() < 1e-12);
        // Burn over 1h: 30 of the last 60 minutes were bad, 0.5 / 0.001.
        assert!((burn(&f, "1h") - 500.0).abs() < 1e-6);
        // The last 5 minutes were clean.
        assert_eq!(burn(&f, "5m"), 0.0);
        // Over 2h: 30 of 120 minutes.
        assert!((burn(&f, "2h") - 250.0).abs() < 1e-6);
        assert!((burn(&f, "slo") - 1800.0 / 2592.0).abs() < 1e-9);
    }

    #[test]
    fn overlapping_incidents_count_once() {
        // Two incidents on one service overlapping by 10 minutes, and a
        // third inside the first: 50 minutes of downtime, not 80.
        let f = compute(
            0.99,
            DAYS_30,
            at(1000),
            &[iv(0, 30), iv(20, 50), iv(5, 15)],
            &[],
        );
        assert_eq!(f.bad_seconds, 50.0 * 60.0);
    }

    #[test]
    fn maintenance_is_neither_bad_nor_valid() {
        // Down 60 minutes, of which 20 inside a maintenance window of 40.
        let f = compute(0.999, DAYS_30, at(1000), &[iv(100, 160)], &[iv(140, 180)]);
        assert_eq!(f.bad_seconds, 40.0 * 60.0);
        assert_eq!(f.valid_seconds, 2_592_000.0 - 40.0 * 60.0);
        // Overlapping maintenance windows are merged before subtracting.
        let g = compute(
            0.999,
            DAYS_30,
            at(1000),
            &[iv(100, 160)],
            &[iv(140, 180), iv(150, 170)],
        );
        assert_eq!(g, f);
    }

    #[test]
    fn budget_goes_below_zero_when_overspent() {
        // 0.1 % of 30 days is 43.2 minutes; 86.4 minutes down spends twice.
        let f = compute(
            0.999,
            DAYS_30,
            at(10_000),
            &[Interval::new(at(0), Timestamp(T0 + 5_184_000))],
            &[],
        );
        assert!((f.budget_remaining + 1.0).abs() < 1e-9, "{f:?}");
    }

    #[test]
    fn only_the_window_counts_and_open_incidents_end_now() {
        // Down since 40 days ago and still open (ends at now): the whole
        // window is bad; older downtime does not count twice.
        let now = at(40 * 1440);
        let f = compute(0.999, DAYS_30, now, &[Interval::new(at(0), now)], &[]);
        assert_eq!(f.bad_seconds, f.valid_seconds);
        assert_eq!(f.sli, 0.0);
        assert!((burn(&f, "5m") - 1000.0).abs() < 1e-6);
        // A backdated start only matters inside the window.
        let g = compute(0.999, DAYS_30, now, &[Interval::new(at(-5000), now)], &[]);
        assert_eq!(f, g);
    }

    fn catalog() -> Cmdb {
        crate::cmdb::parse_yaml(
            "test",
            r#"
version: 1
services:
  - id: shop
    tier: 1
    slo:
      - { name: availability, objective: 99.9, window: 30d }
      - { name: weekly, objective: 99, window: 7d }
  - id: blog
    tier: 3
    slo:
      - { name: availability, objective: 99.5, window: 30d }
  - id: reports
    tier: 3
cis:
  - { id: db, service: shop }
  - { id: web, service: shop, depends_on: [db] }
  - { id: cms, service: blog, depends_on: [db] }
"#,
        )
        .expect("valid CMDB")
    }

    fn incident(priority: u8, services: &[&str], open: i64, end: Option<i64>) -> Incident {
        let mut inc = crate::domain::Incident::test_default();
        inc.priority = Priority::new(priority).expect("priority");
        inc.impacted_services = services.iter().map(|s| s.to_string()).collect();
        inc.opened_at = at(open);
        inc.resolved_at = end.map(at);
        inc
    }

    #[test]
    fn the_book_takes_qualifying_incidents_per_service_and_changes_as_maintenance() {
        let cmdb = catalog();
        let p12 = [Priority::new(1).expect("P1"), Priority::new(2).expect("P2")];
        let incidents = [
            // P1 on both services, 30 minutes.
            incident(1, &["blog", "shop"], 0, Some(30)),
            // P3: does not count.
            incident(3, &["shop"], 100, Some(200)),
            // P2 still open on the blog.
            incident(2, &["blog"], 300, None),
            // A service without SLO is ignored.
            incident(1, &["reports"], 0, Some(10)),
        ];
        let changes = [
            // Approved work on the database: maintenance for shop and blog.
            crate::change::ChangeRecord {
                id: "CHG1".into(),
                ci: "db".into(),
                state: crate::change::ChangeState::Approved,
                start: at(20),
                end: at(40),
                summary: String::new(),
            },
            // Rejected changes are no maintenance.
            crate::change::ChangeRecord {
                id: "CHG2".into(),
                ci: "web".into(),
                state: crate::change::ChangeState::Rejected,
                start: at(0),
                end: at(1000),
                summary: String::new(),
            },
        ];
        let book = SloBook::build(&cmdb, &incidents, &changes, &p12);
        let names: Vec<(&str, &str)> = book
            .series
            .iter()
            .map(|s| (s.service.as_str(), s.slo.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("shop", "availability"),
                ("shop", "weekly"),
                ("blog", "availability")
            ]
        );
        let shop = &book.series[0];
        assert_eq!(shop.downtime, [iv(0, 30)]);
        assert_eq!(shop.maintenance, [iv(20, 40)]);
        assert!((shop.objective - 0.999).abs() < 1e-12);
        let blog = &book.series[2];
        assert_eq!(
            blog.downtime,
            [iv(0, 30), Interval::new(at(300), Timestamp::MAX)]
        );
        // At minute 400: shop lost 20 minutes (10 were maintenance), the
        // blog 20 + 100 (its open incident runs until now).
        let f = shop.figures(at(400));
        assert_eq!(f.bad_seconds, 20.0 * 60.0);
        let f = blog.figures(at(400));
        assert_eq!(f.bad_seconds, 120.0 * 60.0);
        assert_eq!(horizon(&cmdb), DAYS_30);
        // Counters from minute 10: shop down 10..20 only (20..30 maintenance).
        assert_eq!(
            seconds_between(at(10), at(400), &shop.downtime, &shop.maintenance),
            (600.0, (390.0 - 20.0) * 60.0)
        );
    }

    #[test]
    fn no_downtime_is_a_full_budget() {
        let f = compute(0.999, DAYS_30, at(0), &[], &[]);
        assert_eq!((f.sli, f.budget_remaining, f.bad_seconds), (1.0, 1.0, 0.0));
        assert!(f.burn_rates.iter().all(|(_, b)| *b == 0.0));
        assert_eq!(f.burn_rates.len(), BURN_WINDOWS.len() + 1);
    }
}
