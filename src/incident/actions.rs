//! One way to act on an incident, whoever asks: a person through the API,
//! ServiceNow or Jira through their webhooks, the ticket poller. The
//! action is applied by this instance's engine when it owns the incident,
//! forwarded to the owner when another instance does, and reported as
//! unchanged when the incident is already where the action would take it
//! (each caller decides whether that is a conflict or a harmless repeat).

use super::EngineError;
use super::task::{EngineHandle, Operation, PipelineError};
use crate::domain::{Incident, IncidentId, IncidentState};
use crate::store::{BoxFuture, Reads, StoreError};
use std::sync::Arc;
use std::time::Duration;

/// An action on an incident.
#[derive(Debug, Clone)]
pub struct Action {
    pub id: IncidentId,
    /// Who acts, as the timeline and the tickets show it.
    pub actor: String,
    pub op: Operation,
    /// A hold's reason (required for [`Operation::Hold`]).
    pub reason: Option<String>,
}

/// What became of an action.
#[derive(Debug)]
pub enum Outcome {
    /// Applied by this instance; durable.
    Applied(Incident),
    /// Sent to the instance owning the incident's shard. `applied` is the
    /// incident once the store showed the effect within the wait; `None`
    /// when the owner had not applied it yet (it will: the command is on
    /// its partition).
    Forwarded {
        shard: u32,
        applied: Option<Incident>,
    },
    /// Nothing to do, and why: already acknowledged, already resolved
    /// (`NotActive`), already on hold, not on hold.
    Unchanged(EngineError),
}

#[derive(Debug, thiserror::Error)]
pub enum ActError {
    #[error("incident {0} not found")]
    NotFound(IncidentId),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("forwarding to the incident's owner failed: {0}")]
    Forward(String),
}

/// Delivers an action to the instance that owns `shard` (the Kafka
/// command topic); the wiring provides it when instances share the work.
pub trait Forward: Send + Sync + 'static {
    fn forward<'a>(&'a self, shard: u32, action: &'a Action) -> BoxFuture<'a, Result<(), String>>;
}

/// The one service every caller acts through.
#[derive(Clone)]
pub struct Actions {
    engine: EngineHandle,
    store: Arc<dyn Reads>,
    forward: Option<Arc<dyn Forward>>,
    /// How long a forwarded action is waited for in the store.
    forward_wait: Duration,
}

/// How often the store is read while a forwarded action is awaited: the
/// owner is another process, whose commits this one is not told of.
const FORWARD_POLL: Duration = Duration::from_millis(50);

impl Actions {
    pub fn new(
        engine: EngineHandle,
        store: Arc<dyn Reads>,
        forward: Option<Arc<dyn Forward>>,
        forward_wait: Duration,
    ) -> Self {
        Actions {
            engine,
            store,
            forward,
            forward_wait,
        }
    }

    /// Apply, forward, or report unchanged; an unknown incident is
    /// [`ActError::NotFound`].
    pub async fn act(&self, a: Action) -> Result<Outcome, ActError> {
        let err = match self
            .engine
            .act(a.id, a.actor.clone(), a.op, a.reason.clone())
            .await
        {
            Ok(inc) => return Ok(Outcome::Applied(inc)),
            Err(PipelineError::Engine(
                e @ (EngineError::AlreadyAcknowledged(_)
                | EngineError::AlreadyResolved(_)
                | EngineError::AlreadyOnHold(_)
                | EngineError::NotOnHold(_)),
            )) => return Ok(Outcome::Unchanged(e)),
            Err(PipelineError::Engine(EngineError::NotActive(_))) => EngineError::NotActive(a.id),
            Err(e) => return Err(e.into()),
        };
        // Not active in this instance's engines: unknown, finished, or
        // owned by another instance.
        let Some(stored) = self.store.get_incident(a.id).await? else {
            return Err(ActError::NotFound(a.id));
        };
        if let Some(e) = already(&stored, a.op) {
            return Ok(Outcome::Unchanged(e));
        }
        match &self.forward {
            Some(f) => self.forward(f.as_ref(), stored, a).await,
            None => Ok(Outcome::Unchanged(err)),
        }
    }

    /// Send the action to the owner and wait (up to `forward_wait`) until
    /// the store shows its effect.
    async fn forward(
        &self,
        f: &dyn Forward,
        stored: Incident,
        a: Action,
    ) -> Result<Outcome, ActError> {
        let holds_before = stored.holds.len();
        let deadline = tokio::time::Instant::now() + self.forward_wait;
        f.forward(stored.shard, &a)
            .await
            .map_err(ActError::Forward)?;
        loop {
            if let Some(inc) = self.store.get_incident(a.id).await? {
                let done = match a.op {
                    Operation::Acknowledge => inc.state != IncidentState::Open,
                    Operation::Resolve => inc.state == IncidentState::Resolved,
                    Operation::Hold => inc.holds.len() > holds_before,
                    Operation::Resume => inc.current_hold().is_none(),
                };
                if done {
                    return Ok(Outcome::Forwarded {
                        shard: stored.shard,
                        applied: Some(inc),
                    });
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(Outcome::Forwarded {
                    shard: stored.shard,
                    applied: None,
                });
            }
            tokio::time::sleep(FORWARD_POLL).await;
        }
    }
}

/// Whether the stored incident is already where `op` would take it.
fn already(stored: &Incident, op: Operation) -> Option<EngineError> {
    let id = stored.id;
    if stored.state == IncidentState::Resolved {
        return Some(EngineError::AlreadyResolved(id));
    }
    match op {
        Operation::Acknowledge if stored.state != IncidentState::Open => {
            Some(EngineError::AlreadyAcknowledged(id))
        }
        Operation::Hold if stored.current_hold().is_some() => Some(EngineError::AlreadyOnHold(id)),
        Operation::Resume if stored.current_hold().is_none() => Some(EngineError::NotOnHold(id)),
        _ => None,
    }
}

/// How a caller that treats "unchanged" as a harmless repeat says why.
pub fn unchanged_reason(e: &EngineError) -> &'static str {
    match e {
        EngineError::AlreadyAcknowledged(_) => "already acknowledged",
        EngineError::AlreadyOnHold(_) => "already on hold",
        EngineError::NotOnHold(_) => "not on hold",
        _ => "already resolved",
    }
}
