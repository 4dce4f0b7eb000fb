//! The read and outbox halves of both SQL backends, written once: each
//! statement's SQL (in the subset SQLite and PostgreSQL both accept, with
//! `?` placeholders), its arguments and the decoding of its rows. A backend
//! supplies only how statements run ([`SqlBackend`]) and gets [`Reads`],
//! [`Outbox`] and the state a shard is restored from. The write paths stay
//! per backend: that is where the two databases differ in what is fast.

use super::rows::{
    Cols, alert_record_from_row, alert_snapshot_from_row, alert_tally_from_row, change_from_row,
    fp_from_db, incident_from_row, outbox_from_row, problem_from_row, state_count_from_row,
    timeline_from_row,
};
use super::{
    AlertQuery, AlertRecord, BoxFuture, Delivery, IncidentQuery, Outbox, OutboxRow, Page, Reads,
    Restore, Snapshot, StateFilter, StoreError,
};
use crate::change::ChangeRecord;
use crate::domain::{
    Incident, IncidentId, IncidentState, Priority, Problem, TimelineEntry, Timestamp,
};
use std::borrow::Cow;

/// Where the two dialects still differ after the shared subset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// SQL for the text at `path` inside the JSON column `column` (NULL when
    /// absent or JSON null, in both).
    fn json_text(self, column: &str, path: &[&str]) -> String {
        match self {
            Dialect::Sqlite => format!("json_extract({column}, '$.{}')", path.join(".")),
            Dialect::Postgres => match path.split_last() {
                Some((last, parents)) => {
                    let mut s = column.to_string();
                    for p in parents {
                        s.push_str(&format!("->'{p}'"));
                    }
                    format!("{s}->>'{last}'")
                }
                None => column.to_string(),
            },
        }
    }

    /// SQL for the CI the correlation key of alert row `a` names
    /// (`<alertname>|ci:<ci>`, the inverse of `correlate::ci_of_key`),
    /// NULL for keys by host or fingerprint. A key with one `|ci:` is cut
    /// there; only one with several (an alert name holding `|ci:` itself)
    /// is read after the alert's name from its labels, which costs a JSON
    /// parse per row (two thirds of the query when done for all).
    fn ci_of_alert_key(self) -> String {
        let find = |s: &str| match self {
            Dialect::Sqlite => format!("instr({s}, '|ci:')"),
            Dialect::Postgres => format!("strpos({s}, '|ci:')"),
        };
        let at = find("a.corr_key");
        let rest = format!("substr(a.corr_key, {at} + 4)");
        let again = find(&rest);
        let name = self.json_text("a.labels", &["alertname"]);
        format!(
            "CASE WHEN {at} = 0 THEN NULL \
             WHEN {again} = 0 THEN {rest} \
             WHEN substr(a.corr_key, 1, length({name}) + 4) = {name} || '|ci:' \
             THEN substr(a.corr_key, length({name}) + 5) END"
        )
    }

    /// SQL that is true when the JSON array at `key` of the JSON object in
    /// `column` holds the text of the one `?` placeholder.
    fn json_array_has(self, column: &str, key: &str) -> String {
        match self {
            Dialect::Sqlite => format!(
                "EXISTS (SELECT 1 FROM json_each({column}, '$.{key}') WHERE json_each.value = ?)"
            ),
            Dialect::Postgres => {
                format!("({column}->'{key}') @> jsonb_build_array(CAST(? AS TEXT))")
            }
        }
    }
}

/// One statement argument, in the types both schemas use.
#[derive(Debug, Clone)]
pub enum Arg<'a> {
    Int(i64),
    Text(Cow<'a, str>),
    OptText(Option<Cow<'a, str>>),
    /// A PostgreSQL array (`= ANY(?)`); SQLite has none.
    Ints(Vec<i64>),
}

/// A statement: SQL with `?` placeholders, and its arguments in order.
#[derive(Debug, Clone)]
pub struct Stmt<'a> {
    pub sql: Cow<'static, str>,
    pub args: Vec<Arg<'a>>,
}

impl<'a> Stmt<'a> {
    fn new(sql: impl Into<Cow<'static, str>>) -> Self {
        Stmt {
            sql: sql.into(),
            args: Vec::new(),
        }
    }
    fn int(mut self, v: i64) -> Self {
        self.args.push(Arg::Int(v));
        self
    }
    fn text(mut self, v: impl Into<Cow<'a, str>>) -> Self {
        self.args.push(Arg::Text(v.into()));
        self
    }
    fn opt_text(mut self, v: Option<impl Into<Cow<'a, str>>>) -> Self {
        self.args.push(Arg::OptText(v.map(Into::into)));
        self
    }
    fn ints(mut self, v: Vec<i64>) -> Self {
        self.args.push(Arg::Ints(v));
        self
    }
}

/// How a backend runs statements. Reads go to its read side, writes to its
/// write side; each backend binds [`Arg`]s as its driver wants.
pub trait SqlBackend: Send + Sync + 'static {
    type Row: Cols + Send;
    const DIALECT: Dialect;
    /// Rows of one statement.
    fn fetch<'a>(&'a self, st: Stmt<'a>) -> BoxFuture<'a, Result<Vec<Self::Row>, StoreError>>;
    /// Rows of several statements, all read from one consistent state.
    fn fetch_consistent<'a>(
        &'a self,
        sts: Vec<Stmt<'a>>,
    ) -> BoxFuture<'a, Result<Vec<Vec<Self::Row>>, StoreError>>;
    /// Statements in one transaction; rows affected by the first.
    fn execute<'a>(&'a self, sts: Vec<Stmt<'a>>) -> BoxFuture<'a, Result<u64, StoreError>>;
}

/// The columns of an incident row, JSON as text in both schemas.
const INCIDENT_COLUMNS: &str = "id, key, state, priority, impact, urgency, title, root_ci, \
     assignment_group, alert_count, opened_at, acknowledged_at, acknowledged_by, resolved_at, \
     updated_at, reopen_count, flapping, CAST(extra AS TEXT) AS extra, shard";

/// The columns of a full alert row (table alias `a`).
const ALERT_COLUMNS: &str = "a.fingerprint, a.status, CAST(a.labels AS TEXT) AS labels, \
     CAST(a.annotations AS TEXT) AS annotations, a.starts_at, a.ends_at, a.source, \
     a.generator_url, a.incident_id, a.corr_key, a.suppressed_rule, a.suppressed_reason, \
     a.flapping, a.first_seen, a.last_seen, a.deliveries, a.change_id, a.shard";

/// The condition ` AND <column> IN (…)` for `shards` (empty for every
/// shard); `None` when the list is empty and nothing can match. Integers,
/// so inlining them is safe, and one instance's set is one statement.
fn shard_filter(column: &str, shards: Option<&[u32]>) -> Option<String> {
    match shards {
        None => Some(String::new()),
        Some([]) => None,
        Some(list) => {
            let ids: Vec<String> = list.iter().map(u32::to_string).collect();
            Some(format!(" AND {column} IN ({})", ids.join(", ")))
        }
    }
}

fn decode<R, T>(rows: &[R], f: impl Fn(&R) -> Result<T, StoreError>) -> Result<Vec<T>, StoreError> {
    rows.iter().map(f).collect()
}

/// The statement that reads the fingerprints of `incidents`.
fn fingerprints_of<'a>(dialect: Dialect, incidents: &[Incident]) -> Stmt<'a> {
    const SELECT: &str = "SELECT incident_id, fingerprint FROM incident_alerts WHERE ";
    const ORDER: &str = " ORDER BY incident_id, joined_at, fingerprint";
    match dialect {
        // No arrays: the id range, filtered by the index map below.
        Dialect::Sqlite => {
            let (lo, hi) = incidents.iter().fold((i64::MAX, i64::MIN), |(lo, hi), i| {
                (lo.min(i.id.0), hi.max(i.id.0))
            });
            Stmt::new(format!("{SELECT}incident_id BETWEEN ? AND ?{ORDER}"))
                .int(lo)
                .int(hi)
        }
        Dialect::Postgres => Stmt::new(format!("{SELECT}incident_id = ANY(?){ORDER}"))
            .ints(incidents.iter().map(|i| i.id.0).collect()),
    }
}

/// Fill `alert_fingerprints` from rows of (incident_id, fingerprint).
fn attach(rows: &[impl Cols], incidents: &mut [Incident]) -> Result<(), StoreError> {
    let mut index = rustc_hash::FxHashMap::default();
    for (i, inc) in incidents.iter().enumerate() {
        index.insert(inc.id.0, i);
    }
    for r in rows {
        if let Some(&i) = index.get(&r.int("incident_id")?) {
            incidents[i]
                .alert_fingerprints
                .push(fp_from_db(r.int("fingerprint")?));
        }
    }
    Ok(())
}

async fn with_fingerprints<B: SqlBackend>(
    b: &B,
    rows: Vec<B::Row>,
) -> Result<Vec<Incident>, StoreError> {
    let mut incidents = decode(&rows, incident_from_row)?;
    if !incidents.is_empty() {
        let fps = b.fetch(fingerprints_of(B::DIALECT, &incidents)).await?;
        attach(&fps, &mut incidents)?;
    }
    Ok(incidents)
}

/// A timeline entry written beside an outbox update (same transaction).
fn note_stmt<'a>((incident, e): (IncidentId, TimelineEntry)) -> Stmt<'a> {
    Stmt::new("INSERT INTO timeline (incident_id, at, kind, message, actor) VALUES (?, ?, ?, ?, ?)")
        .int(incident.0)
        .int(e.at.millis())
        .text(e.kind.as_str())
        .text(e.message)
        .opt_text(e.actor)
}

/// `IncidentLog::load_state` of a SQL backend: one consistent read.
pub(super) async fn load_state<B: SqlBackend>(
    b: &B,
    what: Restore,
) -> Result<Snapshot, StoreError> {
    let Restore {
        shard,
        resolved_since,
        alerts_since,
        signed_since,
    } = what;
    // -1 selects every shard.
    let shard = shard.map_or(-1, i64::from);
    let d = B::DIALECT;
    let restored = "(state <> 'resolved' OR resolved_at >= ?) AND (? < 0 OR shard = ?)";
    let statements = vec![
        Stmt::new(format!(
            "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE {restored} ORDER BY id"
        ))
        .int(resolved_since.millis())
        .int(shard)
        .int(shard),
        // The same incidents' fingerprints, in the same snapshot.
        Stmt::new(format!(
            "SELECT ia.incident_id, ia.fingerprint FROM incident_alerts ia
             WHERE ia.incident_id IN (SELECT id FROM incidents WHERE {restored})
             ORDER BY ia.incident_id, ia.joined_at, ia.fingerprint"
        ))
        .int(resolved_since.millis())
        .int(shard)
        .int(shard),
        Stmt::new(
            "SELECT fingerprint, status, starts_at, ends_at, incident_id, corr_key, suppressed_rule,
               flapping, last_seen, deliveries
             FROM alerts WHERE (status = 'firing' OR last_seen >= ?
               OR incident_id IN (SELECT id FROM incidents WHERE state <> 'resolved'))
               AND (? < 0 OR shard = ?)",
        )
        .int(alerts_since.millis())
        .int(shard)
        .int(shard),
        // Over all shards: new ids stay above any row, whoever wrote it.
        Stmt::new("SELECT MAX(id) AS n FROM incidents"),
        Stmt::new(format!(
            "SELECT id, opened_at, {} AS signature FROM incidents
             WHERE state = 'resolved' AND opened_at >= ? AND {} IS NULL AND (? < 0 OR shard = ?)",
            d.json_text("extra", &["signature"]),
            d.json_text("extra", &["links", "merged_into"]),
        ))
        .int(signed_since.millis())
        .int(shard)
        .int(shard),
        problems_stmt(),
        changes_stmt(),
    ];
    let mut results = b.fetch_consistent(statements).await?.into_iter();
    let mut next = || {
        results
            .next()
            .ok_or_else(|| StoreError::Corrupt("a snapshot statement returned nothing".into()))
    };
    let mut incidents = decode(&next()?, incident_from_row)?;
    attach(&next()?, &mut incidents)?;
    let alerts = decode(&next()?, alert_snapshot_from_row)?;
    let max_incident_id = match next()?.first() {
        Some(r) => r.opt_int("n")?.unwrap_or(0),
        None => 0,
    };
    let mut signed = Vec::new();
    for r in next()? {
        if let Some(sig) = r.opt_text("signature")? {
            signed.push((
                sig,
                Timestamp(r.int("opened_at")?),
                IncidentId(r.int("id")?),
            ));
        }
    }
    let problems = decode(&next()?, problem_from_row)?;
    let changes = decode(&next()?, change_from_row)?;
    Ok(Snapshot {
        incidents,
        alerts,
        max_incident_id,
        problems,
        signed,
        changes,
    })
}

fn problems_stmt<'a>() -> Stmt<'a> {
    Stmt::new("SELECT CAST(data AS TEXT) AS data FROM problems ORDER BY id")
}

fn changes_stmt<'a>() -> Stmt<'a> {
    Stmt::new("SELECT id, ci, state, start_at, end_at, summary FROM changes ORDER BY start_at, id")
}

impl<B: SqlBackend> Reads for B {
    fn list_incidents(&self, q: IncidentQuery) -> BoxFuture<'_, Result<Vec<Incident>, StoreError>> {
        Box::pin(async move {
            let limit = i64::from(if q.limit == 0 { 1000 } else { q.limit });
            let before = q.before.unwrap_or(i64::MAX);
            let (filter, state) = match q.state {
                StateFilter::All => ("", None),
                StateFilter::Active => (" AND state <> 'resolved'", None),
                StateFilter::Only(s) => (" AND state = ?", Some(s.as_str())),
            };
            let mut sql = format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id < ?{filter}");
            if q.priority.is_some() {
                sql.push_str(" AND priority = ?");
            }
            if q.service.is_some() {
                sql.push_str(" AND ");
                sql.push_str(&B::DIALECT.json_array_has("extra", "impacted_services"));
            }
            sql.push_str(" ORDER BY id DESC LIMIT ?");
            let mut st = Stmt::new(sql).int(before);
            if let Some(s) = state {
                st = st.text(s);
            }
            if let Some(p) = q.priority {
                st = st.int(i64::from(p.get()));
            }
            if let Some(s) = q.service {
                st = st.text(s);
            }
            let rows = self.fetch(st.int(limit)).await?;
            with_fingerprints(self, rows).await
        })
    }

    fn slo_incidents(
        &self,
        since: Timestamp,
        worst: Priority,
    ) -> BoxFuture<'_, Result<Vec<Incident>, StoreError>> {
        Box::pin(async move {
            // Two arms so that each uses an index: active incidents by
            // state, resolved ones by resolution time.
            let worst = i64::from(worst.get());
            let rows = self
                .fetch(
                    Stmt::new(format!(
                        "SELECT {INCIDENT_COLUMNS} FROM incidents
                           WHERE state <> 'resolved' AND priority <= ?
                         UNION ALL
                         SELECT {INCIDENT_COLUMNS} FROM incidents
                           WHERE resolved_at >= ? AND state = 'resolved' AND priority <= ?"
                    ))
                    .int(worst)
                    .int(since.millis())
                    .int(worst),
                )
                .await?;
            decode(&rows, incident_from_row)
        })
    }

    fn get_incident(&self, id: IncidentId) -> BoxFuture<'_, Result<Option<Incident>, StoreError>> {
        Box::pin(async move {
            let rows = self
                .fetch(
                    Stmt::new(format!(
                        "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = ?"
                    ))
                    .int(id.0),
                )
                .await?;
            Ok(with_fingerprints(self, rows).await?.pop())
        })
    }

    fn timeline(
        &self,
        id: IncidentId,
        page: Page,
    ) -> BoxFuture<'_, Result<Vec<TimelineEntry>, StoreError>> {
        Box::pin(async move {
            let rows = self
                .fetch(
                    Stmt::new(
                        "SELECT at, kind, message, actor FROM timeline WHERE incident_id = ?
                         ORDER BY id LIMIT ? OFFSET ?",
                    )
                    .int(id.0)
                    .int(i64::from(page.limit))
                    .int(i64::try_from(page.offset).unwrap_or(i64::MAX)),
                )
                .await?;
            decode(&rows, timeline_from_row)
        })
    }

    fn incident_alerts(
        &self,
        id: IncidentId,
        page: Page,
    ) -> BoxFuture<'_, Result<Vec<AlertRecord>, StoreError>> {
        Box::pin(async move {
            let rows = self
                .fetch(
                    Stmt::new(format!(
                        "SELECT {ALERT_COLUMNS}
                         FROM incident_alerts ia JOIN alerts a ON a.fingerprint = ia.fingerprint
                         WHERE ia.incident_id = ? ORDER BY ia.joined_at, a.fingerprint LIMIT ? OFFSET ?"
                    ))
                    .int(id.0)
                    .int(i64::from(page.limit))
                    .int(i64::try_from(page.offset).unwrap_or(i64::MAX)),
                )
                .await?;
            decode(&rows, alert_record_from_row)
        })
    }

    fn incidents_since_page(
        &self,
        since: Timestamp,
        after: super::IncidentCursor,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<Incident>, StoreError>> {
        use super::IncidentCursor;
        Box::pin(async move {
            let mut out = Vec::new();
            // Each arm uses an index: active incidents by state and id,
            // resolved ones by resolution time.
            if let IncidentCursor::Start | IncidentCursor::Active(_) = after {
                let from = match after {
                    IncidentCursor::Active(id) => id.0,
                    _ => i64::MIN,
                };
                let rows = self
                    .fetch(
                        Stmt::new(format!(
                            "SELECT {INCIDENT_COLUMNS} FROM incidents \
                             WHERE state <> 'resolved' AND id > ? ORDER BY id LIMIT ?"
                        ))
                        .int(from)
                        .int(i64::from(limit)),
                    )
                    .await?;
                out = decode(&rows, incident_from_row)?;
                if out.len() >= limit as usize {
                    return Ok(out);
                }
            }
            let (t, id) = match after {
                IncidentCursor::Resolved(t, id) => (t.millis(), id.0),
                _ => (since.millis().saturating_sub(1), i64::MIN),
            };
            let rows = self
                .fetch(
                    Stmt::new(format!(
                        "SELECT {INCIDENT_COLUMNS} FROM incidents \
                         WHERE state = 'resolved' AND resolved_at >= ? \
                           AND (resolved_at > ? OR (resolved_at = ? AND id > ?)) \
                         ORDER BY resolved_at, id LIMIT ?"
                    ))
                    .int(since.millis())
                    .int(t)
                    .int(t)
                    .int(id)
                    .int(i64::from(limit) - out.len() as i64),
                )
                .await?;
            out.extend(decode(&rows, incident_from_row)?);
            Ok(out)
        })
    }

    fn alert_tallies(
        &self,
        cuts: [Timestamp; 3],
    ) -> BoxFuture<'_, Result<Vec<super::AlertTally>, StoreError>> {
        Box::pin(async move {
            // One pass over the table, a handful of groups out: the CIs
            // times the rules, not the alerts.
            let ci = B::DIALECT.ci_of_alert_key();
            // An incident's key is that of the alert that opened it: an
            // attached alert with its incident's key opened it (counted
            // once per incident), the others joined it.
            let rows = self
                .fetch(
                    Stmt::new(format!(
                        "SELECT {ci} AS ci, a.suppressed_rule, \
                           CAST(CASE WHEN a.incident_id IS NULL THEN 0 ELSE 1 END AS BIGINT) AS attached, \
                           CAST(CASE WHEN a.starts_at > ? THEN 0 WHEN a.starts_at > ? THEN 1 ELSE 2 END AS BIGINT) AS band, \
                           COUNT(*) AS n, \
                           COUNT(DISTINCT CASE WHEN a.corr_key = i.key THEN a.incident_id END) AS opened \
                         FROM alerts a LEFT JOIN incidents i ON i.id = a.incident_id \
                         WHERE a.starts_at > ? GROUP BY 1, 2, 3, 4"
                    ))
                    .int(cuts[0].millis())
                    .int(cuts[1].millis())
                    .int(cuts[2].millis()),
                )
                .await?;
            decode(&rows, alert_tally_from_row)
        })
    }

    fn count_by_state(&self) -> BoxFuture<'_, Result<Vec<(IncidentState, u64)>, StoreError>> {
        Box::pin(async move {
            let rows = self
                .fetch(Stmt::new(
                    "SELECT state, COUNT(*) AS n FROM incidents GROUP BY state",
                ))
                .await?;
            decode(&rows, state_count_from_row)
        })
    }

    fn list_alerts(&self, q: AlertQuery) -> BoxFuture<'_, Result<Vec<AlertRecord>, StoreError>> {
        Box::pin(async move {
            let d = B::DIALECT;
            let name = d.json_text("a.labels", &["alertname"]);
            let mut sql = format!(
                "SELECT {ALERT_COLUMNS} FROM alerts a WHERE a.status = 'firing' AND a.suppressed_rule IS {}NULL",
                if q.suppressed { "NOT " } else { "" }
            );
            if q.alertname.is_some() {
                sql.push_str(&format!(" AND {name} = ?"));
            }
            if let Some(cis) = &q.cis {
                if cis.is_empty() {
                    return Ok(Vec::new());
                }
                // The key of a CI's alert is `<alertname>|ci:<ci>`
                // (`correlate::correlation_key_for`): what follows the
                // alert name is compared whole, so one CI's id never
                // matches as part of another's.
                let marks = vec!["?"; cis.len()].join(", ");
                sql.push_str(&format!(
                    " AND substr(a.corr_key, length(COALESCE({name}, '')) + 1) IN ({marks})"
                ));
            }
            sql.push_str(" ORDER BY a.starts_at DESC, a.fingerprint LIMIT ? OFFSET ?");
            let mut st = Stmt::new(sql);
            if let Some(n) = q.alertname {
                st = st.text(n);
            }
            for ci in q.cis.iter().flatten() {
                st = st.text(format!("{}{ci}", crate::correlate::CI_KEY));
            }
            let st = st
                .int(i64::from(q.page.limit))
                .int(i64::try_from(q.page.offset).unwrap_or(i64::MAX));
            decode(&self.fetch(st).await?, alert_record_from_row)
        })
    }

    fn list_problems(&self) -> BoxFuture<'_, Result<Vec<Problem>, StoreError>> {
        Box::pin(async move { decode(&self.fetch(problems_stmt()).await?, problem_from_row) })
    }

    fn list_changes(&self) -> BoxFuture<'_, Result<Vec<ChangeRecord>, StoreError>> {
        Box::pin(async move { decode(&self.fetch(changes_stmt()).await?, change_from_row) })
    }
}

impl<B: SqlBackend> Outbox for B {
    fn outbox_pending<'a>(
        &'a self,
        destination: &'a str,
        shards: Option<&'a [u32]>,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<OutboxRow>, StoreError>> {
        Box::pin(async move {
            let Some(only) = shard_filter("shard", shards) else {
                return Ok(Vec::new());
            };
            let rows = self
                .fetch(
                    Stmt::new(format!(
                        "SELECT id, destination, kind, at, CAST(incident AS TEXT) AS incident,
                           attempts, next_at, last_error
                         FROM outbox WHERE destination = ? AND done_at IS NULL{only}
                         ORDER BY id LIMIT ?"
                    ))
                    .text(destination)
                    .int(i64::from(limit)),
                )
                .await?;
            decode(&rows, outbox_from_row)
        })
    }

    fn outbox_wake<'a>(
        &'a self,
        destination: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        self.execute(vec![
            Stmt::new(
                "UPDATE outbox SET next_at = ? WHERE destination = ? AND done_at IS NULL AND next_at > ?",
            )
            .int(now.millis())
            .text(destination)
            .int(now.millis()),
        ])
    }

    fn outbox_retry(
        &self,
        id: i64,
        attempts: u32,
        next_at: Timestamp,
        error: String,
        note: Option<(IncidentId, TimelineEntry)>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let mut sts = vec![
                Stmt::new(
                    "UPDATE outbox SET attempts = ?, next_at = ?, last_error = ? WHERE id = ?",
                )
                .int(i64::from(attempts))
                .int(next_at.millis())
                .text(error)
                .int(id),
            ];
            sts.extend(note.map(note_stmt));
            self.execute(sts).await.map(drop)
        })
    }

    fn outbox_finish(
        &self,
        id: i64,
        at: Timestamp,
        outcome: Delivery,
        note: Option<(IncidentId, TimelineEntry)>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let (outcome, error) = match outcome {
                Delivery::Delivered => ("delivered", None),
                Delivery::GaveUp(why) => ("gave_up", Some(why)),
            };
            let mut sts = vec![
                Stmt::new(
                    "UPDATE outbox SET done_at = ?, outcome = ?, last_error = COALESCE(?, last_error)
                     WHERE id = ?",
                )
                .int(at.millis())
                .text(outcome)
                .opt_text(error)
                .int(id),
            ];
            sts.extend(note.map(note_stmt));
            self.execute(sts).await.map(drop)
        })
    }

    fn outbox_depth<'a>(
        &'a self,
        shards: Option<&'a [u32]>,
    ) -> BoxFuture<'a, Result<Vec<(String, u64)>, StoreError>> {
        Box::pin(async move {
            let Some(only) = shard_filter("shard", shards) else {
                return Ok(Vec::new());
            };
            let rows = self
                .fetch(Stmt::new(format!(
                    "SELECT destination, COUNT(*) AS n FROM outbox
                     WHERE done_at IS NULL{only} GROUP BY destination"
                )))
                .await?;
            decode(&rows, |r| {
                Ok((
                    r.text("destination")?,
                    u64::try_from(r.int("n")?).unwrap_or(0),
                ))
            })
        })
    }

    fn outbox_prune(
        &self,
        before: Timestamp,
        limit: u32,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.execute(vec![
            Stmt::new(
                "DELETE FROM outbox WHERE id IN
                   (SELECT id FROM outbox WHERE done_at IS NOT NULL AND done_at < ? ORDER BY id LIMIT ?)",
            )
            .int(before.millis())
            .int(i64::from(limit)),
        ])
    }

    fn outbound_poll_refs<'a>(
        &'a self,
        destination: &'a str,
        shards: Option<&'a [u32]>,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<(IncidentId, String)>, StoreError>> {
        Box::pin(async move {
            let Some(only) = shard_filter("i.shard", shards) else {
                return Ok(Vec::new());
            };
            let rows = self
                .fetch(
                    Stmt::new(format!(
                        "SELECT r.incident_id, r.external_id FROM outbound_refs r
                         JOIN incidents i ON i.id = r.incident_id
                         WHERE r.destination = ? AND i.state <> 'resolved'{only}
                           -- Uncorrelated: the pending set is built once, not per ticket.
                           AND r.incident_id NOT IN (SELECT o.incident_id FROM outbox o
                                                     WHERE o.destination = ? AND o.done_at IS NULL)
                         ORDER BY r.incident_id LIMIT ?"
                    ))
                    .text(destination)
                    .text(destination)
                    .int(i64::from(limit)),
                )
                .await?;
            decode(&rows, |r| {
                Ok((IncidentId(r.int("incident_id")?), r.text("external_id")?))
            })
        })
    }

    fn first_alert_labels(
        &self,
        incident: IncidentId,
    ) -> BoxFuture<'_, Result<Option<crate::domain::LabelSet>, StoreError>> {
        Box::pin(async move {
            let first = Reads::incident_alerts(
                self,
                incident,
                super::Page {
                    offset: 0,
                    limit: 1,
                },
            )
            .await?;
            Ok(first.into_iter().next().map(|a| a.labels))
        })
    }

    fn timeline_note(
        &self,
        incident: IncidentId,
        entry: TimelineEntry,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.execute(vec![note_stmt((incident, entry))])
                .await
                .map(drop)
        })
    }

    fn outbound_refs_like<'a>(
        &'a self,
        destination: &'a str,
        prefix: &'a str,
        shards: Option<&'a [u32]>,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<(IncidentId, String)>, StoreError>> {
        Box::pin(async move {
            let Some(only) = shard_filter("i.shard", shards) else {
                return Ok(Vec::new());
            };
            // The prefix matched literally: LIKE's wildcards escaped.
            let pattern = format!(
                "{}%",
                prefix
                    .replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_")
            );
            let rows = self
                .fetch(
                    Stmt::new(format!(
                        "SELECT r.incident_id, r.external_id FROM outbound_refs r
                         JOIN incidents i ON i.id = r.incident_id
                         WHERE r.destination = ? AND r.external_id LIKE ? ESCAPE '\\'{only}
                         ORDER BY r.incident_id LIMIT ?"
                    ))
                    .text(destination)
                    .text(pattern)
                    .int(i64::from(limit)),
                )
                .await?;
            decode(&rows, |r| {
                Ok((IncidentId(r.int("incident_id")?), r.text("external_id")?))
            })
        })
    }

    fn outbound_ref<'a>(
        &'a self,
        destination: &'a str,
        incident: IncidentId,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        Box::pin(async move {
            let rows = self
                .fetch(
                    Stmt::new(
                        "SELECT external_id FROM outbound_refs WHERE destination = ? AND incident_id = ?",
                    )
                    .text(destination)
                    .int(incident.0),
                )
                .await?;
            rows.first()
                .map(|r| r.text("external_id"))
                .transpose()
                .map_err(StoreError::from)
        })
    }

    fn set_outbound_ref<'a>(
        &'a self,
        destination: &'a str,
        incident: IncidentId,
        external: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.execute(vec![
                Stmt::new(
                    "INSERT INTO outbound_refs (destination, incident_id, external_id) VALUES (?, ?, ?)
                     ON CONFLICT (destination, incident_id) DO UPDATE SET external_id = excluded.external_id",
                )
                .text(destination)
                .int(incident.0)
                .text(external),
            ])
            .await
            .map(drop)
        })
    }
}

/// `?` placeholders numbered `$1, $2, …` for PostgreSQL. The shared SQL
/// has no `?` inside literals or operators, so every one is a placeholder.
pub(super) fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_in_order() {
        assert_eq!(
            numbered("UPDATE t SET a = ? WHERE b = ? AND c > ?"),
            "UPDATE t SET a = $1 WHERE b = $2 AND c > $3"
        );
    }

    #[test]
    fn json_paths_in_each_dialect() {
        assert_eq!(
            Dialect::Sqlite.json_text("extra", &["links", "merged_into"]),
            "json_extract(extra, '$.links.merged_into')"
        );
        assert_eq!(
            Dialect::Postgres.json_text("extra", &["links", "merged_into"]),
            "extra->'links'->>'merged_into'"
        );
    }

    #[test]
    fn an_empty_shard_list_matches_nothing() {
        assert_eq!(shard_filter("shard", Some(&[])), None);
        assert_eq!(shard_filter("shard", None).as_deref(), Some(""));
        assert_eq!(
            shard_filter("i.shard", Some(&[2, 5])).as_deref(),
            Some(" AND i.shard IN (2, 5)")
        );
    }
}
