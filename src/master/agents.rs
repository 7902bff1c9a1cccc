//! The master's side of its agents: the links commands go out on, the registry marks,
//! liveness, and the handling of what agents report.
//!
//! - A *link* is the command channel of one connected agent: an in-process channel for
//!   the embedded agent, the sending half of a WebSocket session for a remote one
//!   (`api::agent_stream`). A newer session of the same agent replaces the older one.
//! - *Liveness* is judged on the master's monotonic clock: every message from an agent
//!   counts as a sign of life; the master pings every `ping_interval`; an agent silent for
//!   `ping_interval × ping_timeouts` (or absent that long after a master start) is marked
//!   unreachable and its tasks TASK_UNREACHABLE, at most as fast as the removal rate
//!   limit allows, so a partition of half the cluster cannot wipe it.
//! - Agent *messages* (registration, status updates) become plans on the write path;
//!   terminal statuses are acknowledged after they are committed (at-least-once delivery,
//!   idempotent handling).

use super::{Master, MasterError};
use crate::agent::protocol::{FromAgent, TaskStatus, ToAgent, PROTOCOL_VERSION};
use crate::domain::task::{Goal, TaskFailure};
use crate::domain::{AgentId, AgentInfo, AgentMark, AgentRecord, PathId, Task, TaskId, TaskState, Timestamp};
use crate::scheduler::Backoff;
use crate::store::Change;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

use super::state::State;

/// How fast agents may be marked unreachable: at most `max` (an absolute number, or a
/// percentage of registered agents, at least one) within any `window`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RemovalLimit {
    Off,
    Count { max: u32, window: Duration },
    Percent { percent: f64, window: Duration },
}

impl RemovalLimit {
    fn window(&self) -> Duration {
        match self {
            RemovalLimit::Off => Duration::ZERO,
            RemovalLimit::Count { window, .. } | RemovalLimit::Percent { window, .. } => *window,
        }
    }

    /// How many removals a window allows with `agents` registered.
    fn max(&self, agents: usize) -> usize {
        match self {
            RemovalLimit::Off => usize::MAX,
            RemovalLimit::Count { max, .. } => *max as usize,
            RemovalLimit::Percent { percent, .. } => ((agents as f64 * percent / 100.0).floor() as usize).max(1),
        }
    }
}

/// Operator settings for agent liveness.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    pub ping_interval: Duration,
    pub ping_timeouts: u32,
    pub removal_limit: RemovalLimit,
    /// How often every agent is asked to re-register (full reconciliation).
    pub reconcile_interval: Duration,
    /// An agent unreachable this long with no tasks left is removed from the registry
    /// (Mesos's registry_max_agent_age), so the agent list does not grow forever.
    pub forget_after: Duration,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            ping_interval: Duration::from_secs(15),
            ping_timeouts: 5,
            removal_limit: RemovalLimit::Percent { percent: 10.0, window: Duration::from_secs(60) },
            reconcile_interval: Duration::from_secs(600),
            forget_after: Duration::from_secs(14 * 24 * 3600),
        }
    }
}

impl Liveness {
    pub fn budget(&self) -> Duration {
        self.ping_interval * self.ping_timeouts
    }
}

pub(super) struct Link {
    tx: mpsc::UnboundedSender<ToAgent>,
    conn: u64,
    /// The embedded agent: in-process, never silent.
    local: bool,
}

/// Connected agents and when each was last heard from.
#[derive(Default)]
pub(super) struct Links {
    links: HashMap<AgentId, Link>,
    last_seen: HashMap<AgentId, Instant>,
    /// When agents were marked unreachable, for the removal rate limit.
    removals: VecDeque<Instant>,
    /// Agents overdue but held back by the rate limit (shown in metrics and the agent list).
    pub(super) held_back: HashSet<AgentId>,
    /// Agents whose registration was applied since this master started (recovery).
    registered: HashSet<AgentId>,
}

/// Longest the master waits after a start for known agents to re-register before it
/// takes writes again (at most the ping budget, which may be long).
const RECOVERY_MAX: Duration = Duration::from_secs(30);

/// The master is recovering after a start: some agents it knows have not registered
/// again yet. Writes wait (503 with Retry-After) until they have, or `left` has passed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Recovering {
    pub waiting_for: usize,
    pub left: Duration,
}

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// How an agent's connection looks from the master right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connection {
    Connected,
    Disconnected,
}

impl Master {
    fn links(&self) -> std::sync::MutexGuard<'_, Links> {
        // A poisoned lock means a panic while holding it; the data (maps) is still usable.
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The channel agents' messages go to (the embedded agent and every WebSocket session).
    pub fn inbox(&self) -> mpsc::UnboundedSender<(AgentId, FromAgent)> {
        self.inbox.clone()
    }

    /// Connects the embedded agent's command channel.
    pub fn attach_local_agent(&self, id: AgentId, tx: mpsc::UnboundedSender<ToAgent>) {
        let mut l = self.links();
        l.last_seen.insert(id.clone(), Instant::now());
        l.links.insert(id, Link { tx, conn: 0, local: true });
    }

    /// Opens a session for a remote agent, replacing an older one (whose command stream
    /// then ends). Returns the session number and the commands to send.
    pub fn connect_agent(&self, id: &AgentId) -> (u64, mpsc::UnboundedReceiver<ToAgent>) {
        if self.stopped.load(Ordering::SeqCst) {
            // A term that is over takes no agent: the session ends at once.
            return (0, mpsc::unbounded_channel().1);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let conn = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
        let mut l = self.links();
        l.last_seen.insert(id.clone(), Instant::now());
        l.links.insert(id.clone(), Link { tx, conn, local: false });
        (conn, rx)
    }

    /// Ends session `conn` of `id` if it is still the current one.
    pub fn disconnect_agent(&self, id: &AgentId, conn: u64) {
        let mut l = self.links();
        if l.links.get(id).is_some_and(|x| x.conn == conn) {
            l.links.remove(id);
        }
    }

    /// Drops every agent's command channel: their sessions end (a term is over).
    pub(super) fn disconnect_all_agents(&self) {
        self.links().links.clear();
    }

    /// Records a sign of life from `id`.
    pub fn heard_from(&self, id: &AgentId) {
        self.links().last_seen.insert(id.clone(), Instant::now());
    }

    /// An agent held back by the removal rate limit counts as disconnected: it is
    /// silent beyond its budget, only not yet marked.
    pub fn connection(&self, id: &AgentId) -> Connection {
        let l = self.links();
        if l.links.contains_key(id) && !l.held_back.contains(id) {
            Connection::Connected
        } else {
            Connection::Disconnected
        }
    }

    /// Agents that missed their ping budget but wait for the removal rate limit.
    pub fn held_back_agents(&self) -> usize {
        self.links().held_back.len()
    }

    /// Agents with a command link that are not overdue (placement only uses these).
    pub(super) fn connected_agents(&self) -> Vec<AgentId> {
        let l = self.links();
        l.links.keys().filter(|id| !l.held_back.contains(*id)).cloned().collect()
    }

    pub(super) fn send_to(&self, agent: &AgentId, msg: ToAgent) {
        if !self.try_send_to(agent, msg) {
            tracing::debug!(%agent, "agent not connected; command dropped (reconciliation repairs it)");
        }
    }

    /// Sends a command if the agent has a link; false if it has none.
    pub(super) fn try_send_to(&self, agent: &AgentId, msg: ToAgent) -> bool {
        self.links().links.get(agent).is_some_and(|l| l.tx.send(msg).is_ok())
    }

    /// The embedded agent, if this master has one.
    pub(super) fn local_agent(&self) -> Option<AgentId> {
        self.links().links.iter().find(|(_, l)| l.local).map(|(id, _)| id.clone())
    }

    /// The `registered` answer for a session.
    pub fn registered_message(&self, id: &AgentId) -> ToAgent {
        ToAgent::Registered {
            protocol: PROTOCOL_VERSION,
            agent_id: id.clone(),
            ping_interval_ms: self.liveness.ping_interval.as_millis() as u64,
            ping_timeouts: self.liveness.ping_timeouts,
            epoch: self.store.epoch(),
        }
    }

    /// Asks every connected agent to re-register (periodic reconciliation).
    pub fn request_reconciliation(&self) {
        let l = self.links();
        for link in l.links.values() {
            let _ = link.tx.send(ToAgent::Reconcile);
        }
    }

    /// Feeds task failures into their apps' launch backoff: (app, config version, when).
    pub(super) async fn count_failures(&self, failures: Vec<(PathId, Timestamp, Timestamp)>) {
        if failures.is_empty() {
            return;
        }
        let st = self.state.read().await;
        let mut b = self.backoffs.lock().unwrap_or_else(|e| e.into_inner());
        for (app, config, at) in failures {
            if let Some(rec) = st.apps.get(&app) {
                let next = Backoff::after_failure(b.get(&app), &rec.current.spec, config, at);
                b.insert(app, next);
            }
        }
    }

    /// Whether the master still recovers from its start (see [`Recovering`]). Once over,
    /// it stays over.
    pub async fn recovering(&self) -> Option<Recovering> {
        if self.recovered.load(Ordering::Relaxed) {
            return None;
        }
        let bound = self.liveness.budget().min(RECOVERY_MAX);
        let elapsed = self.started.elapsed();
        let waiting_for = if elapsed >= bound {
            0
        } else {
            let st = self.state.read().await;
            let l = self.links();
            let still_active = |id: &AgentId| st.agents.get(id).is_some_and(|r| r.mark == AgentMark::Active);
            self.known_at_start.iter().filter(|id| still_active(id) && !l.registered.contains(*id)).count()
        };
        if waiting_for == 0 {
            self.recovered.store(true, Ordering::Relaxed);
            tracing::info!("recovery over: taking writes");
            return None;
        }
        Some(Recovering { waiting_for, left: bound - elapsed })
    }

    /// Whether `id`'s registration has been applied since this master started.
    pub fn has_registered(&self, id: &AgentId) -> bool {
        self.links().registered.contains(id)
    }

    /// One liveness step: ping remote agents, then mark those silent beyond the budget
    /// unreachable, as far as the removal rate limit allows. Public so tests drive it.
    pub async fn check_liveness(&self) -> Result<(), MasterError> {
        let budget = self.liveness.budget();
        let now_i = Instant::now();
        let (overdue, total) = {
            let st = self.state.read().await;
            let l = self.links();
            for link in l.links.values().filter(|l| !l.local) {
                let _ = link.tx.send(ToAgent::Ping);
            }
            let mut overdue: Vec<(Instant, AgentId)> = st
                .agents
                .values()
                .filter(|r| r.mark == AgentMark::Active)
                .filter(|r| !l.links.get(&r.info.id).is_some_and(|x| x.local))
                .filter_map(|r| {
                    let seen = l.last_seen.get(&r.info.id).copied().unwrap_or(self.started).max(self.started);
                    (now_i.duration_since(seen) > budget).then(|| (seen, r.info.id.clone()))
                })
                .collect();
            overdue.sort();
            (overdue.into_iter().map(|(_, id)| id).collect::<Vec<AgentId>>(), st.agents.len())
        };
        let marked: Vec<AgentId> = {
            let mut l = self.links();
            let limit = self.liveness.removal_limit;
            let window = limit.window();
            while l.removals.front().is_some_and(|t| now_i.duration_since(*t) > window) {
                l.removals.pop_front();
            }
            let allowed = limit.max(total).saturating_sub(l.removals.len());
            let (now_marked, held): (Vec<_>, Vec<_>) = overdue.into_iter().enumerate().partition(|(i, _)| *i < allowed);
            if !held.is_empty() {
                tracing::warn!(
                    held_back = held.len(),
                    "agents missed their ping budget but the removal rate limit holds them back \
                     (a partition of many agents?)"
                );
            }
            l.held_back = held.into_iter().map(|(_, id)| id).collect();
            for _ in &now_marked {
                l.removals.push_back(now_i);
            }
            for (_, id) in &now_marked {
                // The session (if any) is stale: closing it makes the agent reconnect.
                l.links.remove(id);
            }
            now_marked.into_iter().map(|(_, id)| id).collect()
        };
        let forget_after = self.liveness.forget_after;
        let forget = !plan_forget(&*self.state.read().await, crate::master::now(), forget_after).is_empty();
        if forget {
            self.write(move |state, now| Ok((plan_forget(state, now, forget_after), ()))).await?;
        }
        if marked.is_empty() {
            return Ok(());
        }
        for id in &marked {
            tracing::warn!(agent = %id, "agent missed its ping budget: marked unreachable");
        }
        self.write(move |state, now| Ok((plan_unreachable(state, now, &marked), ()))).await?;
        self.wake();
        Ok(())
    }

    /// Applies a burst of agent messages in one write, then acknowledges terminal
    /// statuses and kills tasks the master does not know.
    pub(super) async fn on_agent_messages(&self, msgs: Vec<(AgentId, FromAgent)>) -> Result<(), MasterError> {
        let registering: Vec<AgentId> =
            msgs.iter().filter(|(_, m)| matches!(m, FromAgent::Register { .. })).map(|(a, _)| a.clone()).collect();
        // An agent that still holds a session speaks for itself: nobody may replace it.
        let names_earlier =
            msgs.iter().any(|(_, m)| matches!(m, FromAgent::Register { replaces, .. } if !replaces.is_empty()));
        let linked: HashSet<AgentId> =
            if names_earlier { self.links().links.keys().cloned().collect() } else { HashSet::new() };
        let out = self
            .write(move |state, now| {
                let mut h = StatusHandling::default();
                for (agent, msg) in msgs {
                    match msg {
                        FromAgent::Register { info, tasks, replaces, .. } => {
                            for old in replaces.iter().filter(|old| !linked.contains(*old)) {
                                h.replaced_agent(state, old, &info, now);
                            }
                            let rec = AgentRecord {
                                registered_at: state.agents.get(&info.id).map(|r| r.registered_at).unwrap_or(now),
                                info,
                                mark: AgentMark::Active,
                                unreachable_since: None,
                            };
                            if state.agents.get(&rec.info.id) != Some(&rec) {
                                h.changes.push(Change::PutAgent(Box::new(rec)));
                            }
                            let reported: HashSet<&TaskId> = tasks.iter().map(|t| &t.task_id).collect();
                            // Tasks we placed on this agent that it does not know never
                            // started, or ended without a trace: they are lost.
                            let missing: Vec<TaskStatus> = state
                                .tasks_on(&agent)
                                .filter(|t| !reported.contains(&t.id))
                                .map(|t| TaskStatus {
                                    task_id: t.id.clone(),
                                    state: TaskState::Lost,
                                    message: Some("task unknown to its agent after re-registration".into()),
                                    timestamp: now,
                                })
                                .collect();
                            for s in missing.into_iter().chain(tasks) {
                                h.apply(state, &agent, s, now);
                            }
                        }
                        FromAgent::Status(s) => h.apply(state, &agent, s, now),
                        FromAgent::Pong
                        | FromAgent::Log { .. }
                        | FromAgent::Health { .. }
                        | FromAgent::Ready { .. } => {}
                    }
                }
                let StatusHandling { changes, acks, orphans, failures, .. } = h;
                let changed = !changes.is_empty();
                Ok((changes, (acks, orphans, failures, changed)))
            })
            .await?;
        let (acks, orphans, failures, changed) = out;
        self.links().registered.extend(registering);
        if (!acks.is_empty() || !orphans.is_empty()) && self.may_command().await {
            for (agent, task_id, state) in acks {
                self.send_to(&agent, ToAgent::Ack { task_id, state });
            }
            for (agent, task_id) in orphans {
                tracing::info!(task = %task_id, "killing a task the master does not know");
                self.send_to(&agent, ToAgent::Kill { task_id });
            }
        }
        self.count_failures(failures).await;
        // Only a change is news to the scheduler: agents registering again with what
        // the master knows (ten thousand of them after a failover) leave its next
        // pass to the periodic one, and the write path to their registrations.
        if changed {
            self.wake();
        }
        Ok(())
    }
}

/// Marks agents unreachable and their active tasks TASK_UNREACHABLE.
fn plan_unreachable(state: &State, now: Timestamp, agents: &[AgentId]) -> Vec<Change> {
    let mut changes = Vec::new();
    for id in agents {
        let Some(rec) = state.agents.get(id).filter(|r| r.mark == AgentMark::Active) else {
            continue;
        };
        let mut rec = rec.clone();
        rec.mark = AgentMark::Unreachable;
        rec.unreachable_since = Some(now);
        changes.push(Change::PutAgent(Box::new(rec)));
        for t in state.tasks_on(id) {
            let mut t = t.clone();
            t.state = TaskState::Unreachable;
            t.unreachable_since = Some(now);
            t.message = Some("agent unreachable: missed its ping budget".into());
            changes.push(Change::PutTask(Box::new(t)));
        }
    }
    changes
}

/// Removes agents unreachable for longer than `after` that have no tasks left.
fn plan_forget(state: &State, now: Timestamp, after: Duration) -> Vec<Change> {
    let after_ms = i64::try_from(after.as_millis()).unwrap_or(i64::MAX);
    state
        .agents
        .values()
        .filter(|r| r.mark == AgentMark::Unreachable)
        .filter(|r| r.unreachable_since.is_some_and(|t| t.plus_millis(after_ms) <= now))
        .filter(|r| state.tasks_on(&r.info.id).next().is_none())
        .map(|r| Change::DeleteAgent(r.info.id.clone()))
        .collect()
}

/// What handling a burst of status reports produced.
#[derive(Default)]
struct StatusHandling {
    changes: Vec<Change>,
    /// Terminal statuses to acknowledge once committed.
    acks: Vec<(AgentId, TaskId, TaskState)>,
    /// Running tasks the master does not know: killed.
    orphans: Vec<(AgentId, TaskId)>,
    /// Failures that feed launch backoff: (app, config version, when).
    failures: Vec<(PathId, Timestamp, Timestamp)>,
    /// Tasks changed earlier in this burst (a STARTING then RUNNING pair).
    seen: HashMap<TaskId, Task>,
}

impl StatusHandling {
    /// An agent came back under a new id after its directory was wiped, and stopped
    /// what the earlier agent `old` left running: `old`'s tasks are gone (confirmed
    /// dead, so they are replaced at once) and `old` is forgotten. Only an agent on the
    /// same host can speak for an earlier one, and only for one that is not connected.
    fn replaced_agent(&mut self, state: &State, old: &AgentId, new: &AgentInfo, now: Timestamp) {
        let Some(rec) = state.agents.get(old).filter(|r| r.info.id != new.id && r.info.hostname == new.hostname) else {
            return;
        };
        tracing::warn!(old = %old, new = %new.id, "agent came back with a wiped directory: its tasks are gone");
        let gone: Vec<TaskStatus> = state
            .tasks_on(old)
            .map(|t| TaskStatus {
                task_id: t.id.clone(),
                state: TaskState::Gone,
                message: Some(format!(
                    "stopped by agent {} (the agent's directory was wiped; it came back under a new id)",
                    new.id
                )),
                timestamp: now,
            })
            .collect();
        for s in gone {
            self.apply(state, old, s, now);
        }
        self.changes.push(Change::DeleteAgent(rec.info.id.clone()));
    }

    /// Applies one status report to the state being planned.
    fn apply(&mut self, state: &State, agent: &AgentId, s: TaskStatus, now: Timestamp) {
        let known = self.seen.get(&s.task_id).or_else(|| state.tasks.get(&s.task_id)).cloned();
        let Some(mut task) = known else {
            if s.state.is_terminal() {
                self.acks.push((agent.clone(), s.task_id, s.state));
            } else {
                self.orphans.push((agent.clone(), s.task_id));
            }
            return;
        };
        if task.agent_id != *agent || !task.state.accepts(s.state) {
            if s.state.is_terminal() {
                self.acks.push((agent.clone(), s.task_id, s.state));
            }
            return;
        }
        task.state = s.state;
        task.message = s.message.clone();
        if s.state != TaskState::Unreachable {
            task.unreachable_since = None;
        }
        if s.state == TaskState::Running && task.started_at.is_none() {
            task.started_at = Some(s.timestamp.min(now));
        }
        if s.state.is_terminal() && task.job.is_some() {
            // A job task's end is kept until the job scheduler has recorded how its run
            // ended (in the transaction that drops the task).
            self.changes.push(Change::PutTask(Box::new(task.clone())));
            self.acks.push((agent.clone(), task.id.clone(), s.state));
        } else if s.state.is_terminal() {
            // Marathon expunges terminal tasks; the app keeps its last failure.
            if s.state.counts_as_failure() {
                self.changes.push(Change::SetLastFailure(Box::new(TaskFailure {
                    app_id: task.app_id.clone(),
                    host: task.host.clone(),
                    message: s.message.clone().unwrap_or_default(),
                    state: s.state,
                    task_id: task.id.clone(),
                    timestamp: s.timestamp,
                    version: task.version,
                    slave_id: task.agent_id.clone(),
                })));
            }
            if s.state.counts_as_failure() && task.goal == Goal::Running {
                self.failures.push((task.app_id.clone(), task.config_version, now));
            }
            // The terminal state is written, then the task dropped, in one batch: the
            // store skips the write, the event bus reports the state.
            self.changes.push(Change::PutTask(Box::new(task.clone())));
            self.changes.push(Change::DeleteTask(task.id.clone()));
            self.acks.push((agent.clone(), task.id.clone(), s.state));
        } else {
            self.changes.push(Change::PutTask(Box::new(task.clone())));
        }
        self.seen.insert(task.id.clone(), task);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_unreachable_agents_without_tasks_are_forgotten() {
        use crate::scheduler::reconcile::tests::{spec, task, version};
        let rec = |id: &str, mark, since: Option<i64>| AgentRecord {
            info: AgentInfo {
                id: AgentId(id.into()),
                hostname: "h".into(),
                resources: Default::default(),
                attributes: Default::default(),
                containerizers: vec![],
            },
            mark,
            registered_at: Timestamp::from_millis(0),
            unreachable_since: since.map(Timestamp::from_millis),
        };
        let mut st = State::default();
        for r in [
            rec("old", AgentMark::Unreachable, Some(0)),
            rec("recent", AgentMark::Unreachable, Some(9_000)),
            rec("active", AgentMark::Active, None),
        ] {
            st.agents.insert(r.info.id.clone(), r);
        }
        let day = Duration::from_secs(10);
        let forgotten = |st: &State| -> Vec<String> {
            plan_forget(st, Timestamp::from_millis(10_000), day)
                .into_iter()
                .map(|c| match c {
                    Change::DeleteAgent(id) => id.0,
                    _ => panic!("only deletions"),
                })
                .collect()
        };
        assert_eq!(forgotten(&st), vec!["old"]);
        // An agent that still has (unreachable) tasks is kept: they may come back.
        let mut t = task(&version(spec("/app", 1), 0), 0, TaskState::Unreachable, 0);
        t.agent_id = AgentId("old".into());
        st.apply(&Change::PutTask(Box::new(t)));
        assert!(forgotten(&st).is_empty());
    }

    #[test]
    fn removal_limits() {
        let p = RemovalLimit::Percent { percent: 10.0, window: Duration::from_secs(60) };
        assert_eq!(p.max(3), 1, "at least one");
        assert_eq!(p.max(100), 10);
        assert_eq!(RemovalLimit::Count { max: 2, window: Duration::from_secs(1) }.max(100), 2);
        assert_eq!(RemovalLimit::Off.max(5), usize::MAX);
    }
}
