//! `make bench`: the performance targets of the foundation issue, measured (never as
//! timed tests). Prints one line per figure; README's performance section records them.
//!
//! 1. Placement core: 10,000 agents, 100,000 placements with resources and ports.
//! 2. Persistence: 100,000 task records group-committed to SQLite.
//! 3. Local agent: 1,000 instances of `sleep 3600`, POST to all TASK_RUNNING.
//! 4. Memory: RSS of `dromos serve` with those 1,000 tasks running.
//! 5. DRF: a full allocation pass, 10,000 agents and 100 roles.
//! 6. Cluster: 10,000 simulated agents, one app of 100,000 instances placed and
//!    reported running, end to end through the master (write path, store, agent
//!    messages); and the master's memory with all of it.
//! 7. Agent loss: a real agent frozen (SIGSTOP); time until its task runs elsewhere.
//! 8. Constraint-heavy placement: 10,000 agents in 50 racks, 1,000 apps x 100
//!    instances with UNIQUE hostname + GROUP_BY rack.
//! 9. Health checking: one agent's checker running 5,000 HTTP checks with a 1 s interval
//!    against a local endpoint; the endpoint counts the probes it answers.
//! 10. Rolling upgrade: 1,000 health-checked instances on 100 simulated agents with
//!     (0.9, 0.1), the new version's checks answered at once.
//! 11. Jobs: `dromos serve` starting with 100,000 stored jobs, and searching them; job
//!     runs due two per millisecond through the master with simulated agents
//!     (throughput and lateness).
//! 12. HAProxy: rendering 10,000 apps / 100,000 tasks; with `dromos serve`, `dromos
//!     haproxy` and a real HAProxy, the time from a task's status event until HAProxy's
//!     runtime API shows the server added or taken out (and that no reload happened).
//! 13. Event bus: `dromos serve` holding 10,000 `/v2/events` subscribers (its extra
//!     memory), and 1,000 subscribers receiving 200 events/s (deliveries per second,
//!     delivery lag, and the API's latency with and without them).
//! 14. Web UI: every page rendered with 10,000 apps, 100,000 tasks and 10,000 jobs
//!     (p50/p99 and size), the script's size, and, in a real headless Chromium, the time
//!     from a task's kill until the open app page shows the change.
//! 15. Failover (`failover`): two `dromos serve` on a real PostgreSQL and etcd, 10,000
//!     simulated agents (each the real agent link over its own WebSocket) running
//!     100,000 tasks; the time from `kill -9` of the leader until the other master takes
//!     a write, and the latency a follower adds to writes it forwards.

use dromos::domain::agent::Containerizer;
use dromos::domain::task::Goal;
use dromos::domain::*;
use dromos::scheduler::{place, AgentCapacity, Fairness, LaunchRequest, RolePolicy};
use dromos::store::{Change, Store};
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The best time, in seconds, of `runs` placement passes of `requests` (100,000 tasks
/// in all, which must all be placed) on fresh copies of `agents`.
fn best_placement(agents: &[AgentCapacity], requests: &[LaunchRequest], runs: usize) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..runs {
        let mut a = agents.to_vec();
        let mut cursor = 0;
        let t = Instant::now();
        let policy = RolePolicy::default();
        let mut fairness = Fairness::new(Resources::default(), Default::default(), &policy);
        let r = place(&mut a, requests, &mut cursor, &mut fairness);
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(r.placed.len(), 100_000, "{:?}", r.unplaced.values().next());
        best = best.min(secs);
    }
    best
}

fn bench_placement() {
    let agents: Vec<AgentCapacity> = (0..10_000)
        .map(|i| {
            AgentCapacity::new(&AgentInfo {
                id: AgentId(format!("agent-{i}")),
                hostname: format!("node{i}"),
                resources: AgentResources::unreserved(
                    Resources::new(16.0, 65536.0, 100_000.0, 0.0),
                    vec![PortRange::new(31000, 32000)],
                ),
                attributes: Default::default(),
                containerizers: vec![Containerizer::Process],
            })
        })
        .collect();
    let specs: Vec<AppSpec> = (0..100)
        .map(|i| {
            let body = json!({"id": format!("/bench/app{i}"), "cmd": "x", "instances": 1000, "cpus": 0.1, "mem": 64, "portDefinitions": [{"port": 0}, {"port": 0}]});
            dromos::api::dto::app::parse_app(body, None).expect("valid")
        })
        .collect();
    let requests: Vec<LaunchRequest> = specs.iter().map(|s| LaunchRequest::new(s, 1000)).collect();
    let best = best_placement(&agents, &requests, 5);
    println!(
        "placement: 100000 tasks on 10000 agents in {:.1} ms = {:.0} placements/s (best of 5, one core)",
        best * 1e3,
        100_000.0 / best
    );
}

fn bench_constraints() {
    // Racks in a scrambled order, as agent ids (uuids) order them in the master.
    let agents: Vec<AgentCapacity> = (0..10_000u64)
        .map(|i| {
            let rack = (i.wrapping_mul(2654435761) >> 7) % 50;
            AgentCapacity::new(&AgentInfo {
                id: AgentId(format!("agent-{i}")),
                hostname: format!("node{i}"),
                resources: AgentResources::unreserved(Resources::new(16.0, 65536.0, 100_000.0, 0.0), vec![]),
                attributes: [("rack".to_string(), dromos::domain::resources::Value::Text(format!("r{rack}")))]
                    .into_iter()
                    .collect(),
                containerizers: vec![Containerizer::Process],
            })
        })
        .collect();
    let specs: Vec<AppSpec> = (0..1000)
        .map(|i| {
            let body = json!({"id": format!("/bench/c{i}"), "cmd": "x", "instances": 100, "cpus": 0.1, "mem": 64,
                "portDefinitions": [], "constraints": [["hostname", "UNIQUE"], ["rack", "GROUP_BY", "50"]]});
            dromos::api::dto::app::parse_app(body, None).expect("valid")
        })
        .collect();
    let requests: Vec<LaunchRequest> = specs.iter().map(|s| LaunchRequest::new(s, 100)).collect();
    let best = best_placement(&agents, &requests, 3);
    println!(
        "constraints: 1000 apps x 100 instances, UNIQUE hostname + GROUP_BY rack (50 racks), on 10000 agents in \
         {:.0} ms = {:.0} placements/s (best of 3, one core)",
        best * 1e3,
        100_000.0 / best
    );
}

fn bench_health(rt: &tokio::runtime::Runtime) {
    use dromos::agent::health::{Checks, Target, MAX_CONCURRENT};
    use dromos::agent::protocol::{CheckKind, HealthCheckTask};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const CHECKS: usize = 5000;
    const SECONDS: u64 = 10;
    rt.block_on(async {
        // The endpoint: answers every request with 200 and counts them.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let answered = Arc::new(AtomicU64::new(0));
        let count = answered.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let count = count.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    if conn.read(&mut buf).await.is_ok_and(|n| n > 0) {
                        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        let check = HealthCheckTask {
            kind: CheckKind::Http { path: "/health".into() },
            port: Some(port),
            grace_ms: 0,
            interval_ms: 1000,
            timeout_ms: 1000,
            delay_ms: 0,
            max_consecutive_failures: 3,
            ignore_http1xx: false,
            error: None,
        };
        let limit = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT));
        let reports = Arc::new(AtomicU64::new(0));
        let r = reports.clone();
        let report: dromos::agent::health::Report = Arc::new(move |_, _| {
            r.fetch_add(1, Ordering::Relaxed);
        });
        let checks: Vec<Checks> = (0..CHECKS)
            .map(|i| {
                let target = Target {
                    task_id: format!("bench_app.instance-{i:08}._app.1").parse().expect("task id"),
                    host: "127.0.0.1".into(),
                    started: Timestamp::from_millis(0),
                    sandbox: std::env::temp_dir(),
                    env: Default::default(),
                };
                Checks::start(target, std::slice::from_ref(&check), None, limit.clone(), report.clone())
            })
            .collect();
        // Let the first round settle, then count a steady window.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = answered.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(SECONDS)).await;
        let done = answered.load(Ordering::Relaxed) - before;
        drop(checks);
        println!(
            "health: {CHECKS} HTTP checks at 1 s intervals on one agent: {:.0} probes/s answered over {SECONDS} s \
             (due: {CHECKS}/s); {} state reports",
            done as f64 / SECONDS as f64,
            reports.load(Ordering::Relaxed)
        );
    });
}

fn bench_persistence(rt: &tokio::runtime::Runtime) {
    let dir = tempfile::tempdir().expect("tempdir");
    rt.block_on(async {
        let store = Store::open("", dir.path()).await.expect("store");
        let body = json!({"id": "/bench/persist", "cmd": "x", "instances": 100000});
        let spec = dromos::api::dto::app::parse_app(body, None).expect("valid");
        let app = AppVersion::next(None, spec, Timestamp::from_millis(1));
        let tasks: Vec<Change> = (0..100_000)
            .map(|n| {
                Change::PutTask(Box::new(Task {
                    id: InstanceId::new(&app.spec.id, &format!("00000000-0000-0000-0000-{n:012}")).task_id(1),
                    app_id: app.spec.id.clone(),
                    agent_id: AgentId(format!("agent-{}", n % 100)),
                    host: format!("node{}", n % 100),
                    state: TaskState::Staging,
                    goal: Goal::Running,
                    ports: vec![31000 + (n % 1000) as u16],
                    version: app.version,
                    config_version: app.version,
                    staged_at: Timestamp::from_millis(n as i64),
                    started_at: None,
                    message: None,
                    unreachable_since: None,
                    job: None,
                }))
            })
            .collect();
        let t = Instant::now();
        store.apply(&tasks).await.expect("commit");
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(store.count_tasks().await.expect("count"), 100_000);
        println!(
            "persistence: 100000 task records in one SQLite group commit: {:.0} ms ({:.0} rows/s)",
            secs * 1e3,
            100_000.0 / secs
        );
        // Many small transactions for comparison: what the group commit saves.
        let t = Instant::now();
        for c in tasks.iter().take(500) {
            store.apply(std::slice::from_ref(c)).await.expect("commit");
        }
        let per = t.elapsed().as_secs_f64() / 500.0;
        println!("persistence: one row per transaction: {:.2} ms per commit ({:.0} commits/s)", per * 1e3, 1.0 / per);
        store.close().await;
    });
}

fn http(method: &str, url: &str, body: Option<serde_json::Value>) -> serde_json::Value {
    let req = ureq::request(method, url);
    let r = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    match r {
        Ok(r) => r.into_json().unwrap_or(serde_json::Value::Null),
        Err(e) => panic!("{method} {url}: {e}"),
    }
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// `cgroups`: whether the tasks get cgroup limits (where the machine allows them).
fn bench_local_agent(cgroups: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = if cgroups { "with cgroup limits" } else { "--no-cgroups" };
    let mut child = Command::new(env!("CARGO_BIN_EXE_dromos"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--agent-cpus",
            "64",
            "--agent-mem",
            "1000000",
            "--hostname",
            "127.0.0.1",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .args((!cgroups).then_some("--no-cgroups"))
        .env("DROMOS_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start dromos");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("address line");
    let url = line.trim().trim_start_matches("dromos listening on ").to_string();
    let app = json!({"id": "/bench/sleep", "cmd": "sleep 3600", "instances": 1000, "cpus": 0.01, "mem": 1, "portDefinitions": []});
    let t = Instant::now();
    http("POST", &format!("{url}/v2/apps"), Some(app));
    loop {
        let a = http("GET", &format!("{url}/v2/apps/bench/sleep"), None);
        if a["app"]["tasksRunning"] == 1000 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(120), "1000 tasks did not start in 120 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "local agent ({limits}): 1000 x `sleep 3600` from POST to all TASK_RUNNING in {secs:.2} s ({:.0} tasks/s)",
        1000.0 / secs
    );
    std::thread::sleep(Duration::from_secs(2));
    println!("memory ({limits}): dromos serve with 1000 running tasks: {:.1} MiB RSS", rss_mib(child.id()));
    let t = Instant::now();
    http("DELETE", &format!("{url}/v2/apps/bench/sleep"), None);
    loop {
        let tasks = http("GET", &format!("{url}/v2/tasks"), None);
        if tasks["tasks"].as_array().is_some_and(|t| t.is_empty()) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(120), "tasks did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("local agent ({limits}): 1000 tasks killed and gone in {:.2} s", t.elapsed().as_secs_f64());
    let _ = child.kill();
    let _ = child.wait();
}

fn bench_drf() {
    // 10,000 agents with 16 cpus / 64 GiB; 100 roles, each with one app that wants more
    // than its fair share, so the pass runs until the cluster is full.
    let agents: Vec<AgentCapacity> = (0..10_000)
        .map(|i| {
            AgentCapacity::new(&AgentInfo {
                id: AgentId(format!("agent-{i}")),
                hostname: format!("node{i}"),
                resources: AgentResources::unreserved(Resources::new(16.0, 65536.0, 0.0, 0.0), vec![]),
                attributes: Default::default(),
                containerizers: vec![Containerizer::Process],
            })
        })
        .collect();
    let specs: Vec<AppSpec> = (0..100)
        .map(|i| {
            let body = json!({"id": format!("/r{i}/app"), "cmd": "x", "instances": 5000, "role": format!("r{i}"),
                "cpus": 1.0 + (i % 4) as f64, "mem": 1024.0 * (1 + i % 3) as f64, "portDefinitions": []});
            dromos::api::dto::app::parse_app(body, None).expect("valid")
        })
        .collect();
    let requests: Vec<LaunchRequest> = specs.iter().map(|s| LaunchRequest::new(s, 5000)).collect();
    let mut policy = RolePolicy::default();
    for i in 0..100 {
        policy.weights.insert(format!("r{i}"), 1.0 + (i % 5) as f64);
    }
    let total = Resources::new(160_000.0, 655_360_000.0, 0.0, 0.0);
    let mut best = f64::MAX;
    let mut placed = 0;
    for _ in 0..5 {
        let mut a = agents.clone();
        let mut fairness = Fairness::new(total, Default::default(), &policy);
        let t = Instant::now();
        let r = place(&mut a, &requests, &mut 0, &mut fairness);
        best = best.min(t.elapsed().as_secs_f64());
        placed = r.placed.len();
    }
    println!(
        "drf: full allocation pass, 10000 agents, 100 weighted roles: {placed} tasks placed in {:.1} ms (best of 5)",
        best * 1e3
    );
}

/// Starts `n` simulated agents: in-process links that answer every launch with
/// TASK_RUNNING and, at once, "alive" from each of the task's health checks (and
/// "ready" when it has a readiness check), or for a job run TASK_FINISHED, and every
/// kill with TASK_KILLED. Returns
/// when the master has registered them all.
async fn simulated_agents(master: &std::sync::Arc<dromos::master::Master>, n: usize, cpus: f64) {
    use dromos::agent::protocol::{FromAgent, TaskStatus, ToAgent, PROTOCOL_VERSION};
    use dromos::domain::health::{Health, Readiness};
    let inbox = master.inbox();
    for i in 0..n {
        let id = AgentId(format!("sim-{i}"));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        master.attach_local_agent(id.clone(), tx);
        let info = AgentInfo {
            id: id.clone(),
            hostname: format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256),
            resources: AgentResources::unreserved(
                Resources::new(cpus, 65536.0, 100_000.0, 0.0),
                vec![PortRange::new(31000, 32000)],
            ),
            attributes: Default::default(),
            containerizers: vec![Containerizer::Process],
        };
        let _ = inbox.send((
            id.clone(),
            FromAgent::Register { protocol: PROTOCOL_VERSION, info, tasks: vec![], replaces: vec![] },
        ));
        let inbox = inbox.clone();
        tokio::spawn(async move {
            let status = |task_id, state| {
                FromAgent::Status(TaskStatus { task_id, state, message: None, timestamp: Timestamp::from_millis(0) })
            };
            while let Some(cmd) = rx.recv().await {
                match cmd {
                    ToAgent::Launch(l) => {
                        let _ = inbox.send((id.clone(), status(l.task_id.clone(), TaskState::Running)));
                        // A job's run ends at once (apps have an id; job runs do not).
                        if l.app_id.is_root() {
                            let _ = inbox.send((id.clone(), status(l.task_id.clone(), TaskState::Finished)));
                            continue;
                        }
                        for index in 0..l.health_checks.len() as u16 {
                            let health = Health { alive: true, ..Default::default() };
                            let _ = inbox
                                .send((id.clone(), FromAgent::Health { task_id: l.task_id.clone(), index, health }));
                        }
                        if l.readiness.is_some() {
                            let readiness = Readiness { ready: true, ..Default::default() };
                            let _ = inbox.send((id.clone(), FromAgent::Ready { task_id: l.task_id, readiness }));
                        }
                    }
                    ToAgent::Kill { task_id } => {
                        let _ = inbox.send((id.clone(), status(task_id, TaskState::Killed)));
                    }
                    _ => {}
                }
            }
        });
    }
    master.run();
    while master.read().await.agents.len() < n {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A master on a fresh store in `dir` with `n` simulated agents of `cpus` each.
async fn simulated_cluster(dir: &std::path::Path, n: usize, cpus: f64) -> std::sync::Arc<dromos::master::Master> {
    use dromos::master::{Master, MasterConfig};
    let store = Store::open("", dir).await.expect("store");
    let master = Master::start(store, MasterConfig::default()).await.expect("master");
    simulated_agents(&master, n, cpus).await;
    master
}

fn bench_cluster(rt: &tokio::runtime::Runtime) {
    use dromos::master::plans;
    const AGENTS: usize = 10_000;
    const TASKS: u32 = 100_000;
    let dir = tempfile::tempdir().expect("tempdir");
    rt.block_on(async {
        let master = simulated_cluster(dir.path(), AGENTS, 16.0).await;
        let body = json!({"id": "/bench/huge", "cmd": "sleep 3600", "instances": TASKS, "cpus": 0.01, "mem": 1});
        let spec = dromos::api::dto::app::parse_app(body, None).expect("valid");
        let t = Instant::now();
        master.write(move |state, now| plans::create_app(state, now, spec)).await.expect("create");
        master.wake();
        loop {
            let running = master.read().await.tasks.values().filter(|t| t.state == TaskState::Running).count();
            if running == TASKS as usize {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(300), "only {running} running after 300 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "cluster: {TASKS} instances on {AGENTS} simulated agents, create to all TASK_RUNNING in {secs:.2} s \
             ({:.0} tasks/s)",
            TASKS as f64 / secs
        );
        println!(
            "memory: master with {AGENTS} agents and {TASKS} tasks (simulated agents in-process): {:.0} MiB RSS",
            rss_mib(std::process::id())
        );
    });
}

/// A rolling upgrade of 1,000 health-checked instances on 100 simulated agents with
/// minimumHealthCapacity 0.9 and maximumOverCapacity 0.1: from the PUT of a new command
/// until the deployment has finished (every instance of the new version, healthy). The
/// agents have room for 11 instances each, 1,100 in all: exactly the 10 % over
/// capacity, so the bounds, not the cluster, pace the upgrade.
fn bench_rolling(rt: &tokio::runtime::Runtime) {
    use dromos::master::plans;
    const AGENTS: usize = 100;
    const TASKS: u32 = 1_000;
    let dir = tempfile::tempdir().expect("tempdir");
    rt.block_on(async {
        let master = simulated_cluster(dir.path(), AGENTS, 1.15).await;
        let app = |cmd: &str| {
            let body = json!({
                "id": "/bench/rolling", "cmd": cmd, "instances": TASKS, "cpus": 0.1, "mem": 1,
                "healthChecks": [{"protocol": "COMMAND", "command": {"value": "true"}}],
                "upgradeStrategy": {"minimumHealthCapacity": 0.9, "maximumOverCapacity": 0.1}
            });
            dromos::api::dto::app::parse_app(body, None).expect("valid")
        };
        let spec = app("sleep 3600");
        master.write(move |state, now| plans::create_app(state, now, spec)).await.expect("create");
        master.wake();
        while !master.read().await.deployments.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let spec = app("sleep 7200");
        let t = Instant::now();
        let (dep, _) = master
            .write(move |state, now| {
                let base = state.apps.get(&spec.id).map(|r| r.current.version);
                plans::put_app(state, now, spec, base, false)
            })
            .await
            .expect("put");
        master.wake();
        // Sampled bounds along the way (the tests assert them; the bench reports them).
        let (mut peak, mut floor) = (0, usize::MAX);
        loop {
            let st = master.read().await;
            if st.deployments.is_empty() {
                break;
            }
            peak = peak.max(st.tasks.values().filter(|t| t.is_active()).count());
            floor = floor.min(st.tasks.values().filter(|t| t.state == TaskState::Running).count());
            drop(st);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let secs = t.elapsed().as_secs_f64();
        let st = master.read().await;
        let new = st.tasks.values().filter(|t| t.version == dep.version && t.state == TaskState::Running).count();
        let active = st.tasks.values().filter(|t| t.is_active()).count();
        assert_eq!((new, active), (TASKS as usize, TASKS as usize), "the upgrade left other tasks");
        println!(
            "rolling upgrade: {TASKS} health-checked instances on {AGENTS} simulated agents, (0.9, 0.1), \
             PUT to deployment finished in {secs:.2} s (sampled: at most {peak} tasks active, \
             at least {floor} running)"
        );
    });
}

/// 100,000 jobs stored (half ISO 8601 intervals, half crontab lines in a named zone):
/// how long `dromos serve` takes from start to answering, and how fast it searches them.
fn bench_jobs_start(rt: &tokio::runtime::Runtime) {
    use dromos::domain::job::JobRecord;
    const JOBS: usize = 100_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("d");
    std::fs::create_dir_all(&data).expect("data dir");
    rt.block_on(async {
        let store = Store::open("", &data).await.expect("store");
        let now = Timestamp::from_millis(1_800_000_000_000);
        let mut batch = Vec::new();
        for i in 0..JOBS {
            let body = match i % 2 {
                0 => json!({"name": format!("job-{i:06}"), "command": format!("run-report --part {i}"),
                            "schedule": "R/2030-01-01T02:00:00Z/P1D", "scheduleTimeZone": "Europe/Berlin"}),
                _ => json!({"name": format!("job-{i:06}"), "command": format!("backup --shard {i}"),
                            "cron": "30 2 * * 1-5", "timezone": "America/New_York"}),
            };
            let parsed = dromos::api::dto::job::parse_job(body, now).expect("valid job");
            let mut status = parsed.status;
            status.next_due = parsed.spec.schedule.as_ref().and_then(|s| s.next_after(now));
            batch.push(Change::PutJob(Box::new(JobRecord { spec: parsed.spec, status })));
            if batch.len() == 10_000 {
                store.apply(&std::mem::take(&mut batch)).await.expect("store jobs");
            }
        }
        store.apply(&batch).await.expect("store jobs");
        store.close().await;
    });
    let mut best_start = f64::MAX;
    let mut best_search = f64::MAX;
    let mut best_list = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let mut c = Command::new(env!("CARGO_BIN_EXE_dromos"))
            .args(["serve", "--listen", "127.0.0.1:0", "--no-agent", "--data-dir", data.to_str().expect("utf-8")])
            .env("DROMOS_LOG", "error")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start dromos");
        let mut line = String::new();
        BufReader::new(c.stdout.take().expect("stdout")).read_line(&mut line).expect("first line");
        let url = line.trim().trim_start_matches("dromos listening on ").to_string();
        let found = http("GET", &format!("{url}/scheduler/jobs/search?name=job-042424"), None);
        best_start = best_start.min(t.elapsed().as_secs_f64());
        assert_eq!(found.as_array().map(Vec::len), Some(1), "{found}");
        for _ in 0..5 {
            let t = Instant::now();
            let found = http("GET", &format!("{url}/scheduler/jobs/search?name=x"), None);
            best_search = best_search.min(t.elapsed().as_secs_f64());
            assert_eq!(found.as_array().map(Vec::len), Some(0));
            let t = Instant::now();
            let found = http("GET", &format!("{url}/scheduler/jobs/search?command=shard&limit=100"), None);
            best_list = best_list.min(t.elapsed().as_secs_f64());
            assert_eq!(found.as_array().map(Vec::len), Some(100));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
    println!(
        "jobs: {JOBS} jobs stored, dromos start to first search answered in {best_start:.2} s (best of 3); \
         search?name=x {:.1} ms, search?command=shard&limit=100 {:.1} ms (best of 15)",
        best_search * 1e3,
        best_list * 1e3
    );
}

/// Job runs through the master with simulated agents: 10,000 jobs due two per
/// millisecond (2,000 a second for 5 s), each run answered at once with TASK_RUNNING and
/// then TASK_FINISHED. Reports runs started per second and how late each started after its
/// due time.
fn bench_job_runs(rt: &tokio::runtime::Runtime) {
    use dromos::domain::job::JobRecord;
    use dromos::master::jobs;
    const JOBS: i64 = 10_000;
    let dir = tempfile::tempdir().expect("tempdir");
    rt.block_on(async {
        let master = simulated_cluster(dir.path(), 100, 100.0).await;
        let now = dromos::master::now();
        // The first due time 2 s from now, then two every millisecond.
        let first = now.millis() + 2_000;
        for chunk in 0..(JOBS / 1000) {
            let specs: Vec<_> = (chunk * 1000..(chunk + 1) * 1000)
                .map(|i| {
                    let due = Timestamp::from_millis(first + i / 2);
                    let body = json!({"name": format!("run-{i:05}"), "command": "true", "cpus": 0.01, "mem": 1,
                                      "schedule": format!("R1/{due}/PT1H"), "concurrent": true});
                    dromos::api::dto::job::parse_job(body, now).expect("valid job").spec
                })
                .collect();
            master
                .write(move |state, now| {
                    let mut changes = Vec::new();
                    for spec in specs {
                        let (c, ()) = jobs::put_job(state, now, spec, Default::default())?;
                        changes.extend(c);
                    }
                    Ok((changes, ()))
                })
                .await
                .expect("store jobs");
        }
        master.wake();
        let t = Instant::now();
        loop {
            let st = master.read().await;
            let done = st.jobs.values().filter(|j: &&JobRecord| j.status.success_count == 1).count();
            if done == JOBS as usize {
                break;
            }
            drop(st);
            assert!(t.elapsed() < Duration::from_secs(120), "only {done} runs done after 120 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let st = master.read().await;
        let mut late: Vec<i64> = st
            .runs
            .values()
            .flat_map(|r| r.values())
            .filter_map(|r| Some(r.started_at?.millis() - r.due.millis()))
            .collect();
        late.sort_unstable();
        let starts: Vec<i64> =
            st.runs.values().flat_map(|r| r.values()).filter_map(|r| r.started_at.map(|s| s.millis())).collect();
        let span = (starts.iter().max().copied().unwrap_or(0) - starts.iter().min().copied().unwrap_or(0)).max(1);
        let pct = |p: f64| late[((late.len() as f64 * p).ceil() as usize).clamp(1, late.len()) - 1];
        println!(
            "job runs: {} runs due two per ms on 100 simulated agents, started at {:.0} runs/s; \
             start after due: median {} ms, p99 {} ms, max {} ms",
            late.len(),
            late.len() as f64 * 1000.0 / span as f64,
            pct(0.5),
            pct(0.99),
            late.last().copied().unwrap_or(0)
        );
    });
}

fn bench_agent_loss() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spawn = |args: &[&str]| spawn_dromos(args, "error");
    let data = dir.path().join("m");
    let (mut master, line) = spawn(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--no-agent",
        "--agent-ping-interval",
        "1s",
        "--agent-ping-timeouts",
        "5",
        "--data-dir",
        data.to_str().expect("utf-8 path"),
    ]);
    let url = line.trim_start_matches("dromos listening on ").to_string();
    let mut agents = Vec::new();
    for (i, ports) in ["33000-33099", "33100-33199"].iter().enumerate() {
        let wd = dir.path().join(format!("a{i}"));
        let res = format!("cpus:4;mem:4096;ports:[{ports}]");
        let host = format!("127.0.0.{}", i + 1);
        let (c, _) = spawn(&[
            "agent",
            "--master",
            &url,
            "--work-dir",
            wd.to_str().expect("utf-8 path"),
            "--hostname",
            &host,
            "--resources",
            &res,
        ]);
        agents.push((c, wd));
    }
    let app = json!({"id": "/bench/loss", "cmd": "exec sleep 3600", "instances": 20, "cpus": 0.1, "mem": 16});
    http("POST", &format!("{url}/v2/apps"), Some(app));
    let tasks = || http("GET", &format!("{url}/v2/apps/bench/loss/tasks"), None)["tasks"].as_array().cloned();
    let running_on = |host: &str| {
        tasks().unwrap_or_default().iter().filter(|t| t["state"] == "TASK_RUNNING" && t["host"] == host).count()
    };
    while running_on("127.0.0.1") + running_on("127.0.0.2") < 20 {
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: a plain signal to a process this bench started.
    unsafe { libc::kill(agents[0].0.id() as i32, libc::SIGSTOP) };
    let t = Instant::now();
    while running_on("127.0.0.2") < 20 {
        assert!(t.elapsed() < Duration::from_secs(60), "tasks were not replaced");
        std::thread::sleep(Duration::from_millis(20));
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "agent loss: 10 tasks of a frozen agent running elsewhere {secs:.2} s after the freeze (ping budget 5.00 s)"
    );
    for (c, wd) in &mut agents {
        // SAFETY: as above.
        unsafe { libc::kill(c.id() as i32, libc::SIGCONT) };
        let _ = c.kill();
        let _ = c.wait();
        // Tasks outlive agents by design: stop the bench's own.
        let _ = Command::new("pkill").arg("-9").arg("-f").arg(format!("supervise --sandbox {}", wd.display())).status();
    }
    let _ = Command::new("pkill").arg("-9").arg("-f").arg("sleep 3600").status();
    let _ = master.kill();
    let _ = master.wait();
}

/// The HAProxy generator: 10,000 apps (a third with vhosts, all with an HTTP health
/// check) and 100,000 healthy tasks on 1,000 hosts, from the model to config text.
fn bench_haproxy_render() {
    use dromos::proxy::labels::Selection;
    use dromos::proxy::model::{LbApp, LbHealthCheck, LbTask};
    use dromos::proxy::render::{render, Settings};
    let apps: Vec<LbApp> = (0..10_000)
        .map(|i| {
            let mut labels = std::collections::BTreeMap::from([("HAPROXY_GROUP".to_string(), "external".to_string())]);
            if i % 3 == 0 {
                labels.insert("HAPROXY_0_VHOST".into(), format!("app{i}.example.com"));
            }
            LbApp {
                id: format!("/team{}/app{i}", i % 50),
                labels,
                service_ports: vec![10_000 + i as u16],
                health_checks: vec![LbHealthCheck {
                    protocol: "HTTP".into(),
                    path: Some("/health".into()),
                    port_index: Some(0),
                    port: None,
                    interval_seconds: 5,
                    timeout_seconds: 2,
                    max_consecutive_failures: 3,
                }],
                tasks: (0..10)
                    .map(|k| {
                        let h = (i * 10 + k) % 1000;
                        LbTask {
                            host: format!("node{h}"),
                            ip: std::net::Ipv4Addr::new(10, 1, (h / 250) as u8, (h % 250) as u8 + 1),
                            ports: vec![31_000 + (i % 1000) as u16],
                        }
                    })
                    .collect(),
            }
        })
        .collect();
    let settings =
        Settings { selection: Selection { groups: vec!["external".into()], strict: false }, ..Default::default() };
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let out = render(&apps, &settings);
        times.push(t.elapsed().as_secs_f64());
        bytes = out.text.len();
        assert!(out.rejected.is_empty());
    }
    times.sort_by(f64::total_cmp);
    println!(
        "haproxy render: 10000 apps / 100000 tasks in {:.1} ms (best of 5; median {:.1} ms, worst {:.1} ms), {:.1} MB of config",
        times[0] * 1e3,
        times[2] * 1e3,
        times[4] * 1e3,
        bytes as f64 / 1e6
    );
}

/// Starts a release `dromos <args>` logging at `log`, and returns it with the first
/// line it printed (its address, or an agent's id).
fn spawn_dromos(args: &[&str], log: &str) -> (std::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dromos"))
        .args(args)
        .env("DROMOS_LOG", log)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start dromos");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("first line");
    (child, line.trim().to_string())
}

/// Starts `dromos <args> --data-dir <dir>` and returns it with its URL.
fn start_dromos(args: &[&str], dir: &std::path::Path) -> (std::process::Child, String) {
    let dir = dir.to_string_lossy();
    let args: Vec<&str> = args.iter().copied().chain(["--data-dir", &dir]).collect();
    let (child, line) = spawn_dromos(&args, "warn");
    (child, line.trim_start_matches("dromos listening on ").to_string())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// One command on an HAProxy CLI socket.
fn haproxy_cli(socket: &std::path::Path, cmd: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(socket) else { return String::new() };
    let _ = s.write_all(format!("{cmd}\n").as_bytes());
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// Ports of the servers HAProxy routes to in `backend` (not in maintenance).
fn haproxy_ports(socket: &std::path::Path, backend: &str) -> Vec<u64> {
    haproxy_cli(socket, &format!("show servers state {backend}"))
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            (c.len() > 18 && c[6] == "0").then(|| c[18].parse().ok()).flatten()
        })
        .collect()
}

fn metric(url: &str, name: &str) -> f64 {
    let text = ureq::get(url).call().ok().and_then(|r| r.into_string().ok()).unwrap_or_default();
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(f64::NAN)
}

/// A blocking `/v2/events` reader on its own thread: (event type, data) as they come.
fn subscribe(url: &str, path: &str) -> std::sync::mpsc::Receiver<(String, serde_json::Value)> {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://").to_string();
    let mut s = std::net::TcpStream::connect(&addr).expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n").as_bytes())
        .expect("request");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut parser = dromos::events::sse::Parser::new();
        let mut buf = vec![0u8; 64 * 1024];
        // The body is chunked; chunk-size lines are not SSE fields and parse as nothing.
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                return;
            }
            for e in parser.feed(&buf[..n]) {
                let v = serde_json::from_str(&e.data).unwrap_or(serde_json::Value::Null);
                if tx.send((e.event, v)).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A task's change reaching HAProxy through the sidecar: from the status event (which
/// the bench and the sidecar get at the same moment) until HAProxy's runtime API lists
/// the server (scale-up) or no longer routes to it (scale-down).
fn bench_haproxy_runtime() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut dromos, url) = start_dromos(
        &["serve", "--listen", "127.0.0.1:0", "--agent-cpus", "64", "--agent-mem", "100000", "--hostname", "127.0.0.1"],
        &dir.path().join("dromos"),
    );
    let app = json!({"id": "/bench/lb", "cmd": "sleep 3600", "instances": 1, "cpus": 0.01, "mem": 1,
        "portDefinitions": [{"port": 0}], "labels": {"HAPROXY_GROUP": "external", "HAPROXY_0_BIND_ADDR": "127.0.0.1"}});
    http("POST", &format!("{url}/v2/apps"), Some(app));
    let deployments_done = || {
        let t = Instant::now();
        while http("GET", &format!("{url}/v2/deployments"), None).as_array().is_some_and(|d| !d.is_empty()) {
            assert!(t.elapsed() < Duration::from_secs(60), "a deployment did not finish");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    deployments_done();
    let service_port = http("GET", &format!("{url}/v2/apps/bench/lb"), None)["app"]["portDefinitions"][0]["port"]
        .as_u64()
        .expect("a service port");
    let backend = format!("bench_lb_{service_port}");
    let lb = dir.path().join("lb");
    std::fs::create_dir_all(&lb).expect("lb dir");
    let metrics = format!("127.0.0.1:{}", free_port());
    let socket = lb.join("admin.sock");
    let mut sidecar = Command::new(env!("CARGO_BIN_EXE_dromos"))
        .args(["haproxy", "--master", &url, "--listen", &metrics, "--http-port", "0"])
        .args(["--stats-bind", &format!("127.0.0.1:{}", free_port())])
        .arg("--config")
        .arg(lb.join("haproxy.cfg"))
        .arg("--socket")
        .arg(&socket)
        .arg("--master-socket")
        .arg(lb.join("master.sock"))
        .arg("--state-file")
        .arg(lb.join("state"))
        .env("DROMOS_LOG", "warn")
        .spawn()
        .expect("start dromos haproxy");
    let metrics = format!("http://{metrics}/metrics");
    let t = Instant::now();
    while haproxy_ports(&socket, &backend).len() != 1 {
        assert!(t.elapsed() < Duration::from_secs(30), "HAProxy did not come up with the first task");
        std::thread::sleep(Duration::from_millis(10));
    }
    // HAProxy's own count of reloads (the master's `show proc`).
    let master_socket = lb.join("master.sock");
    // (The master CLI now and then closes a connection without answering: ask again.)
    let haproxy_reloads = || -> u64 {
        for _ in 0..100 {
            let proc = haproxy_cli(&master_socket, "show proc");
            let line = proc.lines().find(|l| l.contains(" master ")).map(str::to_string);
            if let Some(n) = line.and_then(|l| l.split_whitespace().nth(2)?.parse().ok()) {
                return n;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("HAProxy's master CLI does not answer 'show proc'");
    };
    let reloads_before = haproxy_reloads();
    let events = subscribe(&url, "/v2/events?event_type=status_update_event");
    let (mut up, mut down) = (Vec::new(), Vec::new());
    let rounds = 100;
    for i in 0..rounds {
        for (instances, wanted, out) in [(2, "TASK_RUNNING", &mut up), (1, "TASK_KILLED", &mut down)] {
            http("PUT", &format!("{url}/v2/apps/bench/lb"), Some(json!({"instances": instances})));
            let (seen, port) = loop {
                let (_, v) = events.recv_timeout(Duration::from_secs(30)).expect("a status event");
                if v["taskStatus"] == wanted || (wanted == "TASK_KILLED" && v["taskStatus"] == "TASK_KILLING") {
                    break (Instant::now(), v["ports"][0].as_u64().expect("a port"));
                }
            };
            loop {
                let ports = haproxy_ports(&socket, &backend);
                if ports.contains(&port) == (instances == 2) {
                    break;
                }
                assert!(seen.elapsed() < Duration::from_secs(30), "round {i}: HAProxy did not follow");
                std::thread::sleep(Duration::from_micros(500));
            }
            out.push(seen.elapsed().as_secs_f64() * 1e3);
            deployments_done();
        }
    }
    let reloads = haproxy_reloads() - reloads_before;
    let ops = metric(&metrics, "dromos_lb_runtime_ops_total{op=\"add\"}")
        + metric(&metrics, "dromos_lb_runtime_ops_total{op=\"ready\"}")
        + metric(&metrics, "dromos_lb_runtime_ops_total{op=\"park\"}");
    for (what, v) in [("added", &mut up), ("taken out", &mut down)] {
        v.sort_by(f64::total_cmp);
        println!(
            "haproxy runtime: server {what} {rounds} times: event to HAProxy p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            percentile(v, 0.5),
            percentile(v, 0.99),
            v[v.len() - 1]
        );
    }
    println!(
        "haproxy runtime: {reloads} HAProxy reloads during those {} changes ({ops} runtime API operations)",
        2 * rounds
    );
    // SAFETY: SIGTERM to our own child: the sidecar stops its HAProxy.
    unsafe { libc::kill(sidecar.id() as i32, libc::SIGTERM) };
    let _ = sidecar.wait();
    http("DELETE", &format!("{url}/v2/apps/bench/lb"), None);
    deployments_done();
    let _ = dromos.kill();
    let _ = dromos.wait();
}

/// The event bus under load: many subscribers held open, and many deliveries per second.
fn bench_sse(rt: &tokio::runtime::Runtime) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    dromos::server::raise_fd_limit();
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut dromos, url) = start_dromos(&["serve", "--listen", "127.0.0.1:0", "--no-agent"], dir.path());
    let addr = url.trim_start_matches("http://").to_string();

    // API latency: GET /v2/info, one client, keep-alive.
    let api_latency = || {
        let agent = ureq::AgentBuilder::new().build();
        let mut v: Vec<f64> = (0..2000)
            .map(|_| {
                let t = Instant::now();
                agent.get(&format!("{url}/v2/apps")).call().expect("GET /v2/apps");
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        v.sort_by(f64::total_cmp);
        (percentile(&v, 0.5), percentile(&v, 0.99))
    };
    let (idle50, idle99) = api_latency();

    // Subscribers: each a connection whose frames are counted; an event's lag is the
    // time from its `timestamp` (set when it was published) to its arrival.
    let delivered = Arc::new(AtomicU64::new(0));
    let lags = Arc::new(std::sync::Mutex::new(Vec::<f64>::new()));
    let open = |n: usize, record: bool| -> Vec<tokio::task::JoinHandle<()>> {
        rt.block_on(async {
            let mut handles = Vec::new();
            for _ in 0..n {
                let mut s = tokio::net::TcpStream::connect(&addr).await.expect("connect");
                let req = format!(
                    "GET /v2/events?event_type=load_balancer_rejected_app_event HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
                );
                s.write_all(req.as_bytes()).await.expect("request");
                let (delivered, lags) = (delivered.clone(), lags.clone());
                handles.push(tokio::spawn(async move {
                    // A lean reader (the client shares the machine with dromos): whole
                    // `data:` lines, each one event; its timestamp opens the JSON.
                    let mut buf = vec![0u8; 16 * 1024];
                    let mut pending: Vec<u8> = Vec::new();
                    let mut mine = Vec::new();
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        let now = chrono::Utc::now();
                        pending.extend_from_slice(&buf[..n]);
                        let mut at = 0;
                        while let Some(i) = pending[at..].iter().position(|b| *b == b'\n') {
                            let line = &pending[at..at + i];
                            at += i + 1;
                            let Some(data) = line.strip_prefix(b"data: {\"timestamp\":\"") else { continue };
                            delivered.fetch_add(1, Ordering::Relaxed);
                            if record {
                                let ts = std::str::from_utf8(&data[..data.len().min(24)]).ok();
                                if let Some(ts) = ts.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()) {
                                    let lag = now - ts.with_timezone(&chrono::Utc);
                                    mine.push(lag.num_microseconds().unwrap_or(0) as f64 / 1e3);
                                }
                            }
                        }
                        pending.drain(..at);
                        if !mine.is_empty() {
                            lags.lock().expect("lags").append(&mut mine);
                        }
                    }
                }));
            }
            handles
        })
    };
    let rss0 = rss_mib(dromos.id());
    let held = open(10_000, false);
    std::thread::sleep(Duration::from_secs(2));
    let rss1 = rss_mib(dromos.id());
    println!(
        "sse: 10000 subscribers held open: dromos RSS {rss0:.1} -> {rss1:.1} MiB ({:.1} MiB extra, {:.1} KiB each)",
        rss1 - rss0,
        (rss1 - rss0) * 1024.0 / 10_000.0
    );
    for h in held {
        h.abort();
    }
    std::thread::sleep(Duration::from_secs(2));

    // 1,000 subscribers, 200 events/s for 10 s (published by a client through the API).
    let subs = open(1000, true);
    std::thread::sleep(Duration::from_millis(500));
    delivered.store(0, Ordering::Relaxed);
    let publisher = {
        let url = url.clone();
        std::thread::spawn(move || {
            let agent = ureq::AgentBuilder::new().build();
            let body = json!({"eventType": "load_balancer_rejected_app_event", "loadBalancer": "bench",
                "appId": "/bench/app", "label": "HAPROXY_0_VHOST", "message": "a report of about a hundred bytes to give the event a realistic size"});
            let start = Instant::now();
            for i in 0..2000u32 {
                let due = start + Duration::from_millis(5) * i;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                agent.post(&format!("{url}/v2/events")).send_json(&body).expect("POST /v2/events");
            }
            start.elapsed()
        })
    };
    let (busy50, busy99) = api_latency();
    let took = publisher.join().expect("publisher");
    std::thread::sleep(Duration::from_secs(1));
    let n = delivered.load(Ordering::Relaxed);
    for h in subs {
        h.abort();
    }
    std::thread::sleep(Duration::from_millis(200));
    let mut lags = lags.lock().expect("lags").clone();
    lags.sort_by(f64::total_cmp);
    println!(
        "sse: 1000 subscribers x 2000 events in {:.1} s: {n} deliveries ({:.0}/s), lag p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        percentile(&lags, 0.5),
        percentile(&lags, 0.99),
        lags[lags.len() - 1]
    );
    println!(
        "sse: GET /v2/apps latency: idle p50 {idle50:.2} ms, p99 {idle99:.2} ms; during the 200 events/s to 1000 subscribers p50 {busy50:.2} ms, p99 {busy99:.2} ms"
    );
    let _ = dromos.kill();
    let _ = dromos.wait();
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument selects one benchmark.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let on = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    if on("placement") {
        bench_placement();
    }
    if on("constraints") {
        bench_constraints();
    }
    if on("health") {
        bench_health(&rt);
    }
    if on("persistence") {
        bench_persistence(&rt);
    }
    if on("agent") {
        bench_local_agent(true);
        bench_local_agent(false);
    }
    if on("drf") {
        bench_drf();
    }
    if on("cluster") {
        bench_cluster(&rt);
    }
    if on("rolling") {
        bench_rolling(&rt);
    }
    if on("jobs") {
        bench_jobs_start(&rt);
        bench_job_runs(&rt);
    }
    if on("loss") {
        bench_agent_loss();
    }
    if on("haproxy-render") {
        bench_haproxy_render();
    }
    if on("haproxy-runtime") {
        bench_haproxy_runtime();
    }
    if on("sse") {
        bench_sse(&rt);
    }
    if on("web") {
        bench_web(&rt);
    }
    if on("failover") {
        bench_failover(&rt);
    }
}

#[path = "../tests/it/support/etcd.rs"]
#[allow(dead_code)]
mod etcd;
#[path = "../tests/it/support/postgres.rs"]
#[allow(dead_code)]
mod postgres;

/// Waits until `f` returns something (the harness modules above use it).
fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A simulated agent: the real agent link (WebSocket, following the leader, fencing by
/// epoch) in front of a runtime that only keeps a list of tasks: launches run at once,
/// kills end them, and every (re)connect registers them all.
async fn sim_agent(i: usize, masters: Vec<String>) {
    use dromos::agent::link::{self, LinkConfig};
    use dromos::agent::protocol::{FromAgent, TaskStatus, ToAgent, PROTOCOL_VERSION};
    let id = AgentId(format!("sim-{i:05}"));
    let info = AgentInfo {
        id: id.clone(),
        hostname: format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256),
        resources: AgentResources::unreserved(
            Resources::new(16.0, 65536.0, 100_000.0, 0.0),
            vec![PortRange::new(31000, 32000)],
        ),
        attributes: Default::default(),
        containerizers: vec![Containerizer::Process],
    };
    let (out, out_rx) = tokio::sync::mpsc::unbounded_channel();
    let (commands, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(link::run(LinkConfig { masters, token: None, epoch_file: None }, id.clone(), out_rx, commands));
    let mut tasks: std::collections::BTreeMap<TaskId, TaskState> = Default::default();
    let status =
        |task_id: TaskId, state| TaskStatus { task_id, state, message: None, timestamp: Timestamp::from_millis(0) };
    while let Some(cmd) = rx.recv().await {
        let msg = match cmd {
            ToAgent::Reconcile => FromAgent::Register {
                protocol: PROTOCOL_VERSION,
                info: info.clone(),
                tasks: tasks.iter().map(|(t, s)| status(t.clone(), *s)).collect(),
                replaces: vec![],
            },
            ToAgent::Ping => FromAgent::Pong,
            ToAgent::Launch(l) => {
                tasks.insert(l.task_id.clone(), TaskState::Running);
                FromAgent::Status(status(l.task_id, TaskState::Running))
            }
            ToAgent::Kill { task_id } => {
                tasks.remove(&task_id);
                FromAgent::Status(status(task_id, TaskState::Killed))
            }
            _ => continue,
        };
        if out.send((id.clone(), msg)).is_err() {
            return;
        }
    }
}

/// The master named by `GET /v2/leader` (answered by the leader, also through a follower).
fn leader_of(urls: &[String]) -> Option<usize> {
    let r = ureq::get(&format!("{}/v2/leader", urls[0])).timeout(Duration::from_secs(5)).call().ok()?;
    let v: serde_json::Value = r.into_json().ok()?;
    let leader = format!("http://{}", v["leader"].as_str()?);
    urls.iter().position(|u| *u == leader)
}

/// One write (an app with no instances); its latency in ms, or None when refused.
fn timed_write(agent: &ureq::Agent, url: &str, id: &str) -> Option<f64> {
    let t = Instant::now();
    let body = json!({"id": id, "cmd": "sleep 1", "instances": 0});
    let r = agent.post(&format!("{url}/v2/apps")).timeout(Duration::from_secs(10)).send_json(body);
    r.ok().filter(|r| r.status() == 201).map(|_| t.elapsed().as_secs_f64() * 1e3)
}

fn bench_failover(rt: &tokio::runtime::Runtime) {
    const AGENTS: usize = 10_000;
    const APPS: usize = 10;
    const PER_APP: usize = 10_000;
    dromos::server::raise_fd_limit();
    let dir = tempfile::tempdir().expect("tempdir");
    let pg = postgres::Postgres::start();
    let etcd = etcd::Etcd::start(1);
    let endpoints = etcd.endpoints();
    // The masters log when they lead, loaded the state, and took writes again (the
    // parts of a failover).
    const LOG: &str = "warn,dromos::server=info,dromos::master::leadership=info,dromos::master::agents=info,\
                       dromos::api::forward=error";
    let start = |i: usize| {
        let d = dir.path().join(format!("m{i}")).to_string_lossy().to_string();
        let args = [
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-agent",
            "--store",
            &pg.url,
            "--etcd",
            &endpoints,
            "--data-dir",
            &d,
        ];
        let (child, line) = spawn_dromos(&args, LOG);
        (child, line.trim_start_matches("dromos listening on ").to_string())
    };
    let (mut masters, mut urls): (Vec<std::process::Child>, Vec<String>) = (0..2).map(start).unzip();
    for i in 0..AGENTS {
        rt.spawn(sim_agent(i, urls.clone()));
    }
    let t = Instant::now();
    wait_for("every agent registered", Duration::from_secs(600), || {
        let v = ureq::get(&format!("{}/v1/agents", urls[0])).call().ok()?.into_json::<serde_json::Value>().ok()?;
        (v["agents"].as_array()?.len() == AGENTS).then_some(())
    });
    println!("ha: {AGENTS} simulated agents registered in {:.1} s", t.elapsed().as_secs_f64());
    let leader = wait_for("a leader", Duration::from_secs(60), || leader_of(&urls));
    // Writes through the follower against writes to the leader, interleaved.
    let agent = ureq::AgentBuilder::new().build();
    let overhead = |leader: usize, when: &str, tag: &str, writes: usize| {
        let (mut direct, mut forwarded) = (Vec::new(), Vec::new());
        for n in 0..writes {
            direct.extend(timed_write(&agent, &urls[leader], &format!("/ha/w{tag}/d{n}")));
            forwarded.extend(timed_write(&agent, &urls[1 - leader], &format!("/ha/w{tag}/f{n}")));
        }
        direct.sort_by(f64::total_cmp);
        forwarded.sort_by(f64::total_cmp);
        println!(
            "ha: app create {when}: on the leader p50 {:.2} ms, p99 {:.2} ms; through a follower p50 {:.2} ms, \
             p99 {:.2} ms (adds {:.2} ms at p50, {:.2} ms at p99)",
            percentile(&direct, 0.5),
            percentile(&direct, 0.99),
            percentile(&forwarded, 0.5),
            percentile(&forwarded, 0.99),
            percentile(&forwarded, 0.5) - percentile(&direct, 0.5),
            percentile(&forwarded, 0.99) - percentile(&direct, 0.99)
        );
    };
    // p99 of 500 samples is the 5th largest, which a scheduler pass decides: more here.
    overhead(leader, &format!("with {AGENTS} agents and no tasks"), "a", 2000);
    let t = Instant::now();
    for a in 0..APPS {
        let body =
            json!({"id": format!("/ha/app-{a}"), "cmd": "sleep 3600", "instances": PER_APP, "cpus": 0.01, "mem": 1});
        http("POST", &format!("{}/v2/apps", urls[leader]), Some(body));
    }
    wait_for("every task running", Duration::from_secs(900), || {
        let v = ureq::get(&format!("{}/v2/apps", urls[leader])).call().ok()?.into_json::<serde_json::Value>().ok()?;
        let running: u64 = v["apps"].as_array()?.iter().filter_map(|a| a["tasksRunning"].as_u64()).sum();
        (running == (APPS * PER_APP) as u64).then_some(())
    });
    println!("ha: {} tasks running in {:.1} s", APPS * PER_APP, t.elapsed().as_secs_f64());
    overhead(leader, &format!("with {} tasks", APPS * PER_APP), "b", 500);

    // Failover, three times: kill -9 the leader, write through the other until taken.
    let mut leader = leader;
    for round in 0..3 {
        let other = 1 - leader;
        let _ = masters[leader].kill();
        let killed = Instant::now();
        println!("ha: round {} killed the leader at {}", round + 1, chrono::Utc::now().format("%H:%M:%S%.3f"));
        let _ = masters[leader].wait();
        wait_for("a write taken by the new leader", Duration::from_secs(120), || {
            timed_write(&agent, &urls[other], &format!("/ha/failover-{round}"))
        });
        println!(
            "ha: failover {}: leader killed -> a write taken by the new one in {:.2} s ({} agents, {} tasks)",
            round + 1,
            killed.elapsed().as_secs_f64(),
            AGENTS,
            APPS * PER_APP
        );
        // The killed master comes back as a follower on its old address.
        let addr = urls[leader].trim_start_matches("http://").to_string();
        let d = dir.path().join(format!("m{leader}")).to_string_lossy().to_string();
        let args =
            ["serve", "--listen", &addr, "--no-agent", "--store", &pg.url, "--etcd", &endpoints, "--data-dir", &d];
        let (child, line) = spawn_dromos(&args, LOG);
        (masters[leader], urls[leader]) = (child, line.trim_start_matches("dromos listening on ").to_string());
        wait_for("the old leader back as a follower", Duration::from_secs(60), || {
            timed_write(&agent, &urls[leader], &format!("/ha/back-{round}"))
        });
        leader = other;
    }
    for mut m in masters {
        let _ = m.kill();
        let _ = m.wait();
    }
}

#[path = "../tests/it/support/browser.rs"]
#[allow(dead_code)]
mod browser;

/// The web UI under the load the issue names: 10,000 apps of 10 instances (100,000
/// tasks on 1,000 simulated agents) and 10,000 jobs, the pages served by the API's
/// router in this process. Each page is fetched 50 times: p50, p99 and its size.
/// Then Chromium opens an app page and a task of that app is killed 20 times: the time
/// from the kill to the page's live region changing (event, SSE, fetch, swap).
fn bench_web(rt: &tokio::runtime::Runtime) {
    use dromos::master::{jobs as job_plans, plans};
    const AGENTS: usize = 1_000;
    const APPS: usize = 10_000;
    const JOBS: usize = 10_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let (master, url) = rt.block_on(async {
        let master = simulated_cluster(dir.path(), AGENTS, 16.0).await;
        let t = Instant::now();
        for chunk in (0..APPS).collect::<Vec<_>>().chunks(200) {
            let writes: Vec<_> = chunk
                .iter()
                .map(|i| {
                    let body = json!({"id": format!("/bench/team-{:02}/app-{i:05}", i % 50), "cmd": "sleep 3600",
                                      "instances": 10, "cpus": 0.01, "mem": 1,
                                      "labels": {"HAPROXY_GROUP": "external", "owner": format!("team-{}", i % 50)}});
                    let spec = dromos::api::dto::app::parse_app(body, None).expect("valid app");
                    let m = master.clone();
                    tokio::spawn(async move { m.write(move |state, now| plans::create_app(state, now, spec)).await })
                })
                .collect();
            for w in writes {
                w.await.expect("join").expect("create app");
            }
            master.wake();
        }
        let now = dromos::master::now();
        for i in 0..JOBS {
            let body = match i % 3 {
                0 => json!({"name": format!("job-{i:05}"), "command": format!("report --part {i}"),
                            "schedule": "R/2030-01-01T02:00:00Z/P1D", "scheduleTimeZone": "Europe/Berlin"}),
                1 => json!({"name": format!("job-{i:05}"), "command": format!("backup --shard {i}"),
                            "cron": "30 2 * * 1-5", "scheduleTimeZone": "America/New_York"}),
                _ => json!({"name": format!("job-{i:05}"), "command": "notify",
                            "parents": [format!("job-{:05}", i - 1), format!("job-{:05}", i - 2)]}),
            };
            let parsed = dromos::api::dto::job::parse_job(body, now).expect("valid job");
            master
                .write(move |state, now| job_plans::put_job(state, now, parsed.spec, parsed.status))
                .await
                .expect("put job");
        }
        loop {
            let running = master.read().await.tasks.values().filter(|t| t.state == TaskState::Running).count();
            if running == APPS * 10 && master.read().await.deployments.is_empty() {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(900), "only {running} running");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!("web: {APPS} apps, {} tasks, {JOBS} jobs stored in {:.1} s", APPS * 10, t.elapsed().as_secs_f64());
        let state = dromos::api::AppState {
            master: master.clone(),
            token: None,
            leader: std::sync::Arc::from("127.0.0.1"),
            leadership: dromos::master::leadership::Leadership::single("http://127.0.0.1"),
            store_backend: "sqlite",
            sessions: std::sync::Arc::new(dromos::web::session::Sessions::new(None)),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let app = dromos::api::router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
            let _ = axum::serve(listener, app).await;
        });
        (master, url)
    });
    let (app, task) = rt.block_on(async {
        let state = master.read().await;
        let t = state.tasks.values().find(|t| t.app_id.to_string() == "/bench/team-07/app-00007").expect("a task");
        (t.app_id.to_string(), t.id.to_string())
    });
    let pages = [
        "/".to_string(),
        "/apps".to_string(),
        "/apps?q=team-07&status=running".to_string(),
        "/apps?page=99".to_string(),
        format!("/apps{app}"),
        format!("/apps{app}/-/edit"),
        format!("/apps{app}/-/diff"),
        "/apps/-/new".to_string(),
        "/deployments".to_string(),
        "/agents".to_string(),
        "/agents?page=9".to_string(),
        "/jobs".to_string(),
        "/jobs?q=job-099".to_string(),
        "/jobs/job-04242".to_string(),
        "/jobs/job-04242/edit".to_string(),
        "/events".to_string(),
    ];
    let agent = ureq::AgentBuilder::new().build();
    let mut worst = (0.0f64, 0usize);
    for page in &pages {
        let mut times = Vec::new();
        let mut size = 0;
        for _ in 0..50 {
            let t = Instant::now();
            let r = agent.get(&format!("{url}{page}")).call().unwrap_or_else(|e| panic!("GET {page}: {e}"));
            let body = r.into_string().expect("body");
            times.push(t.elapsed().as_secs_f64() * 1e3);
            size = body.len();
        }
        times.sort_by(f64::total_cmp);
        let (p50, p99) = (percentile(&times, 0.5), percentile(&times, 0.99));
        worst = (worst.0.max(p99), worst.1.max(size));
        println!("web: GET {page:<40} p50 {p50:6.1} ms, p99 {p99:6.1} ms, {:6.1} KB", size as f64 / 1024.0);
    }
    // Every read waits while the master's writer holds the state lock (a batch's plan
    // and commit, and the periodic pass over every app): one cheap read every 10 ms for
    // 5 s shows how long those waits are.
    let mut waits = Vec::new();
    for _ in 0..500 {
        let t = Instant::now();
        agent.get(&format!("{url}/v2/apps{app}")).call().expect("app").into_string().expect("body");
        waits.push(t.elapsed().as_secs_f64() * 1e3);
        std::thread::sleep(Duration::from_millis(10));
    }
    waits.sort_by(f64::total_cmp);
    println!(
        "web: GET /v2/apps{app} every 10 ms for 5 s (the state lock's waits): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&waits, 0.5),
        percentile(&waits, 0.99),
        waits.last().copied().unwrap_or(0.0)
    );
    let js = agent.get(&format!("{url}/static/dromos.js")).call().expect("script").into_string().expect("js");
    let css = agent.get(&format!("{url}/static/dromos.css")).call().expect("style").into_string().expect("css");
    println!(
        "web: slowest page p99 {:.1} ms, largest page {:.1} KB; script {:.1} KB, stylesheet {:.1} KB (uncompressed)",
        worst.0,
        worst.1 as f64 / 1024.0,
        js.len() as f64 / 1024.0,
        css.len() as f64 / 1024.0
    );

    // Live updates in a real browser: kill one of the app's tasks, wait for the page's
    // live regions to be replaced. Timed from the kill, and from the moment the task's
    // status event reached a subscriber of the bus (this bench's own).
    let b = browser::Browser::start();
    b.goto(&format!("{url}/apps{app}"));
    b.find("#summary");
    let events = subscribe(&url, "/v2/events?event_type=status_update_event");
    let wall = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as f64;
    let (mut lags, mut after_event) = (Vec::new(), Vec::new());
    let app_id = dromos::domain::PathId::parse_app(&app).expect("app id");
    for round in 0..20 {
        std::thread::sleep(Duration::from_millis(300));
        while events.try_recv().is_ok() {}
        b.execute(
            "window.swapped = null; new MutationObserver((m, o) => { if (!window.swapped) { \
             window.swapped = Date.now(); o.disconnect(); } }).observe(document.querySelector('main'), \
             {childList: true, subtree: true});",
            vec![],
        );
        let victim: TaskId = if round == 0 {
            task.parse().expect("task id")
        } else {
            rt.block_on(async {
                master
                    .read()
                    .await
                    .tasks_of(&app_id)
                    .find(|t| t.state == TaskState::Running)
                    .expect("running")
                    .id
                    .clone()
            })
        };
        let start = wall();
        rt.block_on(async {
            master
                .write(move |state, now| plans::kill_tasks(state, now, &[victim], false, true, true))
                .await
                .map(|_| ())
        })
        .expect("kill");
        master.wake();
        let event_at = loop {
            let (_, e) = events.recv_timeout(Duration::from_secs(10)).expect("a status event within 10 s");
            if e["appId"] == app.as_str() {
                break wall();
            }
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let at = b.execute("return window.swapped", vec![]);
            if let Some(at) = at.as_f64() {
                lags.push(at - start);
                after_event.push(at - event_at);
                break;
            }
            assert!(Instant::now() < deadline, "the page did not change within 10 s");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    after_event.sort_by(f64::total_cmp);
    println!(
        "web: task status event -> open app page updated in Chromium: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        percentile(&after_event, 0.5),
        percentile(&after_event, 0.99),
        after_event.last().copied().unwrap_or(0.0)
    );
    lags.sort_by(f64::total_cmp);
    println!(
        "web: task killed -> open app page updated in Chromium: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms (20 kills)",
        percentile(&lags, 0.5),
        percentile(&lags, 0.99),
        lags.last().copied().unwrap_or(0.0)
    );
}
