//! Which incidents go to which destination: by impacted business service,
//! by priority and by event (a route with no condition takes everything).

use super::EventKind;
use crate::domain::{Incident, Priority};

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

/// Routes of one destination: any match sends.
pub fn any_matches(routes: &[Route], inc: &Incident, kind: EventKind) -> bool {
    routes.iter().any(|r| r.matches(inc, kind))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::tests::incident;

    #[test]
    fn routes_select_by_service_priority_and_event() {
        let inc = incident(); // P1, impacts checkout and search
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
