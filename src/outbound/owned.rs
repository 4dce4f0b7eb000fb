//! Which work shards' outbox messages this instance delivers. With Kafka
//! several instances share one outbox; each delivers only the messages of
//! the incidents whose partitions it owns, and gives a partition up only
//! once its deliveries in flight have finished, so the next owner never
//! calls a destination about an incident at the same time (a ServiceNow
//! lookup-then-create racing another would make two tickets).

use rustc_hash::FxHashMap;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{Notify, watch};

#[derive(Debug)]
struct State {
    /// A single instance owns every shard.
    all: bool,
    owned: BTreeSet<u32>,
    in_flight: FxHashMap<u32, u32>,
}

#[derive(Debug)]
pub struct Ownership {
    state: Mutex<State>,
    /// A delivery finished (revocations wait on it).
    finished: Notify,
    /// Bumped when a shard is gained (senders wake to look at its backlog).
    gained: watch::Sender<u64>,
}

impl Ownership {
    fn new(all: bool) -> Arc<Ownership> {
        Arc::new(Ownership {
            state: Mutex::new(State {
                all,
                owned: BTreeSet::new(),
                in_flight: FxHashMap::default(),
            }),
            finished: Notify::new(),
            gained: watch::channel(0).0,
        })
    }

    /// One instance, every shard.
    pub fn everything() -> Arc<Ownership> {
        Ownership::new(true)
    }

    /// Kafka: nothing until the group assigns partitions.
    pub fn assigned() -> Arc<Ownership> {
        Ownership::new(false)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent under a panic elsewhere: every update
        // is a single insert or remove.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The shards to read the outbox for: `None` for all of them.
    pub fn shards(&self) -> Option<Vec<u32>> {
        let s = self.lock();
        (!s.all).then(|| s.owned.iter().copied().collect())
    }

    /// Wakes when a shard is gained.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.gained.subscribe()
    }

    /// The shard is ours (its state is loaded).
    pub fn gain(&self, shard: u32) {
        self.lock().owned.insert(shard);
        self.gained.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Stop starting deliveries of these shards, then wait (up to `limit`)
    /// for those in flight to finish; false when some still run.
    pub async fn release(&self, shards: &[u32], limit: Duration) -> bool {
        {
            let mut s = self.lock();
            for sh in shards {
                s.owned.remove(sh);
            }
        }
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let finished = self.finished.notified();
            tokio::pin!(finished);
            finished.as_mut().enable();
            let busy = {
                let s = self.lock();
                shards.iter().any(|sh| s.in_flight.contains_key(sh))
            };
            if !busy {
                return true;
            }
            if tokio::time::timeout_at(deadline, finished).await.is_err() {
                return false;
            }
        }
    }

    /// Start a delivery for an incident of `shard`, if the shard is ours;
    /// the delivery counts as in flight until the guard is dropped.
    pub fn begin(self: &Arc<Self>, shard: u32) -> Option<InFlight> {
        let mut s = self.lock();
        if !s.all && !s.owned.contains(&shard) {
            return None;
        }
        *s.in_flight.entry(shard).or_insert(0) += 1;
        Some(InFlight {
            owner: self.clone(),
            shard,
        })
    }
}

/// A delivery in progress (see [`Ownership::begin`]).
#[derive(Debug)]
pub struct InFlight {
    owner: Arc<Ownership>,
    shard: u32,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        {
            let mut s = self.owner.lock();
            if let Some(n) = s.in_flight.get_mut(&self.shard) {
                *n -= 1;
                if *n == 0 {
                    s.in_flight.remove(&self.shard);
                }
            }
        }
        self.owner.finished.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_instance_delivers_everything() {
        let o = Ownership::everything();
        assert_eq!(o.shards(), None);
        assert!(o.begin(0).is_some());
        assert!(o.begin(42).is_some());
    }

    #[tokio::test]
    async fn releasing_waits_for_deliveries_in_flight() {
        let o = Ownership::assigned();
        assert_eq!(o.shards(), Some(vec![]));
        assert!(o.begin(3).is_none(), "not assigned yet");
        let woken = o.subscribe();
        o.gain(3);
        o.gain(5);
        assert!(woken.has_changed().unwrap());
        assert_eq!(o.shards(), Some(vec![3, 5]));
        let flight = o.begin(3).expect("owned");
        // Still running: the release times out and the shard is not
        // handed to new deliveries meanwhile.
        assert!(!o.release(&[3], Duration::from_millis(50)).await);
        assert!(o.begin(3).is_none());
        assert_eq!(o.shards(), Some(vec![5]));
        let o2 = o.clone();
        let waiter = tokio::spawn(async move { o2.release(&[3], Duration::from_secs(5)).await });
        tokio::task::yield_now().await;
        drop(flight);
        assert!(waiter.await.unwrap(), "released once the delivery finished");
        // Other shards' deliveries do not hold a release up.
        let _other = o.begin(5).expect("owned");
        assert!(o.release(&[3], Duration::from_millis(50)).await);
    }
}
