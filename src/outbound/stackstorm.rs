//! StackStorm remediation: when an incident opens (or reopens), run a
//! configured action through the StackStorm API and follow it to its end,
//! the incident's timeline telling each step ("remediation ops.restart
//! requested", "running", "succeeded in 42 s", "failed: …"); optionally
//! acknowledge or resolve the incident when it succeeds.
//!
//! Guardrails, so that automation never runs away: at most one execution
//! per incident and opening (a retry after a lost answer finds the
//! execution it started, by its action and parameters, rather than start
//! another), a cool-down per root CI (a flapping alert that reopens its
//! incident does not restart the same service every minute), a limit of
//! executions an hour for the destination, and a dry run that records
//! what would have run.
//!
//! The API (https://api.stackstorm.com/, "Executions"): `POST
//! /v1/executions` `{"action", "parameters"}` with `St2-Api-Key` → 201 and
//! the execution (`id`, `status`); `GET /v1/executions/{id}`; statuses
//! `requested`, `scheduled`, `running`, …, ending in `succeeded`, `failed`,
//! `timeout`, `canceled` or `abandoned`; `DELETE /v1/executions/{id}`
//! cancels.

use super::destination::Destination;
use super::link::{Answer, Link};
use super::template::Template;
use super::{EventKind, Method, Request};
use crate::domain::{Clock, Incident, IncidentId, LabelSet, Timestamp};
use crate::incident::actions::{Action, Actions};
use crate::incident::task::Operation;
use crate::store::{BoxFuture, OutboxRow, StoreError};
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What a successful remediation does to its incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnSuccess {
    Acknowledge,
    Resolve,
}

/// A remediation's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Remediation {
    /// `pack.action`.
    pub action: String,
    /// The action's parameters, templates over the incident.
    pub parameters: Vec<(String, Template)>,
    pub dry_run: bool,
    /// No second execution for the same root CI within this.
    pub cool_down: Duration,
    /// Executions an hour, at most (this destination's).
    pub per_hour: u32,
    /// How long an execution is followed before it is cancelled.
    pub execution_timeout: Duration,
    /// How often executions are looked at.
    pub follow_every: Duration,
    pub on_success: Option<OnSuccess>,
}

/// The reference stored for an incident: the execution being followed
/// (`run:<id>:<reopen count>:<started ms>`) or followed to its end
/// (`done:<id>:<reopen count>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ref {
    Running {
        id: String,
        opening: u32,
        started: Timestamp,
    },
    Done {
        id: String,
        opening: u32,
    },
}

impl Ref {
    pub fn parse(s: &str) -> Option<Ref> {
        let mut p = s.split(':');
        match (p.next()?, p.next()?, p.next()?.parse().ok()?) {
            ("run", id, opening) => Some(Ref::Running {
                id: id.to_string(),
                opening,
                started: Timestamp(p.next()?.parse().ok()?),
            }),
            ("done", id, opening) => Some(Ref::Done {
                id: id.to_string(),
                opening,
            }),
            _ => None,
        }
    }

    pub fn encode(&self) -> String {
        match self {
            Ref::Running {
                id,
                opening,
                started,
            } => format!("run:{id}:{opening}:{}", started.0),
            Ref::Done { id, opening } => format!("done:{id}:{opening}"),
        }
    }

    fn opening(&self) -> u32 {
        match self {
            Ref::Running { opening, .. } | Ref::Done { opening, .. } => *opening,
        }
    }
}

/// The parameters rendered for `inc` (with its first alert's `labels`),
/// as StackStorm takes them.
pub fn parameters(r: &Remediation, inc: &Incident, labels: Option<&LabelSet>) -> Value {
    let m: Map<String, Value> = r
        .parameters
        .iter()
        .map(|(k, t)| (k.clone(), json!(t.render_with(inc, labels))))
        .collect();
    Value::Object(m)
}

/// `POST /v1/executions`.
pub fn run(r: &Remediation, params: &Value) -> Request {
    Request::post(
        "/v1/executions",
        json!({ "action": r.action, "parameters": params }),
    )
}

/// The latest executions of the action, to find one whose answer was lost.
pub fn recent(r: &Remediation) -> Request {
    Request::get(format!(
        "/v1/executions?action={}&limit=50",
        super::poll::escape(&r.action)
    ))
}

/// Among `list` (newest first), the execution of these parameters
/// started at or after `since`, other than `earlier` (a previous
/// opening's).
pub fn lost_run(
    list: &Value,
    params: &Value,
    since: Timestamp,
    earlier: Option<&str>,
) -> Option<String> {
    list.as_array()?
        .iter()
        .filter(|e| e["parameters"] == *params && e["id"].as_str() != earlier)
        .find(|e| {
            e["start_timestamp"]
                .as_str()
                .and_then(|t| Timestamp::parse_rfc3339(t).ok().flatten())
                .is_some_and(|t| t.0 >= since.0)
        })
        .and_then(|e| e["id"].as_str().map(str::to_string))
}

/// Where an execution stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Not started yet (requested, scheduled, delayed, …).
    Waiting,
    Running,
    Succeeded {
        seconds: u64,
    },
    /// Ended otherwise: its status and what its result says.
    Failed {
        reason: String,
    },
}

/// The phase of a `GET /v1/executions/{id}` answer.
pub fn phase(e: &Value) -> Phase {
    let status = e["status"].as_str().unwrap_or("unknown");
    let seconds = || {
        let t = |k: &str| {
            e[k].as_str()
                .and_then(|t| Timestamp::parse_rfc3339(t).ok().flatten())
        };
        match (t("start_timestamp"), t("end_timestamp")) {
            (Some(a), Some(b)) => u64::try_from((b.0 - a.0 + 500) / 1000).unwrap_or(0),
            _ => 0,
        }
    };
    match status {
        "succeeded" => Phase::Succeeded { seconds: seconds() },
        "failed" | "timeout" | "canceled" | "abandoned" => {
            let r = &e["result"];
            let said = ["error", "stderr", "message"].iter().find_map(|k| {
                r[*k]
                    .as_str()
                    .or_else(|| r["result"][*k].as_str())
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
            });
            let reason = match (status, said) {
                ("failed", Some(s)) => super::truncate(s, 300),
                ("failed", None) => "the action failed".into(),
                ("timeout", _) => "the action timed out in StackStorm".into(),
                ("canceled", _) => "cancelled in StackStorm".into(),
                _ => "abandoned by StackStorm".into(),
            };
            Phase::Failed { reason }
        }
        "running" | "canceling" | "pausing" | "paused" | "resuming" => Phase::Running,
        _ => Phase::Waiting,
    }
}

/// The guardrails' memory: when each root CI last had an execution, and
/// the executions of the last hour.
#[derive(Default)]
struct Guard {
    by_ci: HashMap<String, Timestamp>,
    recent: VecDeque<Timestamp>,
}

/// Why an execution is held back, if it is.
fn held_back(g: &mut Guard, r: &Remediation, ci: &str, now: Timestamp) -> Option<String> {
    let hour = 3_600_000;
    while g.recent.front().is_some_and(|t| now.0 - t.0 >= hour) {
        g.recent.pop_front();
    }
    if let Some(last) = g.by_ci.get(ci)
        && now.0 - last.0 < i64::try_from(r.cool_down.as_millis()).unwrap_or(i64::MAX)
    {
        return Some(format!(
            "{ci} had one {} ago (cool-down {})",
            crate::domain::format_duration(Duration::from_millis(
                u64::try_from(now.0 - last.0).unwrap_or(0)
            )),
            crate::domain::format_duration(r.cool_down)
        ));
    }
    if g.recent.len() >= r.per_hour as usize {
        return Some(format!(
            "the limit of {} executions an hour is reached",
            r.per_hour
        ));
    }
    None
}

/// A StackStorm remediation destination.
pub struct StackStorm {
    pub remediation: Remediation,
    pub api_key: String,
    guard: Mutex<Guard>,
}

impl StackStorm {
    pub fn new(remediation: Remediation, api_key: String) -> StackStorm {
        StackStorm {
            remediation,
            api_key,
            guard: Mutex::new(Guard::default()),
        }
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, Guard> {
        self.guard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn record(&self, ci: &str, now: Timestamp) {
        let mut g = self.guard();
        g.by_ci.insert(ci.to_string(), now);
        g.recent.push_back(now);
    }

    /// Execution `id` runs for this opening of `incident`: stored (so it
    /// is followed, and not started again), counted by the guardrails,
    /// told on the timeline.
    async fn started(
        &self,
        link: &Link,
        incident: IncidentId,
        id: &str,
        opening: u32,
        ci: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let started = Ref::Running {
            id: id.to_string(),
            opening,
            started: now,
        };
        link.set_ref(incident, &started.encode()).await?;
        self.record(ci, now);
        let action = &self.remediation.action;
        link.remediation_note(
            incident,
            format!("remediation {action} requested (execution {id})"),
        )
        .await?;
        link.count_remediation("requested");
        Ok(())
    }
}

impl Destination for StackStorm {
    fn authorize(
        &self,
        rb: reqwest::RequestBuilder,
        _call: &super::destination::Call<'_>,
    ) -> reqwest::RequestBuilder {
        rb.header("St2-Api-Key", &self.api_key)
    }

    /// On an opening or reopening only: the execution of this opening if
    /// one was started (its answer lost), else, guardrails permitting, a
    /// new one; every outcome on the timeline.
    fn deliver<'a>(
        &'a self,
        link: &'a Link,
        row: &'a OutboxRow,
    ) -> BoxFuture<'a, Result<Option<Answer>, StoreError>> {
        Box::pin(async move {
            let inc = &row.message.incident;
            if !matches!(row.message.kind, EventKind::Opened | EventKind::Reopened) {
                return Ok(None);
            }
            let r = &self.remediation;
            let opening = inc.reopen_count;
            let before = link
                .stored_ticket(row)
                .await?
                .as_deref()
                .and_then(Ref::parse);
            if before.as_ref().is_some_and(|x| x.opening() == opening) {
                return Ok(Some(Answer::done("this opening's remediation ran already")));
            }
            let labels = if r.parameters.iter().any(|(_, t)| t.uses_labels()) {
                link.first_alert_labels(inc.id).await?
            } else {
                None
            };
            let params = parameters(r, inc, labels.as_ref());
            let now = link.now();
            // The cool-down's key: the root CI, else the incident itself.
            let own = format!("incident {}", inc.id.0);
            let ci = inc.root_ci.as_deref().unwrap_or(&own);
            let action = &r.action;
            // Only a retry can follow a lost answer: then the run it may
            // have started (these parameters, lately, not an earlier
            // opening's) is adopted rather than started again.
            if row.attempts > 0 && !r.dry_run {
                let listed = link.call(&recent(r), row.id).await;
                if !listed.ok() {
                    return Ok(Some(listed));
                }
                let earlier = match &before {
                    Some(Ref::Running { id, .. } | Ref::Done { id, .. }) => Some(id.as_str()),
                    None => None,
                };
                let since = Timestamp(now.0 - 3_600_000);
                if let Some(id) = lost_run(&listed.json, &params, since, earlier) {
                    self.started(link, inc.id, &id, opening, ci, now).await?;
                    return Ok(Some(Answer::done("found the execution of a lost answer")));
                }
            }
            // A parameter left empty (no root CI, no service) would aim
            // the action at nothing, or at everything.
            let empty = params
                .as_object()
                .and_then(|m| m.iter().find(|(_, v)| v.as_str() == Some("")))
                .map(|(k, _)| format!("parameter {k} is empty for this incident"));
            let held = empty.or_else(|| held_back(&mut self.guard(), r, ci, now));
            if let Some(why) = held {
                link.remediation_note(inc.id, format!("remediation {action} held back: {why}"))
                    .await?;
                link.count_remediation("held_back");
                return Ok(Some(Answer::done("held back by a guardrail")));
            }
            if r.dry_run {
                self.record(ci, now);
                link.remediation_note(
                    inc.id,
                    format!("remediation {action} would run with {params} (dry run)"),
                )
                .await?;
                link.count_remediation("dry_run");
                return Ok(Some(Answer::done("dry run")));
            }
            let answer = link.call(&run(r, &params), row.id).await;
            if !answer.ok() {
                return Ok(Some(answer));
            }
            let Some(id) = answer.json["id"].as_str().map(str::to_string) else {
                return Ok(Some(Answer::refused(
                    "StackStorm answered without an execution id",
                )));
            };
            self.started(link, inc.id, &id, opening, ci, now).await?;
            Ok(Some(answer))
        })
    }
}

/// Follows the executions a [`StackStorm`] destination started, until
/// each ends or times out.
pub struct Follower {
    pub link: Arc<Link>,
    pub remediation: Remediation,
    pub clock: Arc<dyn Clock>,
    pub ownership: Arc<super::owned::Ownership>,
    pub actions: Actions,
    /// Executions whose running was told.
    told: HashSet<String>,
}

impl Follower {
    pub fn new(
        link: Arc<Link>,
        remediation: Remediation,
        clock: Arc<dyn Clock>,
        ownership: Arc<super::owned::Ownership>,
        actions: Actions,
    ) -> Follower {
        Follower {
            link,
            remediation,
            clock,
            ownership,
            actions,
            told: HashSet::new(),
        }
    }

    pub async fn run(mut self, cancel: CancellationToken) {
        loop {
            if let Err(e) = self.pass().await {
                tracing::warn!(destination = %self.link.name, error = %e, "following remediations");
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(self.remediation.follow_every) => {}
            }
        }
    }

    /// One look at every execution still being followed.
    async fn pass(&mut self) -> Result<(), StoreError> {
        let shards = self.ownership.shards();
        let refs = self.link.refs_like("run:", shards.as_deref(), 500).await?;
        for (incident, s) in refs {
            let Some(Ref::Running {
                id,
                opening,
                started,
            }) = Ref::parse(&s)
            else {
                continue;
            };
            self.follow(incident, &id, opening, started).await?;
        }
        Ok(())
    }

    async fn follow(
        &mut self,
        incident: IncidentId,
        id: &str,
        opening: u32,
        started: Timestamp,
    ) -> Result<(), StoreError> {
        let action = self.remediation.action.clone();
        let answer = self
            .link
            .call(&Request::get(format!("/v1/executions/{id}")), 0)
            .await;
        // How it ended, if it did: the outcome counted and the timeline's
        // words.
        let (outcome, said) = if answer.status == Some(404) {
            (
                None,
                format!("remediation {action}: execution {id} is gone from StackStorm"),
            )
        } else if !answer.ok() {
            tracing::warn!(destination = %self.link.name, incident = incident.0, execution = id, status = answer.status, error = %answer.detail, "reading a remediation's execution failed; next look tries again");
            return Ok(());
        } else {
            match phase(&answer.json) {
                Phase::Succeeded { seconds } => (
                    Some("succeeded"),
                    format!("remediation {action} succeeded in {seconds} s (execution {id})"),
                ),
                Phase::Failed { reason } => (
                    Some("failed"),
                    format!("remediation {action} failed: {reason} (execution {id})"),
                ),
                phase => {
                    let limit = self.remediation.execution_timeout;
                    let ran = self.clock.now().0 - started.0;
                    if ran < i64::try_from(limit.as_millis()).unwrap_or(i64::MAX) {
                        if phase == Phase::Running && self.told.insert(id.to_string()) {
                            self.link
                                .remediation_note(
                                    incident,
                                    format!("remediation {action} running (execution {id})"),
                                )
                                .await?;
                        }
                        return Ok(());
                    }
                    let cancel = Request {
                        method: Method::Delete,
                        path: format!("/v1/executions/{id}"),
                        body: None,
                        base: super::Base::Url,
                    };
                    let cancelled = self.link.call(&cancel, 0).await;
                    let how = if cancelled.ok() {
                        "cancelled".to_string()
                    } else {
                        format!("cancelling it failed: {}", cancelled.detail)
                    };
                    (
                        Some("timed_out"),
                        format!(
                            "remediation {action} timed out after {}; {how} (execution {id})",
                            crate::domain::format_duration(limit)
                        ),
                    )
                }
            }
        };
        self.told.remove(id);
        if let Some(o) = outcome {
            self.link.count_remediation(o);
        }
        self.link.remediation_note(incident, said).await?;
        let done = Ref::Done {
            id: id.to_string(),
            opening,
        };
        self.link.set_ref(incident, &done.encode()).await?;
        if outcome == Some("succeeded")
            && let Some(then) = self.remediation.on_success
        {
            let op = match then {
                OnSuccess::Acknowledge => Operation::Acknowledge,
                OnSuccess::Resolve => Operation::Resolve,
            };
            let act = Action {
                id: incident,
                actor: format!("stackstorm:{}", self.link.name),
                op,
                reason: None,
            };
            if let Err(e) = self.actions.act(act).await {
                tracing::info!(destination = %self.link.name, incident = incident.0, error = %e, "a successful remediation's follow-up changed nothing");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remediation() -> Remediation {
        Remediation {
            action: "ops.restart".into(),
            parameters: vec![("host".into(), Template::parse("{root_ci}").expect("t"))],
            dry_run: false,
            cool_down: Duration::from_secs(600),
            per_hour: 2,
            execution_timeout: Duration::from_secs(600),
            follow_every: Duration::from_secs(5),
            on_success: None,
        }
    }

    #[test]
    fn refs_round_trip() {
        for r in [
            Ref::Running {
                id: "6750aa".into(),
                opening: 2,
                started: Timestamp(1_700_000),
            },
            Ref::Done {
                id: "6750aa".into(),
                opening: 0,
            },
        ] {
            assert_eq!(Ref::parse(&r.encode()), Some(r));
        }
        assert_eq!(Ref::parse("sys-1"), None);
    }

    #[test]
    fn phases_and_reasons() {
        let e = |j: Value| phase(&j);
        assert_eq!(e(json!({"status": "requested"})), Phase::Waiting);
        assert_eq!(e(json!({"status": "running"})), Phase::Running);
        assert_eq!(
            e(
                json!({"status": "succeeded", "start_timestamp": "2026-12-06T10:00:00.000000Z",
                     "end_timestamp": "2026-12-06T10:00:42.400000Z"})
            ),
            Phase::Succeeded { seconds: 42 }
        );
        assert_eq!(
            e(json!({"status": "failed", "result": {"stderr": "unit not found\n"}})),
            Phase::Failed {
                reason: "unit not found".into()
            }
        );
        assert_eq!(
            e(json!({"status": "timeout"})),
            Phase::Failed {
                reason: "the action timed out in StackStorm".into()
            }
        );
    }

    #[test]
    fn guardrails_hold_back_by_ci_and_by_hour() {
        let r = remediation();
        let mut g = Guard::default();
        let t = |s: i64| Timestamp(s * 1000);
        assert_eq!(held_back(&mut g, &r, "pg-0", t(0)), None);
        g.by_ci.insert("pg-0".into(), t(0));
        g.recent.push_back(t(0));
        let why = held_back(&mut g, &r, "pg-0", t(120)).expect("cool-down");
        assert!(why.contains("pg-0 had one 2m ago (cool-down 10m)"), "{why}");
        assert_eq!(held_back(&mut g, &r, "pg-0", t(600)), None);
        g.recent.push_back(t(100));
        let why = held_back(&mut g, &r, "kafka-1", t(200)).expect("rate");
        assert!(why.contains("2 executions an hour"), "{why}");
        // An hour later the old ones no longer count.
        assert_eq!(held_back(&mut g, &r, "kafka-1", t(3700)), None);
    }

    #[test]
    fn a_lost_run_is_found_by_its_parameters_and_time() {
        let params = json!({"host": "pg-0"});
        let list = json!([
            {"id": "b", "parameters": {"host": "pg-1"}, "start_timestamp": "2026-12-06T10:00:05Z"},
            {"id": "a", "parameters": {"host": "pg-0"}, "start_timestamp": "2026-12-06T10:00:03Z"},
            {"id": "z", "parameters": {"host": "pg-0"}, "start_timestamp": "2026-12-06T09:00:00Z"}
        ]);
        let since = Timestamp::parse_rfc3339("2026-12-06T10:00:00Z")
            .expect("t")
            .expect("t");
        assert_eq!(lost_run(&list, &params, since, None), Some("a".into()));
        assert_eq!(lost_run(&list, &params, since, Some("a")), None);
        assert_eq!(lost_run(&list, &json!({"host": "x"}), since, None), None);
        let r = remediation();
        assert_eq!(
            recent(&r).path,
            "/v1/executions?action=ops.restart&limit=50"
        );
        assert_eq!(
            run(&r, &params).body.expect("body"),
            json!({"action": "ops.restart", "parameters": {"host": "pg-0"}})
        );
    }
}
