//! Who leads: the signal that switches a master's leader-only work on and off.
//!
//! - Without etcd, the one master always leads ([`Leadership::single`]); each term
//!   claims the store with the next epoch.
//! - With etcd ([`Leadership::etcd`]), masters campaign on an etcd election (a key
//!   under the election name, on a lease kept alive every third of its TTL). The
//!   winner's epoch is the etcd revision at which its key was created: later winners
//!   always have larger ones, so the store and the agents can refuse an older leader
//!   that woke up (fencing: an etcd lease alone does not give mutual exclusion). All
//!   masters observe the election to know the leader's URL, which followers forward to.
//! - A leader whose keep-alive has not been confirmed for the TTL minus a margin stops
//!   leading at once: its lease may have expired, and another may lead. A follower in
//!   the same state knows no leader, so it forwards nothing (no writes while cut off).
//! - [`Leadership::abdicate`] (`DELETE /v2/leader`) resigns: another master takes over
//!   (with etcd), or the single master leads again after reloading its state.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

/// This master's part, as the rest of the process sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// This master leads. `epoch` is the etcd revision it won at; `None` without etcd,
    /// where the store hands out the next epoch. `term` counts this process's terms, so
    /// a new term is told from the one before even when the changes between them were
    /// not seen one by one.
    Leader { epoch: Option<i64>, term: u64 },
    /// Another master leads (its advertised URL), or no leader is known (`None`):
    /// during an election, or while this master's etcd session is unconfirmed.
    Follower { leader: Option<String> },
}

/// Election settings.
#[derive(Debug, Clone)]
pub struct EtcdElection {
    pub endpoints: Vec<String>,
    /// The election's name (a key prefix in etcd): masters with the same one elect
    /// one leader among them.
    pub name: String,
    /// How other masters and agents reach this one: the value it campaigns with.
    pub advertise: String,
    /// The lease's time to live: how long a dead leader blocks the next one.
    pub ttl: Duration,
}

/// What the election tasks know; [`Shared::update`] turns it into a role.
#[derive(Debug, Default)]
struct Known {
    /// The etcd session (lease) is confirmed alive.
    session: bool,
    /// This master won at this revision (in its term `.1`) and has not lost or
    /// resigned since.
    won: Option<(i64, u64)>,
    /// The leader's URL, as observed.
    observed: Option<String>,
    /// Terms begun so far.
    terms: u64,
}

struct Shared {
    known: Mutex<Known>,
    tx: watch::Sender<Role>,
    /// Wakes the term that leads now (waiters only: an abdication asked for while no
    /// term leads is not kept for the next one).
    abdicate: Notify,
    /// Set once the process stops: no new term begins.
    stopping: std::sync::atomic::AtomicBool,
    advertise: String,
}

impl Shared {
    /// Starts in `role`, with `terms` terms begun.
    fn new(role: Role, terms: u64, advertise: &str) -> Arc<Shared> {
        Arc::new(Shared {
            known: Mutex::new(Known { terms, ..Known::default() }),
            tx: watch::channel(role).0,
            abdicate: Notify::new(),
            stopping: Default::default(),
            advertise: advertise.to_string(),
        })
    }

    fn update(&self, f: impl FnOnce(&mut Known)) {
        let Ok(mut k) = self.known.lock() else { return };
        f(&mut k);
        let role = match (&*k, k.won) {
            (Known { session: false, .. }, _) => Role::Follower { leader: None },
            (_, Some((epoch, term))) => Role::Leader { epoch: Some(epoch), term },
            (Known { observed, .. }, None) => {
                Role::Follower { leader: observed.clone().filter(|l| *l != self.advertise) }
            }
        };
        self.tx.send_if_modified(|r| match *r == role {
            true => false,
            false => {
                *r = role;
                true
            }
        });
    }
}

#[derive(Clone)]
pub struct Leadership {
    shared: Arc<Shared>,
    /// Whether an election decides (etcd) or this master always leads.
    elected: bool,
}

impl Leadership {
    /// The one master without etcd: leads from the start; an abdication ends the term,
    /// and the next one starts at once (after the state was reloaded).
    pub fn single(advertise: &str) -> Leadership {
        let shared = Shared::new(Role::Leader { epoch: None, term: 1 }, 1, advertise);
        Leadership { shared, elected: false }
    }

    /// Joins the etcd election: connects (failing if no endpoint answers) and starts
    /// campaigning and observing in the background, on a thread and runtime of their
    /// own: a lease of a couple of seconds must be kept alive however busy the
    /// process's runtime is (a leader at full load would otherwise lose it).
    pub async fn etcd(cfg: EtcdElection) -> Result<Leadership, etcd_client::Error> {
        let (joined, join) = tokio::sync::oneshot::channel();
        std::thread::Builder::new().name("dromos-election".into()).spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => return drop(joined.send(Err(etcd_client::Error::IoError(e)))),
            };
            rt.block_on(async move {
                let opts = etcd_client::ConnectOptions::new()
                    .with_connect_timeout(Duration::from_secs(3))
                    .with_keep_alive(Duration::from_secs(1), Duration::from_secs(2))
                    .with_keep_alive_while_idle(true);
                let client = match etcd_client::Client::connect(&cfg.endpoints, Some(opts)).await {
                    Ok(c) => c,
                    Err(e) => return drop(joined.send(Err(e))),
                };
                let shared = Shared::new(Role::Follower { leader: None }, 0, &cfg.advertise);
                let _ = joined.send(Ok(shared.clone()));
                let name = cfg.name.clone();
                tokio::join!(observe(client.clone(), name, shared.clone()), campaign(client, cfg, shared));
            });
        })?;
        let shared = join.await.map_err(|_| etcd_client::Error::InvalidArgs("the election thread ended".into()))??;
        Ok(Leadership { shared, elected: true })
    }

    /// A follower of `leader` that no election moves (for tests of what followers do).
    #[cfg(test)]
    pub(crate) fn following(leader: &str, advertise: &str) -> Leadership {
        let shared = Shared::new(Role::Follower { leader: Some(leader.to_string()) }, 0, advertise);
        Leadership { shared, elected: true }
    }

    /// The role now and every change after.
    pub fn watch(&self) -> watch::Receiver<Role> {
        self.shared.tx.subscribe()
    }

    pub fn role(&self) -> Role {
        self.shared.tx.borrow().clone()
    }

    /// The URL this master advertises.
    pub fn advertise(&self) -> &str {
        &self.shared.advertise
    }

    /// The leader's URL, if one is known (this master's own when it leads).
    pub fn leader(&self) -> Option<String> {
        match self.role() {
            Role::Leader { .. } => Some(self.shared.advertise.clone()),
            Role::Follower { leader } => leader,
        }
    }

    /// Whether an etcd election decides who leads.
    pub fn is_elected(&self) -> bool {
        self.elected
    }

    /// Ends this master's term (`DELETE /v2/leader`). With etcd, another master may
    /// win the next election; the single master starts its next term at once.
    pub fn abdicate(&self) {
        if self.elected {
            self.shared.abdicate.notify_waiters();
            return;
        }
        let s = self.shared.clone();
        let term = s
            .known
            .lock()
            .map(|mut k| {
                k.terms += 1;
                k.terms
            })
            .ok();
        s.tx.send_replace(Role::Follower { leader: None });
        tokio::spawn(async move {
            // The next term starts after a moment; a stopping process starts none.
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let (false, Some(term)) = (s.stopping.load(std::sync::atomic::Ordering::SeqCst), term) {
                s.tx.send_replace(Role::Leader { epoch: None, term });
            }
        });
    }

    /// The process stops: ends the current term (resigning, so another master takes
    /// over at once rather than after the lease) and begins no other.
    pub fn stop(&self) {
        self.shared.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
        self.shared.abdicate.notify_waiters();
        if !self.elected {
            self.shared.tx.send_replace(Role::Follower { leader: None });
        }
    }
}

/// Follows the election's leader value (the leader's URL) for as long as the process
/// runs, reconnecting after errors.
async fn observe(mut client: etcd_client::Client, name: String, shared: Arc<Shared>) {
    loop {
        match client.observe(name.as_str()).await {
            Ok(mut stream) => loop {
                match stream.message().await {
                    Ok(Some(resp)) => {
                        let url = resp.kv().and_then(|kv| kv.value_str().ok()).map(str::to_string);
                        shared.update(|k| k.observed = url);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!("observing the etcd election failed: {e}");
                        break;
                    }
                }
            },
            Err(e) => tracing::warn!("cannot observe the etcd election: {e}"),
        }
        shared.update(|k| k.observed = None);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Campaigns term after term for as long as the process runs.
async fn campaign(client: etcd_client::Client, cfg: EtcdElection, shared: Arc<Shared>) {
    while !shared.stopping.load(std::sync::atomic::Ordering::SeqCst) {
        if let Err(e) = term(client.clone(), &cfg, &shared).await {
            tracing::warn!("etcd election: {e}");
        }
        shared.update(|k| {
            k.won = None;
            k.session = false;
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// One session: a lease, kept alive; a campaign on it; leading until the session is
/// unconfirmed or this master abdicates. Returns why it ended.
async fn term(mut client: etcd_client::Client, cfg: &EtcdElection, shared: &Shared) -> Result<(), String> {
    let asked = cfg.ttl.as_secs().max(2) as i64;
    let call = Duration::from_secs(asked as u64);
    let sent = Instant::now();
    let grant = tokio::time::timeout(call, client.lease_grant(asked, None)).await;
    let grant = grant.map_err(|_| "lease grant timed out".to_string())?.map_err(|e| e.to_string())?;
    // etcd may grant a longer TTL than asked (never a shorter one); the margins follow
    // what it granted.
    let (lease, ttl) = (grant.id(), Duration::from_secs(grant.ttl().max(asked) as u64));
    shared.update(|k| k.session = true);
    let alive = keep_alive(client.clone(), lease, ttl, sent, shared);
    tokio::pin!(alive);
    let mut election = client.election_client();
    let won = tokio::select! {
        r = election.campaign(cfg.name.as_str(), cfg.advertise.as_str(), lease) => r.map_err(|e| e.to_string())?,
        why = &mut alive => return Err(why),
    };
    let Some(key) = won.leader().cloned() else {
        return Err("campaign answered without a leader key".into());
    };
    tracing::info!(epoch = key.rev(), "elected leader");
    let abdicated = shared.abdicate.notified();
    tokio::pin!(abdicated);
    abdicated.as_mut().enable();
    shared.update(|k| {
        k.terms += 1;
        k.won = Some((key.rev(), k.terms));
    });
    let why = tokio::select! {
        why = &mut alive => why,
        _ = abdicated => "abdicated".to_string(),
    };
    tracing::warn!("leadership ends: {why}");
    shared.update(|k| k.won = None);
    // Let the others campaign at once instead of after the TTL (best effort: when etcd
    // is unreachable the lease simply expires).
    let opts = etcd_client::ResignOptions::new().with_leader(key);
    let _ = tokio::time::timeout(call, election.resign(Some(opts))).await;
    let _ = tokio::time::timeout(call, client.lease_revoke(lease)).await;
    Ok(())
}

/// Keeps `lease` alive, marking the session confirmed; returns why once that can no
/// longer be confirmed: no answer for the TTL minus a margin (a third of it, counted
/// from when the last confirmed request was sent), or the lease is gone. A broken
/// keep-alive stream (an etcd member restarting) is opened again until then.
async fn keep_alive(
    mut client: etcd_client::Client,
    lease: i64,
    ttl: Duration,
    granted_at: Instant,
    shared: &Shared,
) -> String {
    let every = ttl / 3;
    let deadline = ttl - every;
    let mut confirmed = granted_at;
    let mut stream = None;
    loop {
        let left = deadline.saturating_sub(confirmed.elapsed());
        if left.is_zero() {
            return format!("the lease was not confirmed for {deadline:?}");
        }
        let sent = Instant::now();
        if stream.is_none() {
            match tokio::time::timeout(left, client.lease_keep_alive(lease)).await {
                Ok(Ok(s)) => stream = Some(s),
                Ok(Err(e)) => tracing::warn!("cannot keep the lease alive (retrying): {e}"),
                Err(_) => {}
            }
        }
        if let Some((keeper, answers)) = &mut stream {
            let left = deadline.saturating_sub(confirmed.elapsed());
            let asked = keeper.keep_alive().await;
            let answer = match asked {
                Ok(()) => tokio::time::timeout(left, answers.message()).await,
                Err(e) => Ok(Err(e)),
            };
            match answer {
                Ok(Ok(Some(r))) if r.ttl() > 0 => {
                    confirmed = sent;
                    shared.update(|k| k.session = true);
                }
                Ok(Ok(Some(_))) => return "the lease expired".into(),
                Ok(Ok(None)) | Ok(Err(_)) => {
                    tracing::warn!("the lease keep-alive stream broke; opening it again");
                    stream = None;
                }
                Err(_) => {}
            }
        }
        let pause = if stream.is_some() { every } else { every / 4 };
        tokio::time::sleep(pause.saturating_sub(sent.elapsed())).await;
    }
}
