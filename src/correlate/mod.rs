//! Where an alert belongs: its correlation key. Alerts with the same key join
//! the same active incident. Without a CMDB the key is the alert name on the
//! thing that alerts (the `ci` label, else the host of `instance`, else a
//! `host`/`hostname` label); an alert that names no target is its own key.
//! With a CMDB, the key names the bound CI, and [`topology`] groups alerts
//! on related CIs (DESIGN §3).

pub mod topology;

use crate::domain::{Alert, instance_host};

/// The thing an alert is about, most specific first.
pub fn target(alert: &Alert) -> Option<String> {
    let l = &alert.labels;
    if let Some(ci) = l.get("ci").filter(|v| !v.is_empty()) {
        // `|` + this is `CI_KEY`: bound or not, a key names a CI alike.
        return Some(format!("ci:{ci}"));
    }
    if let Some(inst) = l.get("instance").filter(|v| !v.is_empty()) {
        return Some(format!("host:{}", instance_host(inst)));
    }
    l.get("host")
        .or_else(|| l.get("hostname"))
        .filter(|v| !v.is_empty())
        .map(|h| format!("host:{h}"))
}

/// What joins the alert name and the CI in a key: `<alertname>|ci:<ci>`.
pub const CI_KEY: &str = "|ci:";

/// The key once the alert is bound: the same alert name on the same CMDB CI.
pub fn correlation_key_for(alert: &Alert, ci: Option<&str>) -> String {
    match ci {
        Some(ci) => format!("{}{CI_KEY}{ci}", alert.alertname()),
        None => correlation_key(alert),
    }
}

/// The CI a key names, given the alert's name: the CMDB CI it was bound
/// to, or its `ci` label when that names no CI of the CMDB (`None` for an
/// alert keyed by host or fingerprint). The inverse of
/// [`correlation_key_for`], so the store's record of a binding can be read.
pub fn ci_of_key<'a>(key: &'a str, alertname: &str) -> Option<&'a str> {
    key.strip_prefix(alertname)?
        .strip_prefix(CI_KEY)
        .filter(|ci| !ci.is_empty())
}

pub fn correlation_key(alert: &Alert) -> String {
    match target(alert) {
        Some(t) => format!("{}|{t}", alert.alertname()),
        None => format!("fp:{}", alert.fingerprint),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AlertStatus, Fingerprint, LabelSet, Source, Timestamp};

    fn alert(labels: &[(&str, &str)]) -> Alert {
        let labels: LabelSet = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Alert {
            fingerprint: Fingerprint::of_labels(&labels),
            status: AlertStatus::Firing,
            labels,
            annotations: LabelSet::new(),
            starts_at: Timestamp(0),
            ends_at: None,
            source: Source::Api,
            generator_url: String::new(),
        }
    }

    #[test]
    fn hosts_from_instances() {
        assert_eq!(instance_host("pg-3-a:9187"), "pg-3-a");
        assert_eq!(instance_host("10.0.0.1:9100"), "10.0.0.1");
        assert_eq!(instance_host("[::1]:9100"), "::1");
        assert_eq!(
            instance_host("https://api.example.com:443/health"),
            "api.example.com"
        );
        assert_eq!(instance_host("db-1"), "db-1");
    }

    #[test]
    fn keys_group_same_alert_on_same_target() {
        let a = alert(&[
            ("alertname", "HostDown"),
            ("instance", "h1:9100"),
            ("job", "node"),
        ]);
        let b = alert(&[
            ("alertname", "HostDown"),
            ("instance", "h1:9200"),
            ("job", "other"),
        ]);
        let c = alert(&[("alertname", "HostDown"), ("instance", "h2:9100")]);
        assert_eq!(correlation_key(&a), "HostDown|host:h1");
        assert_eq!(correlation_key(&a), correlation_key(&b));
        assert_ne!(correlation_key(&a), correlation_key(&c));
        let d = alert(&[("alertname", "X"), ("ci", "pg-1"), ("instance", "h1:1")]);
        assert_eq!(correlation_key(&d), "X|ci:pg-1");
        let e = alert(&[("alertname", "Lonely")]);
        assert_eq!(correlation_key(&e), format!("fp:{}", e.fingerprint));
    }

    #[test]
    fn the_ci_is_read_back_from_the_key() {
        let a = alert(&[("alertname", "PgDown|x"), ("instance", "h1:1")]);
        let bound = correlation_key_for(&a, Some("pg-main"));
        assert_eq!(ci_of_key(&bound, a.alertname()), Some("pg-main"));
        // Keyed by host or fingerprint: no CI.
        assert_eq!(ci_of_key(&correlation_key(&a), a.alertname()), None);
        let lonely = alert(&[("alertname", "Lonely")]);
        assert_eq!(ci_of_key(&correlation_key(&lonely), "Lonely"), None);
        // A `ci` label the CMDB does not know still names it.
        let d = alert(&[("alertname", "X"), ("ci", "pg-1")]);
        assert_eq!(ci_of_key(&correlation_key(&d), "X"), Some("pg-1"));
        // Another alert name never reads as this one's.
        assert_eq!(ci_of_key(&bound, "PgDown"), None);
    }
}
