//! `dromos haproxy`: the loop that keeps a real HAProxy in step with the master.
//!
//! - **Follow**: one task reads `/v2/events` (only the types that can change routing),
//!   resuming with `Last-Event-ID`, reconnecting with jittered backoff across the
//!   masters, and giving up on a stream that says nothing (not even a keep-alive) for
//!   [`IDLE_TIMEOUT`]. Every event, and every (re)connect, marks the state dirty.
//! - **Apply**: one task waits for dirty (or the periodic full resync), fetches
//!   `/v2/apps?embed=apps.tasks` once, renders, and plans ([`super::runtime`]): server
//!   changes go through the runtime API at once and are written to the file; anything
//!   else is a reload (staged, `haproxy -c`, renamed into place, at most one at a time
//!   and no closer than `--min-reload-interval`). Events that arrive while a round runs
//!   coalesce into the next round.
//! - **Bad apps**: apps the render rejects, and apps whose config HAProxy refuses (found
//!   by bisecting the app set), are left out, logged, counted and reported to the master
//!   as `load_balancer_rejected_app_event`; the rest is applied.
//! - **Serve** `/metrics`, `/config` and `/health` on `--listen`.

use super::client::{self, Master};
use super::haproxy::{self, write_atomic, Haproxy, Paths};
use super::labels::LabelError;
use super::model::{from_marathon, LbApp};
use super::render::{render, Rendered, Settings};
use super::runtime::{self, accepted, Live, Op, Plan};
use crate::events::sse::Parser;
use crate::events::CUT_OFF;
use crate::files;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// A stream silent this long (keep-alives come every 10 s) is reconnected.
const IDLE_TIMEOUT: Duration = Duration::from_secs(35);
/// How often parked servers are tried for deletion.
const PARKED_RETRY: Duration = Duration::from_millis(500);
/// Wait before retrying a round that failed (the master unreachable, ...).
const ROUND_RETRY: Duration = Duration::from_secs(1);

/// The event types that can change what HAProxy routes.
pub const EVENT_TYPES: &[&str] = &[
    "status_update_event",
    "health_status_changed_event",
    "api_post_event",
    "app_terminated_event",
    "deployment_info",
    "deployment_success",
    "deployment_failed",
];

/// The resolved settings of `dromos haproxy`.
#[derive(Debug, Clone)]
pub struct SidecarConfig {
    pub masters: Vec<Master>,
    pub token: Option<String>,
    pub settings: Settings,
    pub paths: Paths,
    /// Where `/metrics`, `/config` and `/health` are served.
    pub listen: Option<SocketAddr>,
    pub min_reload_interval: Duration,
    pub resync_interval: Duration,
    /// How long a removed server may keep its connections before they are cut.
    pub drain_timeout: Duration,
    /// This load balancer's name in reports to the master.
    pub name: String,
    /// Render once and exit (with `stdout`: print instead of writing the file).
    pub once: bool,
    pub stdout: bool,
}

/// Counters and gauges for `/metrics`.
#[derive(Default)]
pub struct Status {
    renders: AtomicU64,
    reloads: AtomicU64,
    reload_failures: AtomicU64,
    validation_failures: AtomicU64,
    fetch_failures: AtomicU64,
    runtime_ops: [AtomicU64; 4],
    runtime_failures: AtomicU64,
    rejected_apps: AtomicU64,
    stream_connected: AtomicU64,
    events: AtomicU64,
    last_event_ms: AtomicU64,
    haproxy_up: AtomicU64,
    config: Mutex<Arc<str>>,
}

const OP_KINDS: [&str; 4] = ["add", "ready", "park", "delete"];

fn count(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

fn unix_ms() -> u64 {
    u64::try_from(crate::master::now().millis()).unwrap_or(0)
}

impl Status {
    fn op(&self, op: &Op) {
        if let Some(i) = OP_KINDS.iter().position(|k| *k == op.kind()) {
            count(&self.runtime_ops[i]);
        }
    }

    /// Prometheus text.
    pub fn metrics(&self) -> String {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let plain: [(&str, &str, &str, &AtomicU64); 10] = [
            ("renders_total", "counter", "Configs rendered.", &self.renders),
            ("reloads_total", "counter", "HAProxy reloads (and starts) that loaded.", &self.reloads),
            ("reload_failures_total", "counter", "Reloads that failed.", &self.reload_failures),
            ("validation_failures_total", "counter", "Rendered configs haproxy -c refused.", &self.validation_failures),
            ("fetch_failures_total", "counter", "Failed reads of the apps.", &self.fetch_failures),
            ("runtime_failures_total", "counter", "Runtime API operations HAProxy refused.", &self.runtime_failures),
            ("rejected_apps", "gauge", "Apps left out of the config.", &self.rejected_apps),
            ("event_stream_connected", "gauge", "1 while the event stream is open.", &self.stream_connected),
            ("events_total", "counter", "Events received.", &self.events),
            ("haproxy_up", "gauge", "1 while HAProxy runs.", &self.haproxy_up),
        ];
        let mut out = String::new();
        for (name, kind, help, v) in plain {
            let _ = writeln!(
                out,
                "# HELP dromos_lb_{name} {help}\n# TYPE dromos_lb_{name} {kind}\ndromos_lb_{name} {}",
                g(v)
            );
        }
        let last = g(&self.last_event_ms);
        let age = if last == 0 { 0.0 } else { unix_ms().saturating_sub(last) as f64 / 1000.0 };
        let _ = writeln!(
            out,
            "# HELP dromos_lb_last_event_age_seconds Seconds since the last event or (re)connect.\n# TYPE dromos_lb_last_event_age_seconds gauge\ndromos_lb_last_event_age_seconds {age:.3}"
        );
        let _ = writeln!(
            out,
            "# HELP dromos_lb_runtime_ops_total Runtime API operations applied, by kind.\n# TYPE dromos_lb_runtime_ops_total counter"
        );
        for (kind, c) in OP_KINDS.iter().zip(&self.runtime_ops) {
            let _ = writeln!(out, "dromos_lb_runtime_ops_total{{op=\"{kind}\"}} {}", g(c));
        }
        out
    }

    /// The config HAProxy was last given.
    pub fn config(&self) -> Arc<str> {
        self.config.lock().map(|c| c.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    fn set_config(&self, text: &str) {
        let mut c = self.config.lock().unwrap_or_else(|p| p.into_inner());
        *c = Arc::from(text);
    }

    pub fn healthy(&self) -> bool {
        self.haproxy_up.load(Ordering::Relaxed) == 1 && self.stream_connected.load(Ordering::Relaxed) == 1
    }
}

/// Runs the sidecar until SIGTERM or SIGINT.
pub async fn run(cfg: SidecarConfig) -> Result<(), String> {
    if cfg.once {
        return once(&cfg).await;
    }
    let status = Arc::new(Status::default());
    let dirty = Arc::new(Notify::new());
    if let Some(addr) = cfg.listen {
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        tracing::info!(%addr, "serving /metrics, /config and /health");
        tokio::spawn(serve(listener, status.clone()));
    }
    tokio::spawn(follow(cfg.masters.clone(), cfg.token.clone(), dirty.clone(), status.clone()));
    let mut applier = Applier::new(cfg, status);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot handle SIGTERM: {e}"))?;
    let mut next_resync = Instant::now() + applier.cfg.resync_interval;
    let mut tick = tokio::time::interval(PARKED_RETRY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = dirty.notified() => {}
            _ = tokio::time::sleep_until(next_resync) => {
                next_resync = Instant::now() + applier.cfg.resync_interval;
                applier.hosts.clear();
            }
            _ = tick.tick() => {
                if !applier.housekeeping().await {
                    continue;
                }
            }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
        if let Err(e) = applier.round().await {
            tracing::warn!("{e}; retrying in {ROUND_RETRY:?}");
            let dirty = dirty.clone();
            tokio::spawn(async move {
                tokio::time::sleep(ROUND_RETRY).await;
                dirty.notify_one();
            });
        }
    }
    tracing::info!("stopping");
    if let Some(h) = applier.haproxy.as_mut() {
        h.stop().await;
    }
    Ok(())
}

/// `--once`: render, then print (`--stdout`) or validate and write the file.
async fn once(cfg: &SidecarConfig) -> Result<(), String> {
    let mut applier = Applier::new(cfg.clone(), Arc::new(Status::default()));
    let apps = applier.fetch().await?;
    if cfg.stdout {
        let r = render(&apps, &cfg.settings);
        for e in &r.rejected {
            tracing::warn!("left out: {e}");
        }
        print!("{}", r.text);
        return Ok(());
    }
    let r = applier.validated(apps).await?;
    write_atomic(&cfg.paths.config, r.text.as_bytes()).await?;
    tracing::info!(config = %cfg.paths.config.display(), "config written");
    Ok(())
}

/// Follows the event stream forever, marking `dirty` on every event and (re)connect.
async fn follow(masters: Vec<Master>, token: Option<String>, dirty: Arc<Notify>, status: Arc<Status>) {
    let query: String = EVENT_TYPES.iter().map(|t| format!("event_type={t}")).collect::<Vec<_>>().join("&");
    let path = format!("/v2/events?{query}");
    let mut last_id: Option<String> = None;
    let mut backoff = Duration::from_millis(100);
    let mut next = 0usize;
    loop {
        let Some(master) = masters.get(next % masters.len().max(1)) else {
            tracing::error!("no master to follow (give --master)");
            return;
        };
        match client::events(master, &path, token.as_deref(), last_id.as_deref()).await {
            Ok(mut stream) => {
                tracing::info!(master = %master.authority, "following the event stream");
                status.stream_connected.store(1, Ordering::Relaxed);
                status.last_event_ms.store(unix_ms(), Ordering::Relaxed);
                dirty.notify_one(); // whatever happened while away is read afresh
                backoff = Duration::from_millis(100);
                let mut parser = Parser::new();
                let why = loop {
                    match tokio::time::timeout(IDLE_TIMEOUT, stream.next()).await {
                        Err(_) => break format!("nothing received for {IDLE_TIMEOUT:?}"),
                        Ok(Err(e)) => break e,
                        Ok(Ok(None)) => break "the master closed the stream".into(),
                        Ok(Ok(Some(bytes))) => {
                            let events = parser.feed(&bytes);
                            if events.is_empty() {
                                continue;
                            }
                            status.events.fetch_add(events.len() as u64, Ordering::Relaxed);
                            status.last_event_ms.store(unix_ms(), Ordering::Relaxed);
                            dirty.notify_one();
                            if events.iter().any(|e| e.event == CUT_OFF) {
                                break "cut off as too slow".into();
                            }
                        }
                    }
                };
                last_id = parser.last_id.clone().or(last_id);
                status.stream_connected.store(0, Ordering::Relaxed);
                tracing::warn!(master = %master.authority, "event stream ended: {why}");
            }
            Err(e) => {
                tracing::warn!(master = %master.authority, "cannot open the event stream: {e}");
                next += 1;
            }
        }
        tokio::time::sleep(jitter(backoff)).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// `d` scaled by a factor in [0.5, 1.5) (so many sidecars do not reconnect in step).
fn jitter(d: Duration) -> Duration {
    let r = uuid::Uuid::new_v4().as_u128() % 1000;
    d.mul_f64(0.5 + r as f64 / 1000.0)
}

/// The apply side: what HAProxy has and how to change it.
struct Applier {
    cfg: SidecarConfig,
    status: Arc<Status>,
    haproxy: Option<Haproxy>,
    /// What the running HAProxy has; `None` until it runs a config of ours.
    live: Option<Live>,
    last_reload: Option<Instant>,
    /// When each parked server was parked (its drain deadline runs from there).
    parked_at: HashMap<(String, String), Instant>,
    /// Rejections reported to the master (reported again only after they cleared).
    reported: BTreeSet<(String, String, String)>,
    /// Apps whose config HAProxy refused, with the labels it was refused with: left out
    /// until their labels change (or the app goes), so a bad app costs one bisection,
    /// not one per round.
    quarantine: BTreeMap<String, (BTreeMap<String, String>, LabelError)>,
    /// Resolved task hosts (cleared at each full resync).
    hosts: HashMap<String, Option<Ipv4Addr>>,
    /// The master that answered last.
    master: usize,
}

impl Applier {
    fn new(cfg: SidecarConfig, status: Arc<Status>) -> Applier {
        Applier {
            cfg,
            status,
            haproxy: None,
            live: None,
            last_reload: None,
            parked_at: HashMap::new(),
            reported: BTreeSet::new(),
            quarantine: BTreeMap::new(),
            hosts: HashMap::new(),
            master: 0,
        }
    }

    /// Reads the apps from the first master that answers.
    async fn fetch(&mut self) -> Result<Vec<LbApp>, String> {
        let n = self.cfg.masters.len().max(1);
        let mut errors = Vec::new();
        for i in 0..n {
            let at = (self.master + i) % n;
            let Some(m) = self.cfg.masters.get(at) else { break };
            match client::get_json(m, "/v2/apps?embed=apps.tasks", self.cfg.token.as_deref()).await {
                Ok(doc) => {
                    self.master = at;
                    self.resolve_hosts(&doc).await;
                    let hosts = &self.hosts;
                    return Ok(from_marathon(&doc, &mut |h| hosts.get(h).copied().flatten()));
                }
                Err(e) => errors.push(format!("{}: {e}", m.authority)),
            }
        }
        count(&self.status.fetch_failures);
        Err(format!("cannot read the apps: {}", errors.join("; ")))
    }

    /// Resolves the task hosts not yet in the cache.
    async fn resolve_hosts(&mut self, doc: &serde_json::Value) {
        let apps = doc.get("apps").and_then(|a| a.as_array()).map(Vec::as_slice).unwrap_or(&[]);
        let hosts: BTreeSet<&str> = apps
            .iter()
            .filter_map(|a| a.get("tasks").and_then(|t| t.as_array()))
            .flatten()
            .filter_map(|t| t.get("host").and_then(|h| h.as_str()))
            .collect();
        for h in hosts {
            if self.hosts.contains_key(h) {
                continue;
            }
            let ip = match h.parse::<Ipv4Addr>() {
                Ok(ip) => Some(ip),
                Err(_) => tokio::net::lookup_host((h, 0)).await.ok().and_then(|mut addrs| {
                    addrs.find_map(|a| match a.ip() {
                        std::net::IpAddr::V4(v4) => Some(v4),
                        std::net::IpAddr::V6(_) => None,
                    })
                }),
            };
            if ip.is_none() {
                tracing::warn!(host = h, "task host does not resolve to an IPv4 address; its tasks are not routed");
            }
            self.hosts.insert(h.to_string(), ip);
        }
    }

    /// Leaves out the quarantined apps whose labels are unchanged; forgets the rest.
    fn without_quarantined(&mut self, apps: Vec<LbApp>) -> (Vec<LbApp>, Vec<LabelError>) {
        let (mut kept, mut errors) = (Vec::with_capacity(apps.len()), Vec::new());
        let mut still = BTreeMap::new();
        for app in apps {
            match self.quarantine.remove(&app.id) {
                Some((labels, e)) if labels == app.labels => {
                    errors.push(e.clone());
                    still.insert(app.id.clone(), (labels, e));
                }
                _ => kept.push(app),
            }
        }
        self.quarantine = still;
        (kept, errors)
    }

    /// One round: fetch, render, apply.
    async fn round(&mut self) -> Result<(), String> {
        let (apps, quarantined) = {
            let apps = self.fetch().await?;
            self.without_quarantined(apps)
        };
        let mut r = render(&apps, &self.cfg.settings);
        r.rejected.extend(quarantined.iter().cloned());
        count(&self.status.renders);
        let plan = match (&self.live, &self.haproxy) {
            (Some(live), Some(_)) => runtime::plan(live, &r),
            _ => Plan::Reload("HAProxy is not running a config of ours yet".into()),
        };
        match plan {
            Plan::Nothing => {
                self.report(&r.rejected).await;
                Ok(())
            }
            Plan::Runtime(ops) => match self.run_ops(&ops).await {
                Ok(()) => {
                    self.report(&r.rejected).await;
                    write_atomic(&self.cfg.paths.config, r.text.as_bytes()).await?;
                    self.status.set_config(&r.text);
                    Ok(())
                }
                Err(e) => {
                    tracing::warn!("runtime update failed ({e}); reloading instead");
                    self.reload(apps, quarantined).await
                }
            },
            Plan::Reload(why) => {
                tracing::info!("reload needed: {why}");
                self.reload(apps, quarantined).await
            }
        }
    }

    /// Runs runtime operations in order, recording each one that succeeds.
    async fn run_ops(&mut self, ops: &[Op]) -> Result<(), String> {
        let (Some(h), Some(live)) = (&self.haproxy, &mut self.live) else {
            return Err("HAProxy is not running".into());
        };
        for op in ops {
            for cmd in op.commands() {
                let answer = h.runtime(&cmd).await?;
                if !accepted(&answer) {
                    count(&self.status.runtime_failures);
                    return Err(format!("'{cmd}': {}", answer.trim()));
                }
            }
            live.applied(op);
            self.status.op(op);
            let now = Instant::now();
            match op {
                Op::Park { backend, server } => {
                    self.parked_at.insert((backend.clone(), server.clone()), now);
                }
                Op::Ready { backend, server, .. } | Op::Delete { backend, server } => {
                    self.parked_at.remove(&(backend.clone(), server.clone()));
                }
                Op::Add { .. } => {}
            }
        }
        Ok(())
    }

    /// Renders `apps`, leaving out any app whose config HAProxy refuses, and returns a
    /// render that passed `haproxy -c` (staged next to the config file).
    async fn validated(&mut self, apps: Vec<LbApp>) -> Result<Rendered, String> {
        let r = render(&apps, &self.cfg.settings);
        let Err(e) = self.check(&r.text).await else { return Ok(r) };
        count(&self.status.validation_failures);
        tracing::warn!("HAProxy refused the rendered config ({e}); looking for the apps at fault");
        if let Err(e) = self.check(&render(&[], &self.cfg.settings).text).await {
            return Err(format!("HAProxy refuses the config even without apps (check the templates): {e}"));
        }
        let bad = self.offenders(apps.clone()).await;
        let (kept, bad_apps): (Vec<LbApp>, Vec<LbApp>) =
            apps.into_iter().partition(|a| !bad.iter().any(|b| b.app_id == a.id));
        let mut r = render(&kept, &self.cfg.settings);
        self.check(&r.text).await.map_err(|e| format!("HAProxy still refuses the config: {e}"))?;
        for app in bad_apps {
            if let Some(e) = bad.iter().find(|b| b.app_id == app.id) {
                self.quarantine.insert(app.id, (app.labels, e.clone()));
            }
        }
        r.rejected.extend(bad);
        Ok(r)
    }

    /// The apps whose config HAProxy refuses, by bisection: O(k log n) checks for k
    /// offenders among n apps (marathon-lb checked every app one by one).
    async fn offenders(&self, apps: Vec<LbApp>) -> Vec<LabelError> {
        let mut found = Vec::new();
        let mut todo = vec![apps];
        while let Some(set) = todo.pop() {
            let Err(e) = self.check(&render(&set, &self.cfg.settings).text).await else { continue };
            if let [one] = set.as_slice() {
                found.push(LabelError { app_id: one.id.clone(), label: "config".into(), message: e });
                continue;
            }
            let mid = set.len() / 2;
            let (left, right) = set.split_at(mid);
            todo.push(right.to_vec());
            todo.push(left.to_vec());
        }
        found
    }

    /// `haproxy -c` on `text`, staged next to the config file.
    async fn check(&self, text: &str) -> Result<(), String> {
        let staged = files::sibling(&self.cfg.paths.config, "staged");
        write_atomic(&staged, text.as_bytes()).await?;
        let result = haproxy::check(&self.cfg.paths.bin, &staged).await;
        let _ = tokio::fs::remove_file(&staged).await;
        result
    }

    /// The reload path: wait out the minimum interval, validate, swap the file in,
    /// reload (or start HAProxy), and fall back to the last known good config when the
    /// new one does not load.
    /// `quarantined`: the apps already left out for config HAProxy refused.
    async fn reload(&mut self, apps: Vec<LbApp>, quarantined: Vec<LabelError>) -> Result<(), String> {
        if let Some(at) = self.last_reload {
            tokio::time::sleep_until(at + self.cfg.min_reload_interval).await;
        }
        let mut r = self.validated(apps).await?;
        r.rejected.extend(quarantined);
        self.report(&r.rejected).await;
        let paths = self.cfg.paths.clone();
        write_atomic(&paths.config, r.text.as_bytes()).await?;
        self.last_reload = Some(Instant::now());
        let loaded = match self.haproxy.take() {
            Some(h) => {
                let loaded = h.reload().await;
                self.haproxy = Some(h);
                loaded
            }
            None => match Haproxy::start_or_adopt(paths.clone()).await {
                Ok(h) => {
                    // A started HAProxy runs our file; an adopted one may run an older one.
                    let loaded = if h.started() { Ok(()) } else { h.reload().await };
                    self.haproxy = Some(h);
                    self.status.haproxy_up.store(1, Ordering::Relaxed);
                    loaded
                }
                Err(e) => Err(e),
            },
        };
        match loaded {
            Ok(()) => {
                count(&self.status.reloads);
                self.live = Some(Live::loaded(&r));
                self.parked_at.clear();
                self.status.set_config(&r.text);
                write_atomic(&files::sibling(&paths.config, "lkg"), r.text.as_bytes()).await
            }
            Err(e) => {
                count(&self.status.reload_failures);
                self.live = None;
                let lkg = files::sibling(&paths.config, "lkg");
                if let Ok(good) = tokio::fs::read(&lkg).await {
                    write_atomic(&paths.config, &good).await?;
                    if let Some(h) = &self.haproxy {
                        if let Err(e2) = h.reload().await {
                            tracing::error!("the last known good config did not load either: {e2}");
                        }
                    }
                }
                Err(format!("the new config did not load: {e}"))
            }
        }
    }

    /// Periodic chores: notice a HAProxy that died, delete parked servers whose
    /// connections are gone (cutting them after the drain timeout). Returns whether a
    /// round is needed now (to start HAProxy again).
    async fn housekeeping(&mut self) -> bool {
        if let Some(h) = self.haproxy.as_mut() {
            if let Some(status) = h.exited() {
                tracing::error!("HAProxy exited ({status}); starting it again");
                self.haproxy = None;
                self.live = None;
                self.status.haproxy_up.store(0, Ordering::Relaxed);
                return true;
            }
        }
        let Some(live) = &self.live else { return false };
        let deletions = runtime::deletions(live);
        if deletions.is_empty() {
            return false;
        }
        for op in deletions {
            let Op::Delete { backend, server } = &op else { continue };
            let key = (backend.clone(), server.clone());
            let overdue = self.parked_at.get(&key).is_none_or(|at| at.elapsed() > self.cfg.drain_timeout);
            if let Some(h) = &self.haproxy {
                if overdue {
                    let _ = h.runtime(&format!("shutdown sessions server {backend}/{server}")).await;
                }
                match h.runtime(&format!("del server {backend}/{server}")).await {
                    Ok(a) if accepted(&a) || runtime::gone(&a) => {
                        if let Some(live) = self.live.as_mut() {
                            live.applied(&op);
                        }
                        self.parked_at.remove(&key);
                        self.status.op(&op);
                    }
                    Ok(a) => tracing::debug!(%backend, %server, "not deleted yet: {}", a.trim()),
                    Err(e) => tracing::warn!(%backend, %server, "del server: {e}"),
                }
            }
        }
        false
    }

    /// Logs and reports the apps left out that were not reported yet.
    async fn report(&mut self, rejected: &[LabelError]) {
        let apps: BTreeSet<&str> = rejected.iter().map(|e| e.app_id.as_str()).collect();
        self.status.rejected_apps.store(apps.len() as u64, Ordering::Relaxed);
        let now: BTreeSet<(String, String, String)> =
            rejected.iter().map(|e| (e.app_id.clone(), e.label.clone(), e.message.clone())).collect();
        let fresh: Vec<_> = now.difference(&self.reported).cloned().collect();
        self.reported = now;
        for (app_id, label, message) in fresh {
            tracing::warn!(app = %app_id, %label, "app left out of the HAProxy config: {message}");
            let body = serde_json::json!({
                "eventType": "load_balancer_rejected_app_event",
                "loadBalancer": self.cfg.name,
                "appId": app_id,
                "label": label,
                "message": crate::domain::clip(&message, 1000),
            });
            if let Some(m) = self.cfg.masters.get(self.master) {
                if let Err(e) = client::post_json(m, "/v2/events", self.cfg.token.as_deref(), &body).await {
                    tracing::warn!("cannot report the rejection to the master: {e}");
                }
            }
        }
    }
}

/// Serves `/metrics`, `/config` and `/health`.
async fn serve(listener: tokio::net::TcpListener, status: Arc<Status>) {
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(|axum::extract::State(s): axum::extract::State<Arc<Status>>| async move {
                ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], s.metrics())
            }),
        )
        .route(
            "/config",
            get(|axum::extract::State(s): axum::extract::State<Arc<Status>>| async move { s.config().to_string() }),
        )
        .route(
            "/health",
            get(|axum::extract::State(s): axum::extract::State<Arc<Status>>| async move {
                if s.healthy() {
                    (StatusCode::OK, "ok\n").into_response()
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "HAProxy or the event stream is down\n").into_response()
                }
            }),
        )
        .with_state(status);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!("the metrics endpoint stopped: {e}");
    }
}
