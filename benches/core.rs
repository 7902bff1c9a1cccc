//! `make bench`: the performance targets of the foundation issue, measured (never as
//! timed tests). Prints one line per figure; README's performance section records them.
//!
//! 1. Placement core: 10,000 agents, 100,000 placements with resources and ports.
//! 2. Persistence: 100,000 task records group-committed to SQLite.
//! 3. Local agent: 1,000 instances of `sleep 3600`, POST to all TASK_RUNNING.
//! 4. Memory: RSS of `dromos serve` with those 1,000 tasks running.

use dromos::domain::agent::Containerizer;
use dromos::domain::task::Goal;
use dromos::domain::*;
use dromos::scheduler::{place, AgentCapacity, Fairness, LaunchRequest, RolePolicy};
use dromos::store::{Change, Store};
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
    let requests: Vec<LaunchRequest> = specs.iter().map(|s| LaunchRequest { app: s, count: 1000 }).collect();
    let mut best = f64::MAX;
    for _ in 0..5 {
        let mut a = agents.clone();
        let mut cursor = 0;
        let t = Instant::now();
        let policy = RolePolicy::default();
        let mut fairness = Fairness::new(Resources::default(), Default::default(), &policy);
        let r = place(&mut a, &requests, &mut cursor, &mut fairness);
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(r.placed.len(), 100_000);
        best = best.min(secs);
    }
    println!(
        "placement: 100000 tasks on 10000 agents in {:.1} ms = {:.0} placements/s (best of 5, one core)",
        best * 1e3,
        100_000.0 / best
    );
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

fn bench_local_agent() {
    let dir = tempfile::tempdir().expect("tempdir");
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
        "local agent: 1000 x `sleep 3600` from POST to all TASK_RUNNING in {secs:.2} s ({:.0} tasks/s)",
        1000.0 / secs
    );
    std::thread::sleep(Duration::from_secs(2));
    println!("memory: dromos serve with 1000 running tasks: {:.1} MiB RSS", rss_mib(child.id()));
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
    println!("local agent: 1000 tasks killed and gone in {:.2} s", t.elapsed().as_secs_f64());
    let _ = child.kill();
    let _ = child.wait();
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument selects one benchmark.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let on = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    if on("placement") {
        bench_placement();
    }
    if on("persistence") {
        bench_persistence(&rt);
    }
    if on("agent") {
        bench_local_agent();
    }
}
