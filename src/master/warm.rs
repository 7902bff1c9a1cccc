//! A follower's loaded copy of the store, so that taking over skips the load.
//!
//! Every write transaction bumps the store's `revision` (and claiming does not), so a
//! copy loaded at revision `r` is exactly what the store holds as long as the revision
//! is still `r`. A follower loads when the leader stops answering its probe (or none is
//! known) and the revision moved since its last load; a load is kept only if the
//! revision did not move while it ran. When the follower wins the election it claims
//! the store (from then on only it writes) and reads the revision once more: if the
//! copy is at that revision, the new term starts from it.
//!
//! While the leader answers, a follower loads nothing: a copy would go stale with the
//! leader's next write, and loading all the time would cost the follower (and the
//! database) as much as the leader's own work. A killed leader stops answering at once
//! and a frozen one within the probe's timeout, well before its lease expires, so the
//! copy is usually loaded (or loading) by the time the election is won.

use super::state::State;
use crate::store::Store;
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// How often a follower probes the leader (and, when it does not answer, looks at the
/// store's revision).
const POLL: Duration = Duration::from_millis(250);
/// `loading_at` when no load runs.
const IDLE: i64 = -1;

/// A state loaded at a store revision, twice: a master's writer and its readers each
/// need a copy, and cloning 100,000 tasks at takeover costs a third of a second.
struct Loaded {
    revision: i64,
    state: (State, State),
}

/// The copy and the task that keeps it current (ended by [`WarmCopy::take`] or drop).
pub struct WarmCopy {
    held: Arc<Mutex<Option<Loaded>>>,
    /// The revision the running load started at, or [`IDLE`].
    loading_at: Arc<AtomicI64>,
    task: tokio::task::AbortHandle,
}

impl WarmCopy {
    /// Starts keeping a copy of `store` loaded whenever `leader_answers` says no.
    pub fn start<P, F>(store: Store, leader_answers: P) -> WarmCopy
    where
        P: Fn() -> F + Send + 'static,
        F: Future<Output = bool> + Send + 'static,
    {
        let held = Arc::new(Mutex::new(None::<Loaded>));
        let loading_at = Arc::new(AtomicI64::new(IDLE));
        let task = tokio::spawn(keep(store, held.clone(), loading_at.clone(), leader_answers)).abort_handle();
        WarmCopy { held, loading_at, task }
    }

    /// The revision of the copy held now, if one is loaded.
    pub async fn revision(&self) -> Option<i64> {
        self.held.lock().await.as_ref().map(|l| l.revision)
    }

    /// Stops keeping the copy and returns it if it is the store's state at `revision`
    /// (read after claiming the store). A load in progress from that revision is
    /// waited for; any other load is abandoned.
    pub async fn take(self, revision: i64) -> Option<(State, State)> {
        if self.loading_at.load(Ordering::Acquire) != revision {
            self.task.abort();
        }
        let mut held = self.held.lock().await;
        self.task.abort();
        held.take().filter(|l| l.revision == revision).map(|l| l.state)
    }
}

impl Drop for WarmCopy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn keep<P, F>(store: Store, held: Arc<Mutex<Option<Loaded>>>, loading_at: Arc<AtomicI64>, leader_answers: P)
where
    P: Fn() -> F,
    F: Future<Output = bool>,
{
    loop {
        let mut pause = POLL;
        if !leader_answers().await {
            let mut held = held.lock().await;
            let revision = match store.leadership().await {
                Ok(l) => l.revision,
                Err(e) => {
                    tracing::debug!("warm copy: cannot read the store's revision: {e}");
                    drop(held);
                    tokio::time::sleep(POLL).await;
                    continue;
                }
            };
            if held.as_ref().is_none_or(|l| l.revision != revision) {
                loading_at.store(revision, Ordering::Release);
                let started = Instant::now();
                let loaded = load_at(&store, revision).await;
                loading_at.store(IDLE, Ordering::Release);
                if let Some(state) = loaded {
                    tracing::debug!(revision, took = ?started.elapsed(), "warm copy loaded");
                    *held = Some(Loaded { revision, state });
                }
                pause = pause.max(started.elapsed());
            }
        }
        tokio::time::sleep(pause).await;
    }
}

/// The store's state, if it was still at `revision` once loaded.
async fn load_at(store: &Store, revision: i64) -> Option<(State, State)> {
    let snapshot = store.load().await.ok()?;
    let after = store.leadership().await.ok()?;
    if after.revision != revision {
        return None;
    }
    let copies = move || {
        let state = State::from_snapshot(snapshot);
        (state.clone(), state)
    };
    tokio::task::spawn_blocking(copies).await.ok()
}
