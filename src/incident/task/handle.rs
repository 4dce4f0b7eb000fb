//! The protocol callers speak to the engine task: commands in, answers
//! once what they changed is durable (the writer's commit watermarks).

use super::LOCAL_SHARD;
use crate::change::ChangeRecord;
use crate::cmdb::Cmdb;
use crate::domain::{Incident, IncidentId};
use crate::incident::{EngineError, IngestOutcome};
use crate::normalize::Event;
use crate::rules::RuleSet;
use crate::store::Snapshot;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("the pipeline is overloaded; retry later")]
    Overloaded,
    #[error("the pipeline is shutting down")]
    ShuttingDown,
    #[error(
        "the store did not confirm durability within {0:?}; the delivery may be retried safely"
    )]
    NotDurable(Duration),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// An ingest the engine did not apply; a request refused for a memory cap
/// gets its events back, so that a queue source can offer them again.
#[derive(Debug)]
pub struct Refused {
    pub error: EngineError,
    pub events: Vec<Event>,
}

impl From<Refused> for PipelineError {
    fn from(r: Refused) -> Self {
        PipelineError::Engine(r.error)
    }
}

/// A person's action on an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Acknowledge,
    Resolve,
    /// Put on hold (with a reason).
    Hold,
    /// Take off hold.
    Resume,
}

pub(super) enum Command {
    Ingest {
        shard: u32,
        events: Vec<Event>,
        reply: oneshot::Sender<Result<IngestOutcome, Refused>>,
    },
    Ack {
        id: IncidentId,
        actor: String,
        reply: oneshot::Sender<Result<(Incident, u64), EngineError>>,
    },
    Resolve {
        id: IncidentId,
        actor: String,
        reply: oneshot::Sender<Result<(Incident, u64), EngineError>>,
    },
    Hold {
        id: IncidentId,
        actor: String,
        /// `None`: resume.
        reason: Option<String>,
        reply: oneshot::Sender<Result<(Incident, u64), EngineError>>,
    },
    Rules(Arc<RuleSet>),
    Cmdb(Arc<Cmdb>),
    Changes {
        changes: Vec<ChangeRecord>,
        reply: oneshot::Sender<u64>,
    },
    /// Change records already in the store (written by another instance).
    LearnChanges(Vec<ChangeRecord>),
    /// The change calendar in force.
    ChangeBook(oneshot::Sender<Arc<crate::change::ChangeBook>>),
    /// Put a calendar in force whose records are already stored (a bulk
    /// import, built off the engine task).
    SetChangeBook(Arc<crate::change::ChangeBook>),
    /// Take over a shard: build its engine from the stored state.
    Assign {
        shard: u32,
        snapshot: Box<Snapshot>,
        reply: oneshot::Sender<()>,
    },
    /// Give a shard up: flush its counters, drop its engine; the reply is
    /// the batch to wait for before the partition may be released.
    Revoke {
        shard: u32,
        reply: oneshot::Sender<u64>,
    },
}

/// Cloneable handle the HTTP layer and the Kafka source use to talk to the
/// engines.
#[derive(Clone)]
pub struct EngineHandle {
    pub(super) tx: mpsc::Sender<Command>,
    pub(super) committed: watch::Receiver<u64>,
    /// Like `committed`, counters included: every effect (repeat counts
    /// too) of batches up to this one is durable.
    pub(super) all_durable: watch::Receiver<u64>,
    /// Counts commits that changed an incident, a problem or a change.
    pub(super) incidents: watch::Receiver<u64>,
    pub(super) durable_timeout: Duration,
    pub(super) store_healthy: Arc<AtomicBool>,
}

impl EngineHandle {
    /// The last committed batch, changing after every commit (outbox
    /// senders wake on it).
    pub fn commits(&self) -> watch::Receiver<u64> {
        self.committed.clone()
    }

    /// Moves after each commit that changed what an incident view shows
    /// (the web board's live updates).
    pub fn incident_changes(&self) -> watch::Receiver<u64> {
        self.incidents.clone()
    }

    /// Hand events to the (single) engine and wait until their effect is
    /// durable.
    pub async fn ingest(&self, events: Vec<Event>) -> Result<IngestOutcome, PipelineError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(Command::Ingest {
                shard: LOCAL_SHARD,
                events,
                reply,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => PipelineError::Overloaded,
                mpsc::error::TrySendError::Closed(_) => PipelineError::ShuttingDown,
            })?;
        let out = rx.await.map_err(|_| PipelineError::ShuttingDown)??;
        self.wait_durable(out.wait_seq).await?;
        Ok(out)
    }

    /// Hand events to a shard's engine, waiting for room in the queue
    /// (back-pressure for the Kafka source) but not for durability: the
    /// outcome's `wait_seq` says which commit makes them durable. Refused
    /// for a memory cap, the events come back with the refusal.
    pub async fn submit(
        &self,
        shard: u32,
        events: Vec<Event>,
    ) -> Result<IngestOutcome, Result<Refused, PipelineError>> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Ingest {
                shard,
                events,
                reply,
            })
            .await
            .map_err(|_| Err(PipelineError::ShuttingDown))?;
        match rx.await {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(refused)) => Err(Ok(refused)),
            Err(_) => Err(Err(PipelineError::ShuttingDown)),
        }
    }

    /// Build the engine of `shard` from its stored state.
    pub async fn assign(&self, shard: u32, snapshot: Snapshot) -> Result<(), PipelineError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Assign {
                shard,
                snapshot: Box::new(snapshot),
                reply,
            })
            .await
            .map_err(|_| PipelineError::ShuttingDown)?;
        rx.await.map_err(|_| PipelineError::ShuttingDown)
    }

    /// Drop the engine of `shard` once everything it did is durable.
    pub async fn revoke(&self, shard: u32) -> Result<(), PipelineError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Revoke { shard, reply })
            .await
            .map_err(|_| PipelineError::ShuttingDown)?;
        let seq = rx.await.map_err(|_| PipelineError::ShuttingDown)?;
        self.wait_fully_durable(seq).await
    }

    pub async fn acknowledge(
        &self,
        id: IncidentId,
        actor: String,
    ) -> Result<Incident, PipelineError> {
        self.act(id, actor, Operation::Acknowledge, None).await
    }

    pub async fn resolve(&self, id: IncidentId, actor: String) -> Result<Incident, PipelineError> {
        self.act(id, actor, Operation::Resolve, None).await
    }

    /// A person's action, answered once it is durable.
    pub async fn act(
        &self,
        id: IncidentId,
        actor: String,
        op: Operation,
        reason: Option<String>,
    ) -> Result<Incident, PipelineError> {
        let (inc, seq) = self.operate(id, actor, op, reason).await?;
        self.wait_durable(seq).await?;
        Ok(inc)
    }

    /// A person's action without waiting for durability: the returned
    /// sequence number says which commit makes it durable (the Kafka source
    /// stores the command message's offset behind it). `reason` is the
    /// hold's reason (required by [`Operation::Hold`], ignored otherwise).
    pub async fn operate(
        &self,
        id: IncidentId,
        actor: String,
        op: Operation,
        reason: Option<String>,
    ) -> Result<(Incident, u64), PipelineError> {
        let (reply, rx) = oneshot::channel();
        let cmd = match op {
            Operation::Acknowledge => Command::Ack { id, actor, reply },
            Operation::Resolve => Command::Resolve { id, actor, reply },
            Operation::Hold => Command::Hold {
                id,
                actor,
                reason: Some(reason.unwrap_or_else(|| "unspecified".into())),
                reply,
            },
            Operation::Resume => Command::Hold {
                id,
                actor,
                reason: None,
                reply,
            },
        };
        self.send(cmd).await?;
        Ok(rx.await.map_err(|_| PipelineError::ShuttingDown)??)
    }

    pub async fn set_rules(&self, rules: Arc<RuleSet>) -> Result<(), PipelineError> {
        self.send(Command::Rules(rules)).await
    }

    /// Teach every engine change records another instance stored.
    pub async fn learn_changes(&self, changes: Vec<ChangeRecord>) -> Result<(), PipelineError> {
        self.send(Command::LearnChanges(changes)).await
    }

    pub async fn set_cmdb(&self, cmdb: Arc<Cmdb>) -> Result<(), PipelineError> {
        self.send(Command::Cmdb(cmdb)).await
    }

    /// The change calendar in force.
    pub async fn change_book(&self) -> Result<Arc<crate::change::ChangeBook>, PipelineError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::ChangeBook(reply)).await?;
        rx.await.map_err(|_| PipelineError::ShuttingDown)
    }

    /// Put a calendar whose records are already stored in force.
    pub async fn set_change_book(
        &self,
        book: Arc<crate::change::ChangeBook>,
    ) -> Result<(), PipelineError> {
        self.send(Command::SetChangeBook(book)).await
    }

    /// Record change records; returns once they are durable.
    pub async fn add_changes(&self, changes: Vec<ChangeRecord>) -> Result<(), PipelineError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Changes { changes, reply }).await?;
        let seq = rx.await.map_err(|_| PipelineError::ShuttingDown)?;
        self.wait_durable(seq).await
    }

    async fn send(&self, cmd: Command) -> Result<(), PipelineError> {
        match tokio::time::timeout(self.durable_timeout, self.tx.send(cmd)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(PipelineError::ShuttingDown),
            Err(_) => Err(PipelineError::Overloaded),
        }
    }

    async fn wait_durable(&self, seq: u64) -> Result<(), PipelineError> {
        match tokio::time::timeout(self.durable_timeout, self.wait_durable_unbounded(seq)).await {
            Ok(r) => r,
            Err(_) => Err(PipelineError::NotDurable(self.durable_timeout)),
        }
    }

    /// Wait however long the store needs (the Kafka source: an offset is
    /// stored only after this returns, and an outage just pauses it).
    pub async fn wait_durable_unbounded(&self, seq: u64) -> Result<(), PipelineError> {
        if seq == 0 || *self.committed.borrow() >= seq {
            return Ok(());
        }
        let mut rx = self.committed.clone();
        rx.wait_for(|c| *c >= seq)
            .await
            .map(|_| ())
            .map_err(|_| PipelineError::ShuttingDown)
    }

    /// Cheap check without waiting.
    pub fn is_durable(&self, seq: u64) -> bool {
        seq == 0 || *self.committed.borrow() >= seq
    }

    /// Whether every effect of batches up to `seq`, coalesced repeat
    /// counters included, is durable (what a Kafka offset waits for).
    pub fn is_fully_durable(&self, seq: u64) -> bool {
        seq == 0 || *self.all_durable.borrow() >= seq
    }

    pub async fn wait_fully_durable(&self, seq: u64) -> Result<(), PipelineError> {
        if self.is_fully_durable(seq) {
            return Ok(());
        }
        let mut rx = self.all_durable.clone();
        rx.wait_for(|c| *c >= seq)
            .await
            .map(|_| ())
            .map_err(|_| PipelineError::ShuttingDown)
    }

    /// False while the writer is failing to commit.
    pub fn store_healthy(&self) -> bool {
        self.store_healthy.load(Ordering::Relaxed)
    }
}
