//! PostgreSQL store, for several daemon instances (one per set of Kafka
//! shards) sharing one database. A batch is one transaction of a few
//! multi-row statements whose values travel as bound arrays (`UNNEST`), so a
//! batch of any size costs a handful of round trips and never meets the
//! 65535 bind-parameter limit.
//!
//! PostgreSQL text cannot hold U+0000, not even as a JSON escape in JSONB;
//! writes replace it with U+FFFD, because a batch the database refuses would
//! be retried forever by the writer and stall every later commit.

use super::batch::{Grouped, TouchRow, group};
use super::rows::{change_state_str, count_to_db, extra_json, fp_to_db, to_json};
use super::sql::{self, Arg, Dialect, SqlBackend, Stmt};
use super::{
    AlertRecord, AlertUpdate, BoxFuture, IncidentLog, Restore, Snapshot, StoreError, StoreOp,
};
use crate::change::ChangeRecord;
use crate::domain::{Incident, IncidentId, IncidentState, Problem, TimelineEntry, Timestamp};
use sqlx::postgres::{
    PgArguments, PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow, Postgres,
};
use sqlx::query::Query;
use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/postgres/0001_init.sql")),
    (
        2,
        include_str!("migrations/postgres/0002_hot_path_indexes.sql"),
    ),
    (3, include_str!("migrations/postgres/0003_outbox.sql")),
    (4, include_str!("migrations/postgres/0004_outbox_shard.sql")),
];

/// Key of the advisory lock held while migrating, so that instances starting
/// together migrate one after the other ("incident" in ASCII).
const MIGRATION_LOCK: i64 = 0x696e_6369_6465_6e74;

/// How long to wait for a connection: an unreachable database then fails a
/// commit (which the writer retries) or `/readyz`, instead of hanging.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

pub struct PgStore {
    pool: PgPool,
    lanes: usize,
    /// Incidents stored under a disambiguated key because another shard's
    /// incident was already active under theirs (see [`PgStore::apply`]).
    rekeyed: std::sync::Mutex<rustc_hash::FxHashMap<IncidentId, String>>,
}

/// The partial unique index that allows one active incident per key.
const ONE_ACTIVE_PER_KEY: &str = "incidents_one_active_per_key";

fn is_key_conflict(e: &StoreError) -> bool {
    matches!(e, StoreError::Db(sqlx::Error::Database(d))
        if d.code().as_deref() == Some("23505") && d.constraint() == Some(ONE_ACTIVE_PER_KEY))
}

/// The root certificate libpq reads when `sslrootcert` is not given.
fn libpq_default_root() -> Option<std::path::PathBuf> {
    let home = std::env::var_os("HOME")?;
    let p = std::path::Path::new(&home).join(".postgresql/root.crt");
    p.is_file().then_some(p)
}

/// Connection options from a libpq-style URL, keeping libpq's TLS rules
/// where sqlx's own differ (PostgreSQL docs, "SSL Support", §34.19):
///
/// - `sslmode=require` with a root certificate (`sslrootcert`,
///   `PGSSLROOTCERT`, or `~/.postgresql/root.crt`) verifies the chain, as
///   `verify-ca` does; without one it encrypts without verifying;
/// - `sslrootcert=system` trusts the operating system's store and implies
///   `verify-full` (a weaker explicit mode is an error);
/// - `verify-ca` / `verify-full` without any root certificate use the
///   system store (libpq would refuse to connect).
///
/// `password` (from `store.password_file`) replaces one in the URL.
pub fn connect_options(url: &str, password: Option<&str>) -> Result<PgConnectOptions, StoreError> {
    use sqlx::postgres::PgSslMode;
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut kept = Vec::new();
    let mut system = false;
    let mut root_given = std::env::var_os("PGSSLROOTCERT").is_some();
    let mut mode_given = std::env::var_os("PGSSLMODE").is_some();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "sslrootcert" | "ssl-root-cert" | "ssl-ca" if v == "system" => system = true,
            "sslrootcert" | "ssl-root-cert" | "ssl-ca" => {
                root_given = true;
                kept.push(pair);
            }
            "sslmode" | "ssl-mode" => {
                mode_given = true;
                kept.push(pair);
            }
            _ => kept.push(pair),
        }
    }
    let rebuilt = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let mut options = PgConnectOptions::from_str(&rebuilt)?;
    let mode = options.get_ssl_mode();
    if system {
        if mode_given && !matches!(mode, PgSslMode::VerifyFull) {
            return Err(StoreError::Config(
                "sslrootcert=system needs sslmode=verify-full (or no sslmode)".into(),
            ));
        }
        options = options.ssl_mode(PgSslMode::VerifyFull);
    } else if !root_given
        && matches!(
            mode,
            PgSslMode::Require | PgSslMode::VerifyCa | PgSslMode::VerifyFull
        )
        && let Some(root) = libpq_default_root()
    {
        options = options.ssl_root_cert(root);
        root_given = true;
    }
    if root_given && matches!(options.get_ssl_mode(), PgSslMode::Require) {
        options = options.ssl_mode(PgSslMode::VerifyCa);
    }
    if let Some(p) = password {
        options = options.password(p);
    }
    Ok(options)
}

impl PgStore {
    /// Connect to `url` (`postgres://user@host:port/db`) with a pool of up to
    /// `max_connections`, and migrate the database.
    pub async fn connect(url: &str, max_connections: u32) -> Result<PgStore, StoreError> {
        PgStore::connect_with(connect_options(url, None)?, max_connections).await
    }

    /// Connect with options built by [`connect_options`].
    pub async fn connect_with(
        options: PgConnectOptions,
        max_connections: u32,
    ) -> Result<PgStore, StoreError> {
        // One connection first, alone: its error names the cause
        // ("Connection refused", "invalid peer certificate: …", a refused
        // password), where the pool would only say it timed out.
        {
            use sqlx::ConnectOptions;
            let first = options.connect().await?;
            let _ = sqlx::Connection::close(first).await;
        }
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        migrate(&pool).await?;
        // Half the pool writes (one backend per lane), the rest serves
        // reads; at most four lanes, beyond which the server's WAL and
        // CPU, not the lanes, limit.
        let lanes = (max_connections as usize / 2).clamp(1, 4);
        Ok(PgStore {
            pool,
            lanes,
            rekeyed: std::sync::Mutex::new(rustc_hash::FxHashMap::default()),
        })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A batch opened an incident under a key that another incident (of
    /// another shard: producers keyed the topic inconsistently, or a key's
    /// alerts arrive on two topics) already holds active. Refusing the batch
    /// would stall every commit behind it; instead the newcomer is stored
    /// under `key#<id>`, keeping the database's one-active-per-key rule, and
    /// the split is logged. Returns whether anything was re-keyed.
    async fn rekey_conflicts(&self, incidents: &[&Incident]) -> Result<bool, StoreError> {
        let active: Vec<&Incident> = incidents
            .iter()
            .copied()
            .filter(|i| i.state != IncidentState::Resolved)
            .collect();
        let mut map = self
            .rekeyed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let keys: Vec<&str> = active
            .iter()
            .map(|i| map.get(&i.id).map_or(&*i.key, String::as_str))
            .collect();
        let holders: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT key, id, shard FROM incidents WHERE key = ANY($1) AND state <> 'resolved'",
        )
        .bind(&keys)
        .fetch_all(&self.pool)
        .await?;
        let mut holder: rustc_hash::FxHashMap<String, (i64, i64)> = holders
            .into_iter()
            .map(|(k, id, shard)| (k, (id, shard)))
            .collect();
        let mut changed = false;
        for inc in &active {
            let key = map
                .get(&inc.id)
                .cloned()
                .unwrap_or_else(|| inc.key.to_string());
            match holder.get(&key) {
                Some(&(owner, _)) if owner == inc.id.0 => {}
                // Within one shard a second active incident is an engine
                // bug: the database refuses it, as it should.
                Some(&(_, shard)) if shard == i64::from(inc.shard) => {}
                Some(&(owner, shard)) => {
                    let new_key = format!("{}#{}", inc.key, inc.id.0);
                    tracing::error!(
                        key = %inc.key,
                        active_incident = owner,
                        active_shard = shard,
                        incident = inc.id.0,
                        shard = inc.shard,
                        stored_key = %new_key,
                        "two shards opened incidents for one correlation key: messages of one key \
                         reach several partitions (check the producers' message keys)"
                    );
                    map.insert(inc.id, new_key);
                    changed = true;
                }
                // Two of this batch's incidents may share the key: the
                // first keeps it.
                None => {
                    holder.insert(key, (inc.id.0, i64::from(inc.shard)));
                }
            }
        }
        *self.rekeyed.lock().unwrap_or_else(|p| p.into_inner()) = map;
        Ok(changed)
    }
}

/// Apply the missing migrations in one transaction, under an advisory lock:
/// a second instance waits, then finds them applied.
async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await?;
    // "already exists, skipping" notices would be logged at info on every start.
    sqlx::query("SET LOCAL client_min_messages = warning")
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *tx)
    .await?;
    let done: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations")
        .fetch_all(&mut *tx)
        .await?;
    for (version, sql) in MIGRATIONS {
        if done.contains(version) {
            continue;
        }
        sqlx::raw_sql(sqlx::AssertSqlSafe(*sql))
            .execute(&mut *tx)
            .await
            .map_err(|source| StoreError::Migration {
                version: *version,
                source,
            })?;
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
            .bind(version)
            .bind(Timestamp::now().millis())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Text as PostgreSQL can store it (see the module doc).
fn text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

fn opt_text(s: Option<&str>) -> Option<Cow<'_, str>> {
    s.map(text)
}

/// JSON text as JSONB accepts it: each `\u0000` escape becomes `\ufffd`.
/// Walks escape by escape, so an escaped backslash followed by `u0000`
/// (`\\u0000`, a literal backslash in the value) is left alone.
fn json_text(s: String) -> String {
    if !s.contains("\\u0000") {
        return s;
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s.as_str();
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let esc = &rest[i..];
        if let Some(after) = esc.strip_prefix("\\u0000") {
            out.push_str("\\ufffd");
            rest = after;
        } else {
            // The backslash and the character it escapes.
            let n = 1 + esc[1..].chars().next().map_or(0, char::len_utf8);
            out.push_str(&esc[..n]);
            rest = &esc[n..];
        }
    }
    out.push_str(rest);
    out
}

/// One column of a multi-row statement, bound as an array.
fn col<'a, T: ?Sized, U>(rows: &[&'a T], f: impl Fn(&'a T) -> U) -> Vec<U> {
    rows.iter().map(|r| f(r)).collect()
}

async fn upsert_incidents(
    c: &mut PgConnection,
    rows: &[&Incident],
    rekeyed: &rustc_hash::FxHashMap<IncidentId, String>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO incidents (id, key, state, priority, impact, urgency, title, root_ci, assignment_group, \
           alert_count, opened_at, acknowledged_at, acknowledged_by, resolved_at, updated_at, reopen_count, \
           flapping, extra, shard)
         SELECT id, key, state, priority, impact, urgency, title, root_ci, assignment_group, alert_count, \
           opened_at, acknowledged_at, acknowledged_by, resolved_at, updated_at, reopen_count, flapping, \
           extra::jsonb, shard
         FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], \
           $7::text[], $8::text[], $9::text[], $10::bigint[], $11::bigint[], $12::bigint[], $13::text[], \
           $14::bigint[], $15::bigint[], $16::bigint[], $17::boolean[], $18::text[], $19::bigint[])
           AS v(id, key, state, priority, impact, urgency, title, root_ci, assignment_group, alert_count, \
           opened_at, acknowledged_at, acknowledged_by, resolved_at, updated_at, reopen_count, flapping, \
           extra, shard)
         ON CONFLICT (id) DO UPDATE SET key = EXCLUDED.key, state = EXCLUDED.state, \
           priority = EXCLUDED.priority, impact = EXCLUDED.impact, urgency = EXCLUDED.urgency, \
           title = EXCLUDED.title, root_ci = EXCLUDED.root_ci, assignment_group = EXCLUDED.assignment_group, \
           alert_count = EXCLUDED.alert_count, \
           opened_at = EXCLUDED.opened_at, acknowledged_at = EXCLUDED.acknowledged_at, \
           acknowledged_by = EXCLUDED.acknowledged_by, resolved_at = EXCLUDED.resolved_at, \
           updated_at = EXCLUDED.updated_at, reopen_count = EXCLUDED.reopen_count, \
           flapping = EXCLUDED.flapping, extra = EXCLUDED.extra, shard = EXCLUDED.shard",
    )
    .bind(col(rows, |i| i.id.0))
    .bind(col(rows, |i| text(rekeyed.get(&i.id).map_or(&*i.key, String::as_str))))
    .bind(col(rows, |i| i.state.as_str()))
    .bind(col(rows, |i| i64::from(i.priority.get())))
    .bind(col(rows, |i| i64::from(i.impact.get())))
    .bind(col(rows, |i| i64::from(i.urgency.get())))
    .bind(col(rows, |i| text(&i.title)))
    .bind(col(rows, |i| opt_text(i.root_ci.as_deref())))
    .bind(col(rows, |i| opt_text(i.assignment_group.as_deref())))
    .bind(col(rows, |i| count_to_db(i.alert_count)))
    .bind(col(rows, |i| i.opened_at.millis()))
    .bind(col(rows, |i| i.acknowledged_at.map(Timestamp::millis)))
    .bind(col(rows, |i| opt_text(i.acknowledged_by.as_deref())))
    .bind(col(rows, |i| i.resolved_at.map(Timestamp::millis)))
    .bind(col(rows, |i| i.updated_at.millis()))
    .bind(col(rows, |i| i64::from(i.reopen_count)))
    .bind(col(rows, |i| i.flapping))
    .bind(col(rows, |i| json_text(extra_json(i))))
    .bind(col(rows, |i| i64::from(i.shard)))
    .execute(c)
    .await?;
    Ok(())
}

async fn insert_alerts(c: &mut PgConnection, rows: &[&AlertRecord]) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO alerts (fingerprint, status, labels, annotations, starts_at, ends_at, source, \
           generator_url, incident_id, corr_key, suppressed_rule, suppressed_reason, flapping, first_seen, \
           last_seen, deliveries, change_id, shard)
         SELECT fingerprint, status, labels::jsonb, annotations::jsonb, starts_at, ends_at, source, \
           generator_url, incident_id, corr_key, suppressed_rule, suppressed_reason, flapping, first_seen, \
           last_seen, deliveries, change_id, shard
         FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], \
           $7::text[], $8::text[], $9::bigint[], $10::text[], $11::text[], $12::text[], $13::boolean[], \
           $14::bigint[], $15::bigint[], $16::bigint[], $17::text[], $18::bigint[])
           AS v(fingerprint, status, labels, annotations, starts_at, ends_at, source, generator_url, \
           incident_id, corr_key, suppressed_rule, suppressed_reason, flapping, first_seen, last_seen, \
           deliveries, change_id, shard)
         ON CONFLICT (fingerprint) DO UPDATE SET status = EXCLUDED.status, labels = EXCLUDED.labels, \
           annotations = EXCLUDED.annotations, starts_at = EXCLUDED.starts_at, ends_at = EXCLUDED.ends_at, \
           source = EXCLUDED.source, generator_url = EXCLUDED.generator_url, \
           incident_id = EXCLUDED.incident_id, corr_key = EXCLUDED.corr_key, \
           suppressed_rule = EXCLUDED.suppressed_rule, suppressed_reason = EXCLUDED.suppressed_reason, \
           flapping = EXCLUDED.flapping, change_id = EXCLUDED.change_id, shard = EXCLUDED.shard, \
           last_seen = GREATEST(alerts.last_seen, EXCLUDED.last_seen), \
           deliveries = GREATEST(alerts.deliveries, EXCLUDED.deliveries)",
    )
    .bind(col(rows, |a| fp_to_db(a.fingerprint)))
    .bind(col(rows, |a| a.status.as_str()))
    .bind(col(rows, |a| json_text(to_json(&a.labels))))
    .bind(col(rows, |a| json_text(to_json(&a.annotations))))
    .bind(col(rows, |a| a.starts_at.millis()))
    .bind(col(rows, |a| a.ends_at.map(Timestamp::millis)))
    .bind(col(rows, |a| a.source.as_str()))
    .bind(col(rows, |a| text(&a.generator_url)))
    .bind(col(rows, |a| a.incident.map(|i| i.0)))
    .bind(col(rows, |a| text(&a.key)))
    .bind(col(rows, |a| opt_text(a.suppressed.as_ref().map(|s| s.0.as_str()))))
    .bind(col(rows, |a| opt_text(a.suppressed.as_ref().map(|s| s.1.as_str()))))
    .bind(col(rows, |a| a.flapping))
    .bind(col(rows, |a| a.first_seen.millis()))
    .bind(col(rows, |a| a.last_seen.millis()))
    .bind(col(rows, |a| count_to_db(a.deliveries)))
    .bind(col(rows, |a| opt_text(a.change.as_deref())))
    .bind(col(rows, |a| i64::from(a.shard)))
    .execute(c)
    .await?;
    Ok(())
}

/// The suppression an update sets, if it sets one.
fn suppression(u: &AlertUpdate) -> Option<&(String, String)> {
    u.suppressed.as_ref().and_then(Option::as_ref)
}

/// `keep` / `keep_change` are true where the op leaves the stored
/// suppression / change link as it is (`None`).
async fn update_alerts(c: &mut PgConnection, rows: &[&AlertUpdate]) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE alerts SET status = v.status, starts_at = v.starts_at, ends_at = v.ends_at, \
           incident_id = v.incident_id, corr_key = v.corr_key, \
           suppressed_rule = CASE WHEN v.keep THEN alerts.suppressed_rule ELSE v.s_rule END, \
           suppressed_reason = CASE WHEN v.keep THEN alerts.suppressed_reason ELSE v.s_reason END, \
           flapping = v.flapping, last_seen = GREATEST(alerts.last_seen, v.last_seen), \
           deliveries = GREATEST(alerts.deliveries, v.deliveries), \
           change_id = CASE WHEN v.keep_change THEN alerts.change_id ELSE v.change_id END
         FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::text[], \
           $7::boolean[], $8::text[], $9::text[], $10::boolean[], $11::bigint[], $12::bigint[], \
           $13::boolean[], $14::text[])
           AS v(fp, status, starts_at, ends_at, incident_id, corr_key, keep, s_rule, s_reason, flapping, \
           last_seen, deliveries, keep_change, change_id)
         WHERE alerts.fingerprint = v.fp",
    )
    .bind(col(rows, |u| fp_to_db(u.fingerprint)))
    .bind(col(rows, |u| u.status.as_str()))
    .bind(col(rows, |u| u.starts_at.millis()))
    .bind(col(rows, |u| u.ends_at.map(Timestamp::millis)))
    .bind(col(rows, |u| u.incident.map(|i| i.0)))
    .bind(col(rows, |u| text(&u.key)))
    .bind(col(rows, |u| u.suppressed.is_none()))
    .bind(col(rows, |u| suppression(u).map(|s| text(&s.0))))
    .bind(col(rows, |u| suppression(u).map(|s| text(&s.1))))
    .bind(col(rows, |u| u.flapping))
    .bind(col(rows, |u| u.last_seen.millis()))
    .bind(col(rows, |u| count_to_db(u.deliveries)))
    .bind(col(rows, |u| u.change.is_none()))
    .bind(col(rows, |u| {
        opt_text(u.change.as_ref().and_then(|c| c.as_deref()))
    }))
    .execute(c)
    .await?;
    Ok(())
}

async fn link_alerts(
    c: &mut PgConnection,
    rows: &[(IncidentId, crate::domain::Fingerprint, Timestamp)],
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO incident_alerts (incident_id, fingerprint, joined_at)
         SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[])
         ON CONFLICT DO NOTHING",
    )
    .bind(rows.iter().map(|r| r.0.0).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| fp_to_db(r.1)).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.2.millis()).collect::<Vec<_>>())
    .execute(c)
    .await?;
    Ok(())
}

/// One merge, as SQLite's `UPDATE OR IGNORE` + cleanup: links move to `to`
/// (where `to` already has the alert, its own link and join time stay), the
/// rest of `from`'s links go, and the alerts follow. The statement's parts
/// all see the rows as they were before it.
async fn move_alerts(
    c: &mut PgConnection,
    from: IncidentId,
    to: IncidentId,
) -> Result<(), StoreError> {
    sqlx::query(
        "WITH moved AS (
           INSERT INTO incident_alerts (incident_id, fingerprint, joined_at)
           SELECT $2, fingerprint, joined_at FROM incident_alerts WHERE incident_id = $1
           ON CONFLICT DO NOTHING
         ), dropped AS (
           DELETE FROM incident_alerts WHERE incident_id = $1
         )
         UPDATE alerts SET incident_id = $2 WHERE incident_id = $1",
    )
    .bind(from.0)
    .bind(to.0)
    .execute(c)
    .await?;
    Ok(())
}

async fn upsert_problems(c: &mut PgConnection, rows: &[&Problem]) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO problems (id, signature, state, opened_at, data)
         SELECT id, signature, state, opened_at, data::jsonb
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[])
           AS v(id, signature, state, opened_at, data)
         ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, data = EXCLUDED.data",
    )
    .bind(col(rows, |p| text(&p.id)))
    .bind(col(rows, |p| text(&p.signature)))
    .bind(col(rows, |p| text(&p.state)))
    .bind(col(rows, |p| p.opened_at.millis()))
    .bind(col(rows, |p| json_text(to_json(p))))
    .execute(c)
    .await?;
    Ok(())
}

/// Set `links.problem` in `extra`, creating `links` if a row lacks it.
async fn set_problem(
    c: &mut PgConnection,
    incidents: &[IncidentId],
    problem: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE incidents SET extra = jsonb_set(
           jsonb_set(extra, '{links}', COALESCE(extra->'links', '{}'::jsonb)),
           '{links,problem}', to_jsonb($2::text))
         WHERE id = ANY($1)",
    )
    .bind(incidents.iter().map(|i| i.0).collect::<Vec<_>>())
    .bind(text(problem))
    .execute(c)
    .await?;
    Ok(())
}

async fn upsert_changes(c: &mut PgConnection, rows: &[&ChangeRecord]) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO changes (id, ci, state, start_at, end_at, summary)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::text[])
         ON CONFLICT (id) DO UPDATE SET ci = EXCLUDED.ci, state = EXCLUDED.state, \
           start_at = EXCLUDED.start_at, end_at = EXCLUDED.end_at, summary = EXCLUDED.summary",
    )
    .bind(col(rows, |ch| text(&ch.id)))
    .bind(col(rows, |ch| text(&ch.ci)))
    .bind(col(rows, |ch| change_state_str(ch.state)))
    .bind(col(rows, |ch| ch.start.millis()))
    .bind(col(rows, |ch| ch.end.millis()))
    .bind(col(rows, |ch| text(&ch.summary)))
    .execute(c)
    .await?;
    Ok(())
}

/// Entries get their ids in array order (`ORDER BY n`), which keeps each
/// incident's timeline in the order the engine wrote it.
async fn append_timeline(
    c: &mut PgConnection,
    rows: &[(IncidentId, &TimelineEntry)],
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO timeline (incident_id, at, kind, message, actor)
         SELECT incident_id, at, kind, message, actor
         FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[])
           WITH ORDINALITY AS v(incident_id, at, kind, message, actor, n)
         ORDER BY n",
    )
    .bind(rows.iter().map(|r| r.0.0).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.1.at.millis()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.1.kind.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| text(&r.1.message)).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|r| opt_text(r.1.actor.as_deref()))
            .collect::<Vec<_>>(),
    )
    .execute(c)
    .await?;
    Ok(())
}

/// Messages get their ids in array order, which is their delivery order.
async fn insert_outbox(
    c: &mut PgConnection,
    rows: &[&super::OutboxMessage],
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO outbox (destination, incident_id, shard, kind, at, incident)
         SELECT destination, incident_id, shard, kind, at, incident::jsonb
         FROM UNNEST($1::text[], $2::bigint[], $6::int[], $3::text[], $4::bigint[], $5::text[])
           WITH ORDINALITY AS v(destination, incident_id, shard, kind, at, incident, n)
         ORDER BY n",
    )
    .bind(col(rows, |m| text(&m.destination)))
    .bind(col(rows, |m| m.incident.id.0))
    .bind(col(rows, |m| m.kind.as_str()))
    .bind(col(rows, |m| m.at.millis()))
    .bind(col(rows, |m| json_text(to_json(&m.incident))))
    .bind(col(rows, |m| {
        i32::try_from(m.incident.shard).unwrap_or(i32::MAX)
    }))
    .execute(c)
    .await?;
    Ok(())
}

async fn touch_alerts(c: &mut PgConnection, rows: &[TouchRow]) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE alerts SET last_seen = GREATEST(alerts.last_seen, v.last_seen), \
           deliveries = GREATEST(alerts.deliveries, v.deliveries)
         FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[]) AS v(fp, last_seen, deliveries)
         WHERE alerts.fingerprint = v.fp",
    )
    .bind(
        rows.iter()
            .map(|t| fp_to_db(t.fingerprint))
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|t| t.last_seen.millis())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|t| count_to_db(t.deliveries))
            .collect::<Vec<_>>(),
    )
    .execute(c)
    .await?;
    Ok(())
}

/// The statements of one batch, in the order of [`Grouped`]; kinds without
/// rows cost nothing.
async fn write(
    c: &mut PgConnection,
    g: &Grouped<'_>,
    rekeyed: &rustc_hash::FxHashMap<IncidentId, String>,
) -> Result<(), StoreError> {
    if !g.incidents.is_empty() {
        upsert_incidents(c, &g.incidents, rekeyed).await?;
    }
    if !g.inserts.is_empty() {
        insert_alerts(c, &g.inserts).await?;
    }
    if !g.updates.is_empty() {
        update_alerts(c, &g.updates).await?;
    }
    if !g.links.is_empty() {
        link_alerts(c, &g.links).await?;
    }
    // Merges: after links (the moved rows exist), before timeline.
    for (from, to) in &g.moves {
        move_alerts(c, *from, *to).await?;
    }
    if !g.problems.is_empty() {
        upsert_problems(c, &g.problems).await?;
    }
    for (incidents, problem) in &g.set_problem {
        set_problem(c, incidents, problem).await?;
    }
    if !g.changes.is_empty() {
        upsert_changes(c, &g.changes).await?;
    }
    if !g.timeline.is_empty() {
        append_timeline(c, &g.timeline).await?;
    }
    if !g.outbox.is_empty() {
        insert_outbox(c, &g.outbox).await?;
    }
    if !g.touches.is_empty() {
        touch_alerts(c, &g.touches).await?;
    }
    Ok(())
}

impl IncidentLog for PgStore {
    fn write_lanes(&self) -> usize {
        self.lanes
    }

    fn apply<'a>(&'a self, ops: &'a [StoreOp]) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            if ops.is_empty() {
                return Ok(());
            }
            let g = group(ops);
            let mut attempt = 0;
            loop {
                let rekeyed = self
                    .rekeyed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                // Dropped without commit on error: sqlx rolls it back.
                let mut tx = self.pool.begin().await?;
                let done = match write(&mut tx, &g, &rekeyed).await {
                    Ok(()) => tx.commit().await.map_err(StoreError::from),
                    Err(e) => Err(e),
                };
                match done {
                    Err(e) if is_key_conflict(&e) && attempt < 3 => {
                        attempt += 1;
                        if !self.rekey_conflicts(&g.incidents).await? {
                            return Err(e);
                        }
                    }
                    Ok(()) => {
                        // A resolved incident no longer holds its key.
                        if !rekeyed.is_empty() {
                            let mut map = self.rekeyed.lock().unwrap_or_else(|p| p.into_inner());
                            for i in &g.incidents {
                                if i.state == IncidentState::Resolved {
                                    map.remove(&i.id);
                                }
                            }
                        }
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                }
            }
        })
    }

    fn load_state(&self, what: Restore) -> BoxFuture<'_, Result<Snapshot, StoreError>> {
        Box::pin(sql::load_state(self, what))
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(())
        })
    }
}

impl SqlBackend for PgStore {
    type Row = PgRow;
    const DIALECT: Dialect = Dialect::Postgres;

    fn fetch<'a>(&'a self, st: Stmt<'a>) -> BoxFuture<'a, Result<Vec<PgRow>, StoreError>> {
        Box::pin(async move { Ok(query(st).fetch_all(&self.pool).await?) })
    }

    fn fetch_consistent<'a>(
        &'a self,
        sts: Vec<Stmt<'a>>,
    ) -> BoxFuture<'a, Result<Vec<Vec<PgRow>>, StoreError>> {
        Box::pin(async move {
            // One snapshot for every statement, although other instances write.
            let mut tx = self
                .pool
                .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await?;
            let mut out = Vec::with_capacity(sts.len());
            for st in sts {
                out.push(query(st).fetch_all(&mut *tx).await?);
            }
            tx.commit().await?;
            Ok(out)
        })
    }

    fn execute<'a>(&'a self, sts: Vec<Stmt<'a>>) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await?;
            let mut first = None;
            for st in sts {
                let n = query(st).execute(&mut *tx).await?.rows_affected();
                first.get_or_insert(n);
            }
            tx.commit().await?;
            Ok(first.unwrap_or(0))
        })
    }
}

/// A shared statement, numbered and bound; text without NUL (which
/// PostgreSQL text cannot hold).
fn query(st: Stmt<'_>) -> Query<'static, Postgres, PgArguments> {
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql::numbered(&st.sql)));
    for a in &st.args {
        q = match a {
            Arg::Int(v) => q.bind(*v),
            Arg::Text(v) => q.bind(text(v)),
            Arg::OptText(v) => q.bind(opt_text(v.as_deref())),
            Arg::Ints(v) => q.bind(v.as_slice()),
        };
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_is_replaced_in_text_and_json() {
        assert_eq!(text("a\0b"), "a\u{FFFD}b");
        assert!(matches!(text("plain"), Cow::Borrowed(_)));
        let json = to_json(&["a\0b", "c\\u0000d", "\\\0"]);
        let fixed = json_text(json);
        let back: Vec<String> = serde_json::from_str(&fixed).unwrap();
        assert_eq!(back, ["a\u{FFFD}b", "c\\u0000d", "\\\u{FFFD}"]);
    }
}
