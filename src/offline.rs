//! What the offline commands (`replay`, `test`) and the daemon's start
//! share: loading rules, the CMDB and change records from files, and
//! replaying recorded bodies through the same pipeline on event time
//! against an in-memory store. Not wiring: `app` and `ruletest` both use it.

use crate::change::{self, ChangeRecord};
use crate::cmdb::{self, Cmdb};
use crate::config::{self, Config, Overrides};
use crate::domain::{Incident, Timestamp};
use crate::incident::{Engine, EngineConfig};
use crate::normalize;
use crate::rules::RuleSet;
use crate::store::{IncidentLog, IncidentQuery, Reads, SqliteStore, StateFilter};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Read the rules directory, every error in one message (a missing
/// directory runs without rules, with a warning).
pub fn load_rules(dir: &Path) -> Result<RuleSet> {
    load_rules_checked(dir, None)
}

/// The daemon's rules: [`load_rules`] of the configured directory, where a
/// `notify` must name a configured destination.
pub fn daemon_rules(cfg: &Config) -> Result<RuleSet> {
    let names = destination_names(cfg);
    load_rules_checked(&cfg.rules_dir, Some(&names))
}

/// The names of the configured outbound destinations.
pub fn destination_names(cfg: &Config) -> Vec<String> {
    cfg.outbound.iter().map(|d| d.name.clone()).collect()
}

fn load_rules_checked(dir: &Path, destinations: Option<&[String]>) -> Result<RuleSet> {
    if !dir.exists() {
        tracing::warn!(dir = %dir.display(), "rules directory does not exist; running without rules");
        return Ok(RuleSet::empty());
    }
    RuleSet::load_dir_for(dir, destinations).map_err(|errs| {
        let list: Vec<String> = errs.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("invalid rules:\n  {}", list.join("\n  "))
    })
}

/// Result of a replay: the incidents as the store holds them at the end.
pub struct ReplayResult {
    pub incidents: Vec<Incident>,
    pub problems: Vec<crate::domain::Problem>,
    /// Alerts refused alone (as live ingest would), with the label of
    /// their body.
    pub rejected: Vec<(String, normalize::Rejected)>,
    /// Deliveries each incident's alerts received, repeats included (the
    /// incident's `alert_count` counts distinct alerts).
    pub deliveries: std::collections::HashMap<crate::domain::IncidentId, u64>,
    pub summary: ReplaySummary,
}

/// What the stream amounted to: distinct alerts, incidents opened, and
/// the incidents that would have been announced (paged) once their settle
/// delay ended, the rest having been merged away or resolved before then.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ReplaySummary {
    pub alerts: u64,
    pub incidents: u64,
    pub pages: u64,
    pub withheld: u64,
    /// How long announced incidents waited for their first announcement
    /// (engine time from opening): median, 95th percentile, longest.
    pub page_delay_seconds: PageDelays,
}

/// Quantiles of the wait before the first announcement, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct PageDelays {
    pub p50: f64,
    pub p95: f64,
    pub max: f64,
}

impl PageDelays {
    fn of(delays: &[std::time::Duration]) -> PageDelays {
        let mut v: Vec<f64> = delays
            .iter()
            .map(std::time::Duration::as_secs_f64)
            .collect();
        v.sort_by(f64::total_cmp);
        let q = |p: f64| {
            v.get(((v.len() as f64 * p).ceil() as usize).saturating_sub(1))
                .copied()
                .unwrap_or(0.0)
        };
        PageDelays {
            p50: q(0.5),
            p95: q(0.95),
            max: v.last().copied().unwrap_or(0.0),
        }
    }
}

/// Run recorded bodies (JSON lines or whole JSON documents) through the full
/// pipeline on event time against an in-memory store.
pub async fn replay(setup: Offline, files: &[PathBuf]) -> Result<ReplayResult> {
    let mut bodies = Vec::new();
    for file in files {
        let text = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        bodies.extend(
            split_bodies(&text)
                .into_iter()
                .map(|(line, body)| (format!("{}:{line}", file.display()), body.to_vec())),
        );
    }
    replay_bodies(setup, bodies).await
}

/// [`replay`] over bodies already in memory, in delivery order. Each body
/// comes with a label (`file:line`, a test case's item) that errors name.
pub async fn replay_bodies(setup: Offline, bodies: Vec<(String, Vec<u8>)>) -> Result<ReplayResult> {
    let store = SqliteStore::in_memory().await?;
    let mut engine = Engine::new(
        EngineConfig {
            count_pages: true,
            ..setup.engine
        },
        setup.rules,
    );
    engine.set_cmdb(setup.cmdb);
    engine.add_changes(setup.changes, true);
    let mut clock = Timestamp::MIN;
    let mut pending: Vec<crate::store::StoreOp> = Vec::new();
    let mut rejected = Vec::new();
    for (label, body) in bodies {
        let provisional = if clock == Timestamp::MIN {
            Timestamp::now()
        } else {
            clock
        };
        // A recorded stream's times are its own: no bounds (live ingest
        // bounds them at receipt, so a recording of what was accepted
        // holds bounded times already).
        let batch = normalize::parse_any(&body, &normalize::Intake::offline(provisional))
            .with_context(|| label.clone())?;
        rejected.extend(batch.rejected.into_iter().map(|r| (label.clone(), r)));
        let events = batch.events;
        let body_time = events
            .iter()
            .map(|e| match e {
                normalize::Event::Alert(a) => a.event_time(),
                normalize::Event::Acknowledge { at, .. } | normalize::Event::Note { at, .. } => *at,
            })
            .max();
        if let Some(t) = body_time {
            clock = clock.max(t);
        }
        engine.tick(clock);
        engine.ingest(events, clock);
        if let Some((_, ops)) = engine.take_batch() {
            pending.extend(ops);
        }
        // Replay exports no metrics: drop the lifecycle observations.
        let _ = engine.take_lifecycle();
        // Nobody waits for durability here: commit in large batches.
        if pending.len() >= 20_000 {
            store.apply(&pending).await?;
            pending.clear();
        }
    }
    // Let the stream settle: announcements and auto-resolve holds come
    // due in time order, each decided at its own time (a resolve after an
    // announcement must not withhold it).
    let horizon = clock.saturating_add(engine.announce_horizon());
    while let Some(due) = engine.next_due() {
        let step = due.max(clock);
        engine.tick(step);
        if let Some((_, ops)) = engine.take_batch() {
            pending.extend(ops);
        }
        let _ = engine.take_lifecycle();
        clock = step;
        if clock > horizon && engine.last_due().is_none_or(|d| d <= clock) {
            break;
        }
    }
    engine.flush_touches();
    if let Some((_, ops)) = engine.take_batch() {
        pending.extend(ops);
    }
    store.apply(&pending).await?;
    let mut incidents = store
        .list_incidents(IncidentQuery {
            state: StateFilter::All,
            limit: u32::MAX,
            before: None,
            ..Default::default()
        })
        .await?;
    incidents.reverse();
    let problems = store.list_problems().await?;
    let mut deliveries = std::collections::HashMap::with_capacity(incidents.len());
    for inc in &incidents {
        let alerts = store
            .incident_alerts(inc.id, crate::store::Page::ALL)
            .await?;
        deliveries.insert(inc.id, alerts.iter().map(|a| a.deliveries).sum());
    }
    let stats = &engine.stats;
    let summary = ReplaySummary {
        alerts: stats.new_alerts,
        incidents: stats.incidents_created,
        pages: stats.announcements[0],
        withheld: stats.announcements[1],
        page_delay_seconds: PageDelays::of(engine.page_delays()),
    };
    Ok(ReplayResult {
        incidents,
        problems,
        rejected,
        deliveries,
        summary,
    })
}

/// A file is JSON lines, or one JSON document (possibly pretty-printed).
fn split_bodies(text: &[u8]) -> Vec<(usize, &[u8])> {
    let whole = text.trim_ascii();
    if serde_json::from_slice::<serde::de::IgnoredAny>(whole).is_ok() {
        return vec![(1, whole)];
    }
    text.split(|b| *b == b'\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_ascii()))
        .filter(|(_, l)| !l.is_empty())
        .collect()
}

/// What offline commands (replay, test) run with.
#[derive(Clone)]
pub struct Offline {
    pub engine: EngineConfig,
    pub rules: Arc<RuleSet>,
    pub cmdb: Arc<Cmdb>,
    pub changes: Vec<ChangeRecord>,
}

/// Where an offline command's CMDB comes from.
pub enum CmdbChoice {
    /// This file.
    File(PathBuf),
    /// What the config says, or `deploy/cmdb.yaml` when it exists.
    Configured,
    /// No CMDB.
    None,
}

/// Engine settings, rules, CMDB and changes for offline commands.
pub fn offline_setup(
    config_file: Option<&Path>,
    rules_dir: Option<PathBuf>,
    cmdb: CmdbChoice,
    changes: Option<&Path>,
) -> Result<Offline> {
    let cfg = config::load(
        config_file,
        &Overrides {
            rules_dir,
            ..Overrides::default()
        },
    )?;
    let rules = load_rules(&cfg.rules_dir)?;
    let cmdb = match cmdb {
        CmdbChoice::File(p) => load_cmdb(&p)?,
        CmdbChoice::Configured => initial_cmdb(&cfg)?,
        CmdbChoice::None => Cmdb::empty(),
    };
    let changes = match changes {
        Some(p) => {
            let changes = read_changes(p)?;
            let unknown = change::unknown_cis(&changes, |ci| cmdb.ci_by_id(ci).is_some());
            if !unknown.is_empty() {
                let list: Vec<String> = unknown
                    .iter()
                    .map(|e| format!("{}: {e}", p.display()))
                    .collect();
                anyhow::bail!(
                    "invalid change records:
  {}",
                    list.join(
                        "
  "
                    )
                );
            }
            changes
        }
        None => Vec::new(),
    };
    Ok(Offline {
        engine: cfg.engine,
        rules: Arc::new(rules),
        cmdb: Arc::new(cmdb),
        changes,
    })
}

/// Read a JSON file of change records.
pub fn read_changes(path: &Path) -> Result<Vec<ChangeRecord>> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    change::parse_changes(&text).map_err(|errs| {
        let list: Vec<String> = errs
            .iter()
            .map(|e| format!("{}: {e}", path.display()))
            .collect();
        anyhow::anyhow!("invalid change records:\n  {}", list.join("\n  "))
    })
}

/// Read and validate a CMDB file, every error in one message.
pub fn load_cmdb(path: &Path) -> Result<Cmdb> {
    let cmdb = cmdb::load_file(path).map_err(|errs| {
        let list: Vec<String> = errs.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("invalid CMDB:\n  {}", list.join("\n  "))
    })?;
    for w in cmdb.warnings() {
        tracing::warn!(warning = %w, "CMDB");
    }
    Ok(cmdb)
}

/// The CMDB to start with: the configured file (an error if missing), or
/// `deploy/cmdb.yaml` when present, else none.
pub fn initial_cmdb(cfg: &Config) -> Result<Cmdb> {
    match &cfg.cmdb {
        Some(p) if p.exists() => load_cmdb(p),
        Some(p) if cfg.cmdb_required => anyhow::bail!("CMDB file {} does not exist", p.display()),
        _ => Ok(Cmdb::empty()),
    }
}
