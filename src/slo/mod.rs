//! Service level objectives from the incident timeline (DESIGN §1, §7): a
//! pure computation over time intervals, so that the figures can be
//! recomputed from the store at any time (after a restart, or when an
//! incident's start is backdated) and always agree with it.
//!
//! Downtime of a service is the union of the intervals during which an
//! incident of a qualifying priority impacting it was open; time inside
//! maintenance windows counts neither as bad nor as valid. Everything is in
//! milliseconds internally and reported in seconds.

pub mod sla;

use crate::domain::Timestamp;
use std::time::Duration;

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
        (self.end.0 - self.start.0).max(0)
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
    let down = merge(downtime);
    let maint = merge(maintenance);
    let budget = 1.0 - objective;
    // Error ratio over the last `w`: bad / valid, both outside maintenance.
    let ratio = |w: Duration| -> (f64, f64, f64) {
        let clip = Interval::new(now.saturating_sub(w), now);
        let valid = covered(&[clip], clip, &maint) as f64 / 1000.0;
        let bad = covered(&down, clip, &maint) as f64 / 1000.0;
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
        // The scripted outage: 30 minutes, ended 10 minutes ago.
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

    #[test]
    fn no_downtime_is_a_full_budget() {
        let f = compute(0.999, DAYS_30, at(0), &[], &[]);
        assert_eq!((f.sli, f.budget_remaining, f.bad_seconds), (1.0, 1.0, 0.0));
        assert!(f.burn_rates.iter().all(|(_, b)| *b == 0.0));
        assert_eq!(f.burn_rates.len(), BURN_WINDOWS.len() + 1);
    }
}
