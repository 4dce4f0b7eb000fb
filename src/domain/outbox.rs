//! The outbox vocabulary: which changes of an incident destinations hear
//! of ([`EventKind`], [`changes`]) and which destination hears of which
//! incident ([`Route`]). It lives here, below the engine and the store,
//! because the engine decides what to tell and the store keeps the outbox;
//! `outbound` only executes it.

use super::{Incident, IncidentState, Priority};
use serde::{Deserialize, Serialize};

/// A change of an incident that destinations are told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Opened,
    PriorityChanged,
    Acknowledged,
    OnHold,
    Resumed,
    Resolved,
    Reopened,
}

impl EventKind {
    pub const ALL: [EventKind; 7] = [
        EventKind::Opened,
        EventKind::PriorityChanged,
        EventKind::Acknowledged,
        EventKind::OnHold,
        EventKind::Resumed,
        EventKind::Resolved,
        EventKind::Reopened,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Opened => "opened",
            EventKind::PriorityChanged => "priority_changed",
            EventKind::Acknowledged => "acknowledged",
            EventKind::OnHold => "on_hold",
            EventKind::Resumed => "resumed",
            EventKind::Resolved => "resolved",
            EventKind::Reopened => "reopened",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// What changed from `before` (the version destinations last heard of,
/// `None` for a new incident) to `after`, in the order a person would tell
/// it: a reopen first, then the new priority, acknowledgement, hold, and
/// the resolution last. An incident that opens already resolved (replay,
/// a merge) is reported as opened and resolved.
pub fn changes(before: Option<&Incident>, after: &Incident) -> Vec<EventKind> {
    let mut out = Vec::new();
    let Some(b) = before else {
        out.push(EventKind::Opened);
        if after.acknowledged_at.is_some() {
            out.push(EventKind::Acknowledged);
        }
        if after.current_hold().is_some() {
            out.push(EventKind::OnHold);
        }
        if after.state == IncidentState::Resolved {
            out.push(EventKind::Resolved);
        }
        return out;
    };
    let reopened = b.state == IncidentState::Resolved && after.state.is_active();
    if reopened {
        out.push(EventKind::Reopened);
    }
    if b.priority != after.priority && after.state.is_active() {
        out.push(EventKind::PriorityChanged);
    }
    if after.state == IncidentState::Acknowledged
        && (b.state != IncidentState::Acknowledged || reopened)
    {
        out.push(EventKind::Acknowledged);
    }
    let (held_before, held_after) = (b.current_hold().is_some(), after.current_hold().is_some());
    if after.state.is_active() {
        if held_after && (!held_before || after.holds.len() > b.holds.len()) {
            out.push(EventKind::OnHold);
        } else if held_before && !held_after {
            out.push(EventKind::Resumed);
        }
    }
    if after.state == IncidentState::Resolved && b.state != IncidentState::Resolved {
        out.push(EventKind::Resolved);
    }
    out
}

/// Which incidents go to which destination: by impacted business service,
/// by priority and by event (a route with no condition takes everything).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Route {
    /// Any of these impacted services (empty: any incident).
    pub services: Vec<String>,
    /// This priority or more urgent (`P2` takes P1 and P2).
    pub max_priority: Option<Priority>,
    /// Only these events (empty: all).
    pub events: Vec<EventKind>,
}

impl Route {
    /// Does this route carry `kind` of `inc`? Priorities are only ever
    /// raised and impact only widens, so an incident routed at its opening
    /// stays routed for its acknowledgement and resolution.
    pub fn matches(&self, inc: &Incident, kind: EventKind) -> bool {
        let service = self.services.is_empty()
            || inc
                .impacted_services
                .iter()
                .any(|s| self.services.contains(s));
        let priority = self.max_priority.is_none_or(|p| inc.priority <= p);
        let event = self.events.is_empty() || self.events.contains(&kind);
        service && priority && event
    }
}

/// How long a new incident waits before a destination hears of it, by
/// priority: long enough for the rest of a storm to arrive, so that the
/// incident it ends up in is the one announced (Alertmanager's
/// `group_wait` does the same for its groups). Zero: at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Settle([std::time::Duration; 5]);

impl Settle {
    /// The same delay for every priority.
    pub fn uniform(d: std::time::Duration) -> Settle {
        Settle([d; 5])
    }

    /// This one, with `d` for priority `p`.
    #[must_use]
    pub fn with(mut self, p: Priority, d: std::time::Duration) -> Settle {
        self.0[usize::from(p.get() - 1)] = d;
        self
    }

    pub fn of(&self, p: Priority) -> std::time::Duration {
        self.0[usize::from(p.get() - 1)]
    }

    /// The longest delay of any priority.
    pub fn max(&self) -> std::time::Duration {
        self.0.iter().copied().max().unwrap_or_default()
    }
}

/// A destination as the engine sees it: what it hears of, and after
/// how long a new incident is announced to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Destination {
    pub name: String,
    pub routes: Vec<Route>,
    pub settle: Settle,
}

impl Destination {
    /// Everything, at once (tests).
    pub fn all(name: &str) -> Destination {
        Destination {
            name: name.into(),
            routes: vec![Route::default()],
            settle: Settle::default(),
        }
    }
}

/// Routes of one destination: any match sends.
pub fn any_matches(routes: &[Route], inc: &Incident, kind: EventKind) -> bool {
    routes.iter().any(|r| r.matches(inc, kind))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Hold, Timestamp};

    /// A P1 incident impacting checkout and search.
    fn incident() -> Incident {
        let mut i = Incident::test_default();
        i.priority = Priority::new(1).expect("P1");
        i.impacted_services = vec!["checkout".into(), "search".into()].into();
        i.opened_at = Timestamp(1_795_000_000_000);
        i
    }

    #[test]
    fn a_new_incident_is_opened_and_whatever_it_already_is() {
        let mut i = incident();
        assert_eq!(changes(None, &i), [EventKind::Opened]);
        i.state = IncidentState::Resolved;
        assert_eq!(changes(None, &i), [EventKind::Opened, EventKind::Resolved]);
    }

    #[test]
    fn transitions_are_told_in_order() {
        let open = incident();
        let mut acked = open.clone();
        acked.state = IncidentState::Acknowledged;
        acked.acknowledged_at = Some(Timestamp(1));
        acked.priority = Priority::new(2).expect("P2");
        assert_eq!(
            changes(Some(&open), &acked),
            [EventKind::PriorityChanged, EventKind::Acknowledged]
        );
        // Nothing new: nothing to send.
        assert_eq!(changes(Some(&acked), &acked), []);
        let mut held = acked.clone();
        held.holds.push(Hold {
            reason: "awaiting_vendor".into(),
            start: Timestamp(2),
            end: None,
            by: None,
        });
        assert_eq!(changes(Some(&acked), &held), [EventKind::OnHold]);
        let mut resumed = held.clone();
        resumed.holds[0].end = Some(Timestamp(3));
        assert_eq!(changes(Some(&held), &resumed), [EventKind::Resumed]);
        let mut resolved = held.clone();
        resolved.state = IncidentState::Resolved;
        resolved.holds[0].end = Some(Timestamp(4));
        // Resolving ends the hold: only the resolution is news.
        assert_eq!(changes(Some(&held), &resolved), [EventKind::Resolved]);
        let mut reopened = resolved.clone();
        reopened.state = IncidentState::Open;
        reopened.acknowledged_at = None;
        assert_eq!(changes(Some(&resolved), &reopened), [EventKind::Reopened]);
    }

    #[test]
    fn routes_select_by_service_priority_and_event() {
        let inc = incident();
        let p = |n| Priority::new(n).expect("priority");
        assert!(Route::default().matches(&inc, EventKind::Opened));
        let shop = Route {
            services: vec!["checkout".into()],
            ..Route::default()
        };
        assert!(shop.matches(&inc, EventKind::Resolved));
        let blog = Route {
            services: vec!["blog".into()],
            ..Route::default()
        };
        assert!(!blog.matches(&inc, EventKind::Opened));
        let urgent = Route {
            max_priority: Some(p(2)),
            ..Route::default()
        };
        assert!(urgent.matches(&inc, EventKind::Opened));
        let mut p3 = inc.clone();
        p3.priority = p(3);
        assert!(!urgent.matches(&p3, EventKind::Opened));
        let opens = Route {
            events: vec![EventKind::Opened, EventKind::Resolved],
            ..Route::default()
        };
        assert!(opens.matches(&inc, EventKind::Resolved));
        assert!(!opens.matches(&inc, EventKind::Acknowledged));
        assert!(any_matches(&[blog.clone(), shop], &inc, EventKind::Opened));
        assert!(!any_matches(&[blog], &inc, EventKind::Opened));
        assert!(!any_matches(&[], &inc, EventKind::Opened));
    }
}
