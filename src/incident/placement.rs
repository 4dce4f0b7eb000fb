//! Where a firing alert goes: rules, CMDB binding, change windows, then the
//! incident it joins (same CI and alert name, topology, reopen) or opens;
//! merging and re-rooting when a root cause shows up late; impact, priority,
//! assignment, problem links. Part of the pure engine.

use super::{
    Engine, MaybeCi, MaybeTime, Tracked, counted, push_shared, push_tight, push_unique,
    runbooks_of, title_for, update_of, urgency_from_severity,
};
use crate::cmdb::CiIdx;
use crate::correlate::{self, topology};
use crate::dedup::AlertState;
use crate::domain::{
    Alert, Incident, IncidentId, IncidentState, Level, Links, Priority, ServiceImpact, ThinVec,
    TimelineKind, Timestamp,
};
use crate::rules::{CiFacts, Decision, IncidentFacts, RuleInput, ServiceFacts};
use crate::store::{AlertRecord, StoreOp};
use std::sync::Arc;

/// Impact from the business services hurt: the highest tier and how many.
pub fn impact_of(services: &[ServiceImpact]) -> Level {
    let top = services.iter().map(|s| s.tier).min();
    match (top, services.len()) {
        (None, _) => Level::LOW,
        (Some(1), _) | (_, 5..) => Level::HIGH,
        (Some(2), _) | (_, 2..) => Level::MEDIUM,
        _ => Level::LOW,
    }
}

/// What a CI depends on, from the engine's cache (filled on first ask).
fn cached_upstream<'a>(
    cmdb: &'a crate::cmdb::Cmdb,
    cache: &'a mut rustc_hash::FxHashMap<CiIdx, Arc<[CiIdx]>>,
) -> impl FnMut(CiIdx) -> Arc<[CiIdx]> + 'a {
    move |ci| {
        cache
            .entry(ci)
            .or_insert_with(|| cmdb.upstream(ci).into())
            .clone()
    }
}

impl Engine {
    fn facts_for(&self, key: &str) -> Option<IncidentFacts> {
        let id = self.by_key.get(key)?;
        let t = self.incidents.get(id)?;
        Some(IncidentFacts {
            state: t.inc.state.as_str().to_string(),
            priority: t.inc.priority,
            alert_count: t.inc.alert_count,
            flapping: t.inc.flapping,
        })
    }

    /// Run the rules and put a firing alert into an incident (joining,
    /// merging, reopening or opening one). Returns true when suppressed.
    pub(super) fn place(
        &mut self,
        alert: &Alert,
        st: &mut AlertState,
        now: Timestamp,
        first_time: bool,
    ) -> bool {
        let binding = self.cmdb.bind(&alert.labels);
        if first_time {
            let slot = match binding.map(|b| b.how) {
                Some(crate::cmdb::BindingHow::CiLabel) => 0,
                Some(crate::cmdb::BindingHow::Match) => 1,
                Some(crate::cmdb::BindingHow::Hostname) => 2,
                None => 3,
            };
            self.stats.bound[slot] += 1;
        }
        let ci = binding.map(|b| b.ci);
        let ci_id = ci.map(|c| self.cmdb.ci(c).id.clone());
        let key = correlate::correlation_key_for(alert, ci_id.as_deref());
        if *st.key != *key {
            st.key = match self.by_key.get_key_value(key.as_str()) {
                Some((k, _)) => k.clone(),
                None => key.into(),
            };
        }
        let in_change = ci_id
            .as_deref()
            .and_then(|id| self.changes.active(id, alert.starts_at))
            .map(|c| c.id.clone());
        let ci_facts = ci.map(|c| {
            let rec = self.cmdb.ci(c);
            CiFacts {
                id: rec.id.clone(),
                class: rec.class.clone(),
                service: rec.service.map(|s| self.cmdb.service(s).id.clone()),
                owner: rec.owner.clone(),
                in_change_window: in_change.is_some(),
                change_id: in_change.clone(),
            }
        });
        let service_facts = ci.and_then(|c| self.cmdb.ci(c).service).map(|si| {
            let s = self.cmdb.service(si);
            ServiceFacts {
                id: s.id.clone(),
                name: s.name.clone(),
                tier: s.tier,
                owner: s.owner.clone(),
            }
        });
        let facts = self.facts_for(&st.key);
        let started = std::time::Instant::now();
        let decision = self.rules.evaluate(&RuleInput {
            alert,
            ci: ci_facts.as_ref(),
            service: service_facts.as_ref(),
            incident: facts.as_ref(),
        });
        self.rule_seconds.push(started.elapsed().as_secs_f64());
        for (rule, err) in &decision.errors {
            self.stats.rule_errors += 1;
            tracing::warn!(rule = %rule, error = %err, "rule condition failed; treated as not matched");
        }
        let suppressed = decision
            .suppress
            .as_ref()
            .map(|s| (s.rule.to_string(), s.reason.clone()));
        st.suppressed = suppressed.is_some();
        let previous = st.incident();
        st.set_incident(None);
        if suppressed.is_some() {
            self.stats.suppressed += 1;
        } else if decision.open {
            let id = self.assign_incident(alert, &st.key, ci, previous, &decision, now);
            self.link_changes(id, alert, ci);
            st.set_incident(Some(id));
        }
        if first_time {
            self.ops.push(StoreOp::InsertAlert(Box::new(AlertRecord {
                fingerprint: alert.fingerprint,
                status: alert.status,
                labels: alert.labels.clone(),
                annotations: alert.annotations.clone(),
                starts_at: alert.starts_at,
                ends_at: alert.ends_at,
                source: alert.source,
                generator_url: alert.generator_url.clone(),
                incident: st.incident(),
                key: st.key.to_string(),
                suppressed,
                change: in_change.clone(),
                flapping: st.flapping,
                first_seen: now,
                last_seen: now,
                deliveries: u64::from(st.deliveries),
                shard: self.shard,
            })));
        } else {
            let mut update = update_of(alert.fingerprint, st, Some(suppressed));
            update.change = Some(in_change.clone());
            self.ops.push(StoreOp::UpdateAlert(Box::new(update)));
        }
        st.suppressed
    }

    /// The incident a (non-suppressed) firing alert goes to.
    fn assign_incident(
        &mut self,
        alert: &Alert,
        key: &Arc<str>,
        ci: Option<CiIdx>,
        previous: Option<IncidentId>,
        decision: &Decision,
        now: Timestamp,
    ) -> IncidentId {
        let at = alert.starts_at;
        let placement = match ci {
            Some(c) => {
                let topos = self
                    .incidents
                    .iter()
                    .filter(|(_, t)| t.inc.state.is_active())
                    .map(|(id, t)| topology::IncidentTopo {
                        id: *id,
                        root: t.root.get(),
                        cis: &t.cis,
                        first: t.first,
                        last: t.last,
                    });
                topology::place(&self.cmdb, c, at, self.cfg.correlation_window, topos)
            }
            None => topology::Placement::Open,
        };
        // Same CI and alert name, but only while that incident is live
        // around this time: the same check hours later is a new problem.
        let window = self.cfg.correlation_window;
        let same_key = self.by_key.get(key).copied().filter(|id| {
            self.incidents.get(id).is_some_and(|t| {
                t.inc.state.is_active()
                    && t.first.saturating_sub(window) <= at
                    && at <= t.last.saturating_add(window)
            })
        });
        let what = format!("alert {} ({})", alert.alertname(), alert.fingerprint);
        // 1. The same alert name on the same CI (or target) joins its incident.
        if let Some(id) = same_key {
            if let (topology::Placement::Join { merge, .. }, Some(c)) = (&placement, ci) {
                for m in merge.iter().copied().filter(|m| *m != id) {
                    self.merge(m, id, c, at, now);
                }
            }
            self.timeline(
                id,
                at,
                TimelineKind::AlertJoined,
                format!("{what} joined: same CI and alert name ({key})"),
                None,
            );
            self.join(id, alert, ci, decision, now);
            return id;
        }
        // 2. Topology: related through depends_on within the window.
        if let (
            topology::Placement::Join {
                target,
                merge,
                reroot,
                why,
            },
            Some(c),
        ) = (&placement, ci)
        {
            let target = *target;
            for m in merge.iter().copied() {
                self.merge(m, target, c, at, now);
            }
            let ci_id = self.cmdb.ci(c).id.clone();
            let msg = match why {
                topology::Why::SameCi => {
                    format!("{what} joined: its CI {ci_id} already has alerts here")
                }
                topology::Why::DependsOnRoot { root } => format!(
                    "{what} joined: {ci_id} depends on the root cause {} (depends_on)",
                    self.cmdb.ci(*root).id
                ),
                topology::Why::UpstreamOfRoot { old_root } => format!(
                    "{what} joined: {ci_id} is upstream of {} (depends_on)",
                    self.cmdb.ci(*old_root).id
                ),
            };
            self.timeline(target, at, TimelineKind::AlertJoined, msg, None);
            if *reroot {
                self.reroot(target, c, alert, now, None);
            } else if self
                .incidents
                .get(&target)
                .is_some_and(|t| t.inc.root_inferred && t.root.get() == Some(c))
            {
                self.confirm_root(target, alert, now);
            }
            self.add_key(target, key);
            self.join(target, alert, ci, decision, now);
            self.recount_inferred(target, now);
            return target;
        }
        // 3. A re-fire of this alert within the reopen window reopens.
        if let Some(id) = previous {
            let reopen = self.incidents.get(&id).is_some_and(|t| {
                t.inc.links.merged_into.is_none()
                    && t.inc
                        .resolved_at
                        .is_some_and(|r| at.since(r) <= self.cfg.reopen_window)
            });
            if reopen {
                self.reopen(id, alert, now);
                self.join(id, alert, ci, decision, now);
                return id;
            }
        }
        // 4. Several unrelated incidents whose roots share a silent CI
        // upstream: that CI is the likeliest root (inferred).
        let mut ambiguous = None;
        if let (topology::Placement::Open, Some(c)) = (&placement, ci) {
            match self.infer(c, at) {
                topology::Inference::Root(inferred) => {
                    if let Some(id) = self.join_inferred(&inferred, (alert, key, c), decision, now)
                    {
                        return id;
                    }
                }
                topology::Inference::Ambiguous {
                    candidates,
                    alerting,
                } => {
                    let names = |v: &[CiIdx]| {
                        v.iter()
                            .map(|c| self.cmdb.ci(*c).id.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    self.stats.inferences[3] += 1;
                    ambiguous = Some(format!(
                        "no root cause inferred: {} alerting CIs ({}) share the unrelated upstream CIs {}, none of which alerts; which one failed is ambiguous",
                        alerting.len(),
                        names(&alerting),
                        names(&candidates)
                    ));
                }
                topology::Inference::Forming { .. } | topology::Inference::Nothing => {}
            }
        }
        // 5. Something new. Its stored key must differ from any other active
        // incident's (the database allows one active incident per key), so
        // an older live incident with the same key makes it carry its start.
        let taken = self.by_key.get(key).is_some_and(|id| {
            self.incidents
                .get(id)
                .is_some_and(|t| t.inc.state.is_active())
        });
        let stored_key: Arc<str> = if taken {
            format!("{key}@{}", at.to_rfc3339()).into()
        } else {
            key.clone()
        };
        let id = self.open(alert, stored_key, key, ci, now);
        if let Some(msg) = ambiguous {
            self.timeline(id, at, TimelineKind::RootCause, msg, None);
        }
        self.join(id, alert, ci, decision, now);
        id
    }

    /// [`topology::infer`] over the active incidents.
    pub(super) fn infer(&mut self, c: CiIdx, at: Timestamp) -> topology::Inference {
        let cmdb = &self.cmdb;
        let cache = &mut self.upstream_cache;
        // Bounded: distinct CIs asked about, cleared when the CMDB changes.
        if cache.len() > 65_536 {
            cache.clear();
        }
        let topos = self
            .incidents
            .iter()
            .filter(|(_, t)| t.inc.state.is_active())
            .map(|(id, t)| {
                (
                    topology::IncidentTopo {
                        id: *id,
                        root: t.root.get(),
                        cis: &t.cis,
                        first: t.first,
                        last: t.last,
                    },
                    t.inc.root_inferred,
                )
            });
        topology::infer(
            cmdb,
            c,
            at,
            self.cfg.correlation_window,
            self.cfg.infer,
            topos,
            cached_upstream(cmdb, cache),
        )
    }

    /// The alert and the incidents the inference names (oldest first)
    /// become one incident rooted at a CI without an alert of its own: the
    /// oldest (already announced) takes the others over. `None` when it
    /// names no incident.
    fn join_inferred(
        &mut self,
        inferred: &topology::Inferred,
        (alert, key, c): (&Alert, &Arc<str>, CiIdx),
        decision: &Decision,
        now: Timestamp,
    ) -> Option<IncidentId> {
        let topology::Inferred {
            root,
            ref incidents,
            ref alerting,
            covered,
            dependents,
        } = *inferred;
        let at = alert.starts_at;
        let (&target, others) = incidents.split_first()?;
        for m in others.iter().copied() {
            self.merge(m, target, root, at, now);
        }
        let root_id = self.cmdb.ci(root).id.clone();
        let names: Vec<&str> = alerting
            .iter()
            .map(|a| self.cmdb.ci(*a).id.as_str())
            .collect();
        let evidence = format!(
            "{covered} of its {dependents} dependents alert within {} ({}); {root_id} has no alert",
            crate::domain::format_duration(self.cfg.correlation_window),
            names.join(", ")
        );
        let title = format!("{root_id} suspected: {covered} of its {dependents} dependents alert");
        self.stats.inferences[0] += 1;
        self.reroot(target, root, alert, now, Some((&title, &evidence)));
        let ci_id = self.cmdb.ci(c).id.clone();
        self.timeline(
            target,
            at,
            TimelineKind::AlertJoined,
            format!(
                "alert {} ({}) joined: {ci_id} depends on the inferred root cause {root_id}",
                alert.alertname(),
                alert.fingerprint
            ),
            None,
        );
        self.add_key(target, key);
        self.join(target, alert, Some(c), decision, now);
        Some(target)
    }

    /// An inferred root's title counts its hurt dependents: a dependent
    /// joining later raises the count.
    fn recount_inferred(&mut self, id: IncidentId, now: Timestamp) {
        let Some(t) = self.incidents.get(&id).filter(|t| t.inc.root_inferred) else {
            return;
        };
        let Some(root) = t.root.get() else { return };
        let alerting: Vec<CiIdx> = t.cis.iter().copied().filter(|&a| a != root).collect();
        let (cmdb, cache) = (&self.cmdb, &mut self.upstream_cache);
        let (covered, dependents) =
            topology::hurt_dependents(cmdb, root, &alerting, cached_upstream(cmdb, cache));
        let title = format!(
            "{} suspected: {covered} of its {dependents} dependents alert",
            cmdb.ci(root).id
        );
        if let Some(t) = self.incidents.get_mut(&id)
            && *t.inc.title != *title
        {
            t.inc.title = title.into();
            self.save_incident(id, now);
        }
    }

    /// The inferred root alerts itself: the inference is confirmed and the
    /// title names its alert.
    fn confirm_root(&mut self, id: IncidentId, alert: &Alert, now: Timestamp) {
        let Some(t) = self.incidents.get_mut(&id) else {
            return;
        };
        t.inc.root_inferred = false;
        t.inc.title = title_for(alert).into();
        self.stats.inferences[1] += 1;
        let root = t.inc.root_ci.as_deref().unwrap_or_default().to_string();
        self.timeline(
            id,
            alert.starts_at,
            TimelineKind::RootCause,
            format!(
                "{root} alerts itself ({}): the inferred root cause is confirmed",
                alert.alertname()
            ),
            None,
        );
        self.save_incident(id, now);
    }

    fn add_key(&mut self, id: IncidentId, key: &Arc<str>) {
        self.by_key.insert(key.clone(), id);
        if let Some(t) = self.incidents.get_mut(&id) {
            t.add_key(key);
        }
    }

    fn open(
        &mut self,
        alert: &Alert,
        stored_key: Arc<str>,
        key: &Arc<str>,
        ci: Option<CiIdx>,
        now: Timestamp,
    ) -> IncidentId {
        let id = IncidentId(self.next_id);
        self.next_id += self.id_stride;
        self.stats.incidents_created += 1;
        let at = alert.starts_at;
        let inc = Incident {
            id,
            key: stored_key,
            state: IncidentState::Open,
            priority: Priority::ALL[4],
            impact: Level::LOW,
            urgency: Level::LOW,
            title: title_for(alert).into(),
            root_ci: None,
            root_inferred: false,
            cis: ThinVec::new(),
            impacted_services: ThinVec::new(),
            impact_detail: ThinVec::new(),
            assignment_group: None,
            alert_fingerprints: ThinVec::new(),
            alert_count: 0,
            opened_at: at,
            acknowledged_at: None,
            acknowledged_by: None,
            resolved_at: None,
            updated_at: now,
            reopen_count: 0,
            flapping: false,
            rules: ThinVec::new(),
            links: Links::default(),
            signature: None,
            shard: self.shard,
            sla_marks: ThinVec::new(),
            holds: ThinVec::new(),
            auto_resolve_at: MaybeTime::NONE,
            unannounced: None,
        };
        self.incidents
            .insert(id, Box::new(Tracked::new(inc, None, at)));
        self.add_key(id, key);
        self.start_announcing(id, now);
        let root = ci.map_or_else(
            || "no CMDB CI (unbound alert)".to_string(),
            |c| format!("root cause CI {}", self.cmdb.ci(c).id),
        );
        self.lived(id, super::Lifecycle::Opened);
        self.timeline(
            id,
            at,
            TimelineKind::Opened,
            format!(
                "opened by alert {} ({}); {root}",
                alert.alertname(),
                alert.fingerprint
            ),
            None,
        );
        self.set_root(id, ci, alert, now);
        id
    }

    /// Make `ci` the root cause of `id`: impact, assignment, signature.
    fn set_root(&mut self, id: IncidentId, ci: Option<CiIdx>, alert: &Alert, now: Timestamp) {
        let (services, root_id, owner) = match ci {
            Some(c) => {
                let rec = self.cmdb.ci(c);
                let services: Vec<ServiceImpact> = self
                    .cmdb
                    .impacted_services(c)
                    .into_iter()
                    .map(|s| ServiceImpact {
                        id: s.id,
                        tier: s.tier,
                    })
                    .collect();
                let owner = self.cmdb.assignment_group(c).map(str::to_string);
                (services, Some(rec.id.clone()), owner)
            }
            None => (Vec::new(), None, None),
        };
        let signature = match &root_id {
            Some(r) => format!("{r}|{}", alert.alertname()),
            None => correlate::correlation_key(alert),
        };
        let default_impact = self.cfg.default_impact;
        let (similar, problem) = self.problems.lookup(&signature, id, self.cfg.similar_limit);
        let Some(t) = self.incidents.get_mut(&id) else {
            return;
        };
        t.root = MaybeCi::of(ci);
        if let Some(c) = ci
            && !t.cis.contains(&c)
        {
            t.cis.push(c);
        }
        t.inc.root_ci = root_id.as_deref().map(Box::from);
        if let Some(r) = &root_id {
            push_unique(&mut t.inc.cis, r);
        }
        t.cmdb_impact = ci.map(|_| impact_of(&services)).unwrap_or(default_impact);
        t.inc.impacted_services = services.iter().map(|s| s.id.clone()).collect();
        t.inc.impact_detail = services.into();
        if !t.assigned_by_rule && owner.is_some() {
            t.inc.assignment_group = owner.map(Box::from);
        }
        // Without a CI the signature is the correlation key: share it.
        let signature: Arc<str> = match t.keys().find(|k| ***k == *signature) {
            Some(k) => k.clone(),
            None => signature.into(),
        };
        t.inc.signature = Some(signature);
        t.inc.links.similar = similar.into();
        if problem.is_some() && t.inc.links.problem.is_none() {
            t.inc.links.problem = problem.as_deref().map(Box::from);
        }
        if let Some(p) = problem {
            self.timeline(
                id,
                alert.starts_at,
                TimelineKind::Problem,
                format!("linked to open problem {p}: same root CI and alert"),
                None,
            );
        }
        self.save_incident(id, now);
    }

    /// The late root cause: `ci` is upstream of the incident's root. With
    /// `inferred` (title and evidence), `ci` has no alert of its own.
    fn reroot(
        &mut self,
        id: IncidentId,
        ci: CiIdx,
        alert: &Alert,
        now: Timestamp,
        inferred: Option<(&str, &str)>,
    ) {
        let old = self
            .incidents
            .get(&id)
            .and_then(|t| t.inc.root_ci.clone())
            .unwrap_or_default();
        let new = self.cmdb.ci(ci).id.clone();
        let before: Vec<String> = self
            .incidents
            .get(&id)
            .map(|t| t.inc.impacted_services.to_vec())
            .unwrap_or_default();
        let silent = self
            .incidents
            .get(&id)
            .filter(|t| t.inc.root_inferred)
            .and_then(|t| t.root.get());
        self.set_root(id, Some(ci), alert, now);
        // The title names the cause, not the first symptom that opened it.
        if let Some(t) = self.incidents.get_mut(&id) {
            // A root that was only inferred has no alert here: it is not
            // one of the incident's alerting CIs any more.
            if let Some(s) = silent.filter(|&s| s != ci) {
                self.stats.inferences[2] += 1;
                t.cis.retain(|&c| c != s);
                let gone = &self.cmdb.ci(s).id;
                t.inc.cis.retain(|c| c != gone);
            }
            t.inc.root_inferred = inferred.is_some();
            t.inc.title = match inferred {
                None => title_for(alert).into(),
                Some((title, _)) => title.into(),
            };
        }
        self.lived(
            id,
            super::Lifecycle::Rerooted {
                from: (!old.is_empty()).then(|| old.to_string()),
            },
        );
        self.timeline(
            id,
            alert.starts_at,
            TimelineKind::RootCause,
            match inferred {
                None => format!(
                    "root cause is now {new} (was {old}): {old} depends on it and it alerts ({})",
                    alert.alertname()
                ),
                Some((_, evidence)) => {
                    format!("root cause inferred: {new} (was {old}): {evidence}")
                }
            },
            None,
        );
        let after: Vec<String> = self
            .incidents
            .get(&id)
            .map(|t| t.inc.impacted_services.to_vec())
            .unwrap_or_default();
        if after != before {
            self.timeline(
                id,
                alert.starts_at,
                TimelineKind::Impact,
                format!(
                    "impacted services now {}",
                    if after.is_empty() {
                        "none".into()
                    } else {
                        after.join(", ")
                    }
                ),
                None,
            );
        }
        self.reprioritize(id, alert.starts_at, &format!("root cause moved to {new}"));
    }

    /// Fold incident `from` into `into` (its root turned out to depend on
    /// `ci`, which belongs to `into`). Its alerts move; it resolves as merged.
    fn merge(
        &mut self,
        from: IncidentId,
        into: IncidentId,
        ci: CiIdx,
        at: Timestamp,
        now: Timestamp,
    ) {
        if from == into {
            return;
        }
        let Some(mut src) = self.incidents.remove(&from) else {
            return;
        };
        if !src.inc.state.is_active() {
            self.incidents.insert(from, src);
            return;
        }
        self.stats.incidents_merged += 1;
        self.merge_announcing(from, into);
        if let Some(due) = src.inc.auto_resolve_at.take() {
            self.due.remove(&(due, from));
        }
        let moved = std::mem::take(&mut src.inc.alert_fingerprints);
        for fp in &moved {
            if let Some(st) = self.table.get_mut(fp) {
                st.set_incident(Some(into));
            }
        }
        self.ops.push(StoreOp::MoveAlerts { from, to: into });
        let ci_id = self.cmdb.ci(ci).id.clone();
        let n = moved.len();
        if let Some(dst) = self.incidents.get_mut(&into) {
            for fp in moved {
                if !dst.inc.alert_fingerprints.contains(&fp) {
                    dst.inc.alert_fingerprints.push(fp);
                }
            }
            dst.firing += src.firing;
            dst.inc.alert_count = dst.inc.alert_fingerprints.len() as u64;
            dst.first = dst.first.min(src.first);
            dst.last = dst.last.max(src.last);
            dst.last_end = MaybeTime::of(dst.last_end.get().max(src.last_end.get()));
            for c in &src.cis {
                if !dst.cis.contains(c) {
                    dst.cis.push(*c);
                }
            }
            for c in &src.inc.cis {
                push_unique(&mut dst.inc.cis, c);
            }
            for r in &src.inc.links.runbooks {
                push_shared(&mut dst.inc.links.runbooks, r);
            }
            for d in &src.inc.links.notify {
                push_unique(&mut dst.inc.links.notify, d);
            }
            for r in &src.inc.rules {
                push_shared(&mut dst.inc.rules, r);
            }
            if dst.inc.links.change.is_none() {
                dst.inc.links.change = src.inc.links.change.clone();
            }
            dst.inc.urgency = dst.inc.urgency.min(src.inc.urgency);
            dst.rule_priority = match (dst.rule_priority, src.rule_priority) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            dst.inc.flapping |= src.inc.flapping;
            dst.inc.opened_at = dst.inc.opened_at.min(src.inc.opened_at);
            if dst.inc.acknowledged_at.is_none() && src.inc.acknowledged_at.is_some() {
                dst.inc.acknowledged_at = src.inc.acknowledged_at;
                dst.inc.acknowledged_by = src.inc.acknowledged_by.clone();
            }
        }
        for k in src.keys() {
            self.by_key.insert(k.clone(), into);
            if let Some(dst) = self.incidents.get_mut(&into) {
                dst.add_key(k);
            }
        }
        src.more_keys.clear();
        src.firing = 0;
        // Its alerts are the other incident's now (the timeline says how
        // many moved).
        src.inc.alert_count = 0;
        src.inc.state = IncidentState::Resolved;
        src.inc.resolved_at = Some(at);
        src.inc.links.merged_into = Some(into);
        src.resolved_seen = MaybeTime::at(now);
        let old_root = src.inc.root_ci.clone().unwrap_or_default();
        self.incidents.insert(from, src);
        self.timeline(
            from,
            at,
            TimelineKind::Merged,
            format!(
                "merged into incident {into} ({} moved there): its root {old_root} depends on {ci_id}, which alerts there",
                counted(n, "alert")
            ),
            None,
        );
        self.timeline(
            into,
            at,
            TimelineKind::Merged,
            format!(
                "absorbed incident {from} ({}): {old_root} depends on {ci_id}",
                counted(n, "alert")
            ),
            None,
        );
        self.lived(from, super::Lifecycle::MergedInto { into });
        self.lived(into, super::Lifecycle::Absorbed { from });
        self.save_incident(from, now);
        self.save_incident(into, now);
    }

    pub(super) fn reopen(&mut self, id: IncidentId, alert: &Alert, now: Timestamp) {
        let Some(t) = self.incidents.get_mut(&id) else {
            return;
        };
        t.inc.state = IncidentState::Open;
        t.inc.resolved_at = None;
        t.inc.acknowledged_at = None;
        t.inc.acknowledged_by = None;
        t.inc.reopen_count += 1;
        t.resolved_seen = MaybeTime::NONE;
        self.stats.incidents_reopened += 1;
        let msg = format!(
            "reopened: alert {} ({}) fired again within the reopen window",
            alert.alertname(),
            alert.fingerprint
        );
        self.timeline(id, alert.starts_at, TimelineKind::Reopened, msg, None);
        self.lived(
            id,
            super::Lifecycle::Reopened {
                alertname: alert.alertname().to_string(),
            },
        );
        self.save_incident(id, now);
    }

    /// Raise priority if impact x urgency (or a rule) now calls for more.
    fn reprioritize(&mut self, id: IncidentId, at: Timestamp, reason: &str) {
        let matrix = self.cfg.matrix.clone();
        let Some(t) = self.incidents.get_mut(&id) else {
            return;
        };
        let impact = t.rule_impact.unwrap_or(t.cmdb_impact);
        let computed = matrix.priority(impact, t.inc.urgency);
        let target = t.rule_priority.map_or(computed, |p| p.min(computed));
        let why = match t.rule_priority {
            Some(p) if p <= computed => format!("{p} set by rule"),
            _ => format!(
                "{computed} = impact {} x urgency {}{}",
                impact.get(),
                t.inc.urgency.get(),
                if t.inc.impacted_services.is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({}, highest tier {})",
                        counted(t.inc.impact_detail.len(), "service"),
                        t.inc
                            .impact_detail
                            .iter()
                            .map(|s| s.tier)
                            .min()
                            .unwrap_or(0)
                    )
                }
            ),
        };
        let fresh = t.inc.alert_fingerprints.len() <= 1
            && t.inc.reopen_count == 0
            && t.priority_set.is_none();
        if fresh {
            t.inc.priority = target;
            t.inc.impact = impact;
            t.priority_set = Some(target);
            // Just opened: the priority is part of the opening entry (one
            // row less per new incident, which is most of a storm's writes).
            match self.ops.last_mut() {
                Some(StoreOp::Timeline { incident, entry })
                    if *incident == id && entry.kind == TimelineKind::Opened =>
                {
                    entry.message.push_str(&format!("; priority {why}"));
                }
                _ => self.timeline(
                    id,
                    at,
                    TimelineKind::PriorityChanged,
                    format!("priority {why}"),
                    None,
                ),
            }
        } else if target < t.inc.priority {
            let old = t.inc.priority;
            t.inc.priority = target;
            t.inc.impact = t.inc.impact.min(impact);
            self.lifecycle
                .push((id, super::Lifecycle::PriorityRaised { from: old }));
            self.timeline(
                id,
                at,
                TimelineKind::PriorityChanged,
                format!("priority raised {old} → {target}: {reason}; {why}"),
                None,
            );
        }
    }

    /// Add a firing alert to an active incident and apply what the rules said.
    pub(super) fn join(
        &mut self,
        id: IncidentId,
        alert: &Alert,
        ci: Option<CiIdx>,
        decision: &Decision,
        now: Timestamp,
    ) {
        let at = alert.starts_at;
        let urgency = decision.urgency.as_ref().map_or_else(
            || urgency_from_severity(alert.labels.get("severity")),
            |(l, _)| *l,
        );
        let ci_runbook = ci.and_then(|c| self.cmdb.ci(c).runbook.clone());
        let runbooks: Vec<Arc<str>> = runbooks_of(alert, decision)
            .into_iter()
            .chain(ci_runbook.as_deref())
            .map(|r| self.share(r))
            .collect();
        let ci_id = ci.map(|c| self.cmdb.ci(c).id.clone());
        let mut entries: Vec<(TimelineKind, String)> = Vec::new();
        let Some(t) = self.incidents.get_mut(&id) else {
            return;
        };
        t.firing += 1;
        if let Some(due) = t.inc.auto_resolve_at.take() {
            self.due.remove(&(due, id));
        }
        // An alert that began before the incident did (a root cause whose
        // rule waited longer, a late delivery) shows the failure is older:
        // the incident's start, which SLO downtime and SLA clocks count
        // from, moves back to it.
        if at < t.inc.opened_at && t.inc.state.is_active() {
            entries.push((
                TimelineKind::Backdated,
                format!(
                    "start moved back from {} to {}: alert {} ({}) began earlier",
                    t.inc.opened_at.to_rfc3339(),
                    at.to_rfc3339(),
                    alert.alertname(),
                    alert.fingerprint
                ),
            ));
            t.inc.opened_at = at;
        }
        t.first = t.first.min(at);
        t.last = t.last.max(at);
        if let Some(c) = ci
            && !t.cis.contains(&c)
        {
            t.cis.push(c);
        }
        if let Some(c) = &ci_id {
            push_unique(&mut t.inc.cis, c);
        }
        if !t.inc.alert_fingerprints.contains(&alert.fingerprint) {
            push_tight(&mut t.inc.alert_fingerprints, alert.fingerprint);
            t.inc.alert_count = t.inc.alert_fingerprints.len() as u64;
            self.ops.push(StoreOp::LinkAlert {
                incident: id,
                fingerprint: alert.fingerprint,
                at,
            });
        }
        let first_alert = t.priority_set.is_none();
        t.inc.urgency = if first_alert {
            urgency
        } else {
            t.inc.urgency.min(urgency)
        };
        if let Some((p, _)) = &decision.priority {
            t.rule_priority = Some(t.rule_priority.map_or(*p, |old| old.min(*p)));
        }
        if let Some((l, _)) = &decision.impact {
            t.rule_impact = Some(t.rule_impact.map_or(*l, |old| old.min(*l)));
        }
        if let Some((group, rule)) = &decision.assign
            && !t.assigned_by_rule
        {
            t.assigned_by_rule = true;
            t.inc.assignment_group = Some(group.as_str().into());
            entries.push((
                TimelineKind::Assigned,
                format!("assigned to {group} by rule {rule}"),
            ));
        }
        for rb in &runbooks {
            push_shared(&mut t.inc.links.runbooks, rb);
        }
        for d in &decision.notify {
            push_unique(&mut t.inc.links.notify, d);
        }
        for rule in &decision.matched {
            if push_shared(&mut t.inc.rules, rule) {
                entries.push((
                    TimelineKind::RuleApplied,
                    format!(
                        "rule {rule} matched alert {} ({})",
                        alert.alertname(),
                        alert.fingerprint
                    ),
                ));
            }
        }
        for (kind, msg) in entries {
            self.timeline(id, at, kind, msg, None);
        }
        let reason = format!(
            "alert {} ({}, severity {}) joined",
            alert.alertname(),
            alert.fingerprint,
            alert.labels.get("severity").unwrap_or("unset")
        );
        self.reprioritize(id, at, &reason);
        self.save_incident(id, now);
    }

    /// Mark the incident change-related when the alert's CI, or a CI it
    /// depends on, is in a change window or left one within the grace time.
    fn link_changes(&mut self, id: IncidentId, alert: &Alert, ci: Option<CiIdx>) {
        let Some(c) = ci else { return };
        if self.changes.is_empty() {
            return;
        }
        let t = alert.starts_at;
        let grace = self.cfg.change_grace;
        let mut found: Option<(String, String, &'static str)> = None;
        for cand in std::iter::once(c).chain(self.cmdb.upstream(c)) {
            let cid = &self.cmdb.ci(cand).id;
            if let Some(ch) = self.changes.active(cid, t) {
                found = Some((ch.id.clone(), cid.clone(), "during"));
                break;
            }
            if let Some(ch) = self.changes.recently_ended(cid, t, grace) {
                found = Some((ch.id.clone(), cid.clone(), "shortly after"));
                break;
            }
        }
        let Some((change, on, when)) = found else {
            return;
        };
        let Some(tr) = self.incidents.get_mut(&id) else {
            return;
        };
        if tr.inc.links.change.as_deref() == Some(change.as_str()) {
            return;
        }
        if tr.inc.links.change.is_none() {
            tr.inc.links.change = Some(change.as_str().into());
        }
        let msg = format!(
            "change-related: alert {} ({}) fired {when} change {change} on {on}",
            alert.alertname(),
            alert.fingerprint
        );
        self.timeline(id, t, TimelineKind::ChangeRelated, msg, None);
    }
}
