//! SLA timers (ITIL service level management): how long an incident has
//! been waiting for a response or a resolution, against the target the
//! service catalog sets for its priority, with the clock paused while the
//! incident is in a pausing state (e.g. waiting on a vendor).
//!
//! A pure function of the incident's times, so a timer shown by the API, a
//! warning on the timeline and an outcome counted in the metrics can never
//! disagree, and a restart or a backdated start recomputes them exactly.

use super::{Interval, merge};
use crate::cmdb::Cmdb;
use crate::domain::{Incident, Priority, Timestamp};
use serde::Serialize;
use std::time::Duration;

/// Where a timer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SlaStatus {
    /// Running, less than half the target used.
    Running,
    /// Running, at least 50 % used.
    Warning50,
    /// Running, at least 75 % used.
    Warning75,
    /// Running or stopped, past the target.
    Breached,
    /// Stopped within the target.
    Met,
}

/// One timer of one incident.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlaTimer {
    pub target_seconds: u64,
    /// Clock time counted so far (pauses excluded).
    pub elapsed_seconds: u64,
    /// When the target is (or was) reached if nothing pauses it again.
    pub due_at: Timestamp,
    /// The instants the clock crossed 50 % and 75 % of the target and the
    /// target itself, if it has: each is recorded once, where it happened.
    pub warned_50_at: Option<Timestamp>,
    pub warned_75_at: Option<Timestamp>,
    pub breached_at: Option<Timestamp>,
    pub status: SlaStatus,
    /// Paused right now.
    pub paused: bool,
}

/// The instant at which `amount` of clock time has run since `start`,
/// skipping `pauses` (merged), if that is before `end`.
fn instant_after(
    start: Timestamp,
    amount: i64,
    pauses: &[Interval],
    end: Timestamp,
) -> Option<Timestamp> {
    let mut t = start.0;
    let mut left = amount;
    for p in pauses {
        if p.end.0 <= t {
            continue;
        }
        let run = p.start.0.max(t) - t;
        if left <= run {
            break;
        }
        left -= run;
        t = p.end.0.max(t);
    }
    // A pause without end (a hold still on) that the amount does not fit
    // before: never reached.
    let at = t.checked_add(left)?;
    (at <= end.0).then_some(Timestamp(at))
}

/// The timer started at `start` (the incident opened), stopped at `stop`
/// (acknowledged for a response timer, resolved for a resolution timer) or
/// still running at `now`, paused during `pauses` (any order; a pause still
/// in progress ends at `now`).
pub fn timer(
    target: Duration,
    start: Timestamp,
    stop: Option<Timestamp>,
    pauses: &[Interval],
    now: Timestamp,
) -> SlaTimer {
    let end = stop.unwrap_or(now).max(start);
    let pauses = merge(pauses);
    let target_ms = i64::try_from(target.as_millis()).unwrap_or(i64::MAX);
    let paused_ms: i64 = pauses
        .iter()
        .map(|p| (p.end.0.min(end.0) - p.start.0.max(start.0)).max(0))
        .sum();
    let elapsed = (end.0 - start.0 - paused_ms).max(0);
    let mark = |share: i64| instant_after(start, target_ms * share / 100, &pauses, end);
    let breached_at = if elapsed > target_ms { mark(100) } else { None };
    let status = match (stop, breached_at) {
        (_, Some(_)) => SlaStatus::Breached,
        (Some(_), None) => SlaStatus::Met,
        (None, None) if elapsed * 4 >= target_ms * 3 => SlaStatus::Warning75,
        (None, None) if elapsed * 2 >= target_ms => SlaStatus::Warning50,
        (None, None) => SlaStatus::Running,
    };
    let paused = stop.is_none() && pauses.iter().any(|p| p.start <= now && now < p.end);
    // Due: the target's instant if reached, else projected from the end
    // with the time still left (a running pause pushes it on).
    let due_at = breached_at
        .or_else(|| instant_after(start, target_ms, &pauses, Timestamp::MAX))
        .unwrap_or(Timestamp(end.0 + (target_ms - elapsed)));
    SlaTimer {
        target_seconds: target.as_secs(),
        elapsed_seconds: u64::try_from(elapsed / 1000).unwrap_or(0),
        due_at,
        warned_50_at: mark(50),
        warned_75_at: mark(75),
        breached_at,
        status,
        paused,
    }
}

/// A target as the catalog would write it: `15m`, `4h`, `1d`, `90s`.
pub fn format_target(secs: u64) -> String {
    match secs {
        0 => "0s".to_string(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// An incident's two timers; `None` where no impacted service sets a
/// target for its priority.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IncidentSla {
    /// Until acknowledged (or resolved, if nobody acknowledged first).
    pub response: Option<SlaTimer>,
    /// Until resolved.
    pub resolution: Option<SlaTimer>,
}

/// The strictest response and resolution targets among `services` for
/// `priority` (an incident answers to every service it hurts).
pub fn targets(
    cmdb: &Cmdb,
    services: &[String],
    priority: Priority,
) -> (Option<Duration>, Option<Duration>) {
    let p = usize::from(priority.get() - 1);
    let mut out: (Option<Duration>, Option<Duration>) = (None, None);
    for s in services.iter().filter_map(|s| cmdb.service_by_id(s)) {
        let pick = |cur: Option<Duration>, new: Option<Duration>| match (cur, new) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        out.0 = pick(out.0, s.response.get(p).copied().flatten());
        out.1 = pick(out.1, s.resolution.get(p).copied().flatten());
    }
    out
}

/// The timers of `inc` at `now`, from the service catalog in `cmdb`; the
/// clocks stop while the incident is on hold for one of the `pause_on`
/// reasons (a hold still in progress pauses until it ends).
pub fn incident_sla(
    cmdb: &Cmdb,
    inc: &Incident,
    now: Timestamp,
    pause_on: &[String],
) -> IncidentSla {
    incident_sla_against(cmdb, inc, &inc.impacted_services, now, pause_on)
}

/// [`incident_sla`] against the targets of `services` only (one service's
/// own compliance, for the KPIs), whatever else the incident impacts.
pub fn incident_sla_against(
    cmdb: &Cmdb,
    inc: &Incident,
    services: &[String],
    now: Timestamp,
    pause_on: &[String],
) -> IncidentSla {
    let (response, resolution) = targets(cmdb, services, inc.priority);
    let responded = inc.acknowledged_at.or(inc.resolved_at);
    let pauses: Vec<Interval> = inc
        .holds
        .iter()
        .filter(|h| pause_on.contains(&h.reason))
        .map(|h| Interval::new(h.start, h.end.unwrap_or(Timestamp::MAX)))
        .collect();
    IncidentSla {
        response: response.map(|t| timer(t, inc.opened_at, responded, &pauses, now)),
        resolution: resolution.map(|t| timer(t, inc.opened_at, inc.resolved_at, &pauses, now)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;
    const T0: i64 = 1_795_000_000_000;

    fn at(min: i64) -> Timestamp {
        Timestamp(T0 + min * MIN)
    }

    fn mins(m: u64) -> Duration {
        Duration::from_secs(m * 60)
    }

    #[test]
    fn running_timer_warns_at_half_and_three_quarters() {
        let t = timer(mins(60), at(0), None, &[], at(20));
        assert_eq!((t.status, t.elapsed_seconds), (SlaStatus::Running, 1200));
        assert_eq!(t.due_at, at(60));
        let t = timer(mins(60), at(0), None, &[], at(30));
        assert_eq!(t.status, SlaStatus::Warning50);
        assert_eq!(t.warned_50_at, Some(at(30)));
        let t = timer(mins(60), at(0), None, &[], at(50));
        assert_eq!(t.status, SlaStatus::Warning75);
        assert_eq!(
            (t.warned_50_at, t.warned_75_at),
            (Some(at(30)), Some(at(45)))
        );
        assert_eq!(t.breached_at, None);
    }

    #[test]
    fn breach_is_at_the_target_instant_and_stays() {
        let t = timer(mins(60), at(0), None, &[], at(90));
        assert_eq!(t.status, SlaStatus::Breached);
        assert_eq!(t.breached_at, Some(at(60)));
        assert_eq!(t.due_at, at(60));
        // Stopped late: still breached, at the same instant.
        let t = timer(mins(60), at(0), Some(at(75)), &[], at(200));
        assert_eq!(
            (t.status, t.breached_at),
            (SlaStatus::Breached, Some(at(60)))
        );
        assert_eq!(t.elapsed_seconds, 75 * 60);
    }

    #[test]
    fn stopped_in_time_is_met() {
        let t = timer(mins(60), at(0), Some(at(59)), &[], at(500));
        assert_eq!(t.status, SlaStatus::Met);
        assert_eq!(t.breached_at, None);
        assert_eq!(t.warned_75_at, Some(at(45)));
    }

    #[test]
    fn pauses_stop_the_clock_and_push_the_due_time() {
        // 60-minute target; paused (waiting on a vendor) from 10 to 40.
        let pauses = [Interval::new(at(10), at(40))];
        let t = timer(mins(60), at(0), None, &pauses, at(50));
        assert_eq!(t.elapsed_seconds, 20 * 60);
        assert_eq!(t.due_at, at(90));
        assert_eq!(t.status, SlaStatus::Running);
        // 50 % is 30 minutes of clock: 10 before the pause, 20 after.
        assert_eq!(t.warned_50_at, None);
        let t = timer(mins(60), at(0), None, &pauses, at(95));
        assert_eq!(
            (t.status, t.breached_at),
            (SlaStatus::Breached, Some(at(90)))
        );
        assert_eq!(
            (t.warned_50_at, t.warned_75_at),
            (Some(at(60)), Some(at(75)))
        );
        // Still paused now: flagged, and the clock does not run.
        let t = timer(
            mins(60),
            at(0),
            None,
            &[Interval::new(at(10), at(1000))],
            at(500),
        );
        assert!(t.paused);
        assert_eq!(t.elapsed_seconds, 10 * 60);
        assert_eq!(t.status, SlaStatus::Running);
        // A hold still on is a pause without end: the due time is the
        // remaining 50 minutes counted from now, and nothing overflows.
        let t = timer(
            mins(60),
            at(0),
            None,
            &[Interval::new(at(10), Timestamp::MAX)],
            at(500),
        );
        assert!(t.paused);
        assert_eq!((t.due_at, t.warned_50_at), (at(550), None));
    }

    #[test]
    fn an_incident_answers_to_the_strictest_target_of_its_services() {
        let cmdb = crate::cmdb::parse_yaml(
            "test",
            r#"
version: 1
services:
  - id: shop
    tier: 1
    sla:
      response: { P1: "15m", P2: "30m" }
      resolution: { P1: "4h" }
  - id: blog
    tier: 3
    sla:
      response: { P1: "10m" }
  - id: reports
    tier: 3
"#,
        )
        .expect("valid CMDB");
        let p1 = Priority::new(1).expect("P1");
        let p3 = Priority::new(3).expect("P3");
        let both = ["shop".to_string(), "blog".to_string()];
        assert_eq!(targets(&cmdb, &both, p1), (Some(mins(10)), Some(mins(240))));
        assert_eq!(targets(&cmdb, &both, p3), (None, None));
        assert_eq!(targets(&cmdb, &["reports".to_string()], p1), (None, None));
        let mut inc = Incident::test_default();
        inc.state = crate::domain::IncidentState::Acknowledged;
        inc.priority = p1;
        inc.impacted_services = both.iter().cloned().collect();
        inc.opened_at = at(0);
        inc.updated_at = at(0);
        // Acknowledged after 12 minutes: the 10-minute response was missed.
        inc.acknowledged_at = Some(at(12));
        let sla = incident_sla(&cmdb, &inc, at(60), &[]);
        let response = sla.response.expect("response timer");
        assert_eq!(
            (response.status, response.breached_at),
            (SlaStatus::Breached, Some(at(10)))
        );
        let resolution = sla.resolution.expect("resolution timer");
        assert_eq!(resolution.status, SlaStatus::Running);
        assert_eq!(resolution.due_at, at(240));
    }

    #[test]
    fn overlapping_and_outside_pauses_count_once() {
        let pauses = [
            Interval::new(at(-30), at(5)),
            Interval::new(at(10), at(20)),
            Interval::new(at(15), at(25)),
        ];
        let t = timer(mins(60), at(0), Some(at(100)), &pauses, at(100));
        // 100 minutes minus 5 (before the start the clock did not run
        // anyway) minus 15 (10..25).
        assert_eq!(t.elapsed_seconds, 80 * 60);
        assert_eq!(t.breached_at, Some(at(80)));
    }
}
