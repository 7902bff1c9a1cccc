//! Agents across machines: a master without an embedded agent and several real
//! `dromos agent` processes on distinct loopback addresses, work dirs and port ranges.
//! Partitions are simulated by freezing an agent with SIGSTOP (its tasks keep running).

use crate::support::agent::Agent;
use crate::support::dromos::Dromos;
use crate::support::{alive, wait_for};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);
const TOKEN: &str = "agents-test-token";

/// A master with a 1 s ping budget (200 ms × 5) and no removal rate limit.
fn master(dir: &std::path::Path) -> Dromos {
    master_with_removal_limit(dir, "off")
}

fn master_with_removal_limit(dir: &std::path::Path, limit: &str) -> Dromos {
    let args = ["--no-agent", "--auth-token", TOKEN, "--agent-ping-interval", "200ms", "--agent-ping-timeouts", "5"];
    let mut args = args.to_vec();
    args.extend(["--agent-removal-rate-limit", limit]);
    Dromos::start(&dir.join("master"), &args).with_token(TOKEN)
}

fn agents_by_id(d: &Dromos) -> BTreeMap<String, Value> {
    let list = d.get("/v1/agents");
    list["agents"].as_array().unwrap().iter().map(|a| (a["id"].as_str().unwrap().to_string(), a.clone())).collect()
}

/// Two agents, on 127.0.0.1 (rack r1) and 127.0.0.2 (rack r2), both active.
fn two_agents(d: &Dromos, dir: &std::path::Path) -> (Agent, Agent) {
    let a1 = Agent::start(&d.url, TOKEN, &dir.join("a1"), "127.0.0.1", "cpus:2;mem:1024", "rack:r1");
    let a2 = Agent::start(&d.url, TOKEN, &dir.join("a2"), "127.0.0.2", "cpus:2;mem:1024", "rack:r2");
    wait_agents_active(d, 2);
    (a1, a2)
}

fn wait_agents_active(d: &Dromos, n: usize) {
    wait_for(&format!("{n} active agents"), T, || {
        let a = agents_by_id(d);
        (a.len() == n && a.values().all(|a| a["state"] == "active")).then_some(())
    });
}

/// Running tasks of an app: task id -> host.
fn running(d: &Dromos, app: &str) -> BTreeMap<String, String> {
    d.get(&format!("/v2/apps{app}/tasks"))["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["state"] == "TASK_RUNNING")
        .map(|t| (t["id"].as_str().unwrap().to_string(), t["host"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn apps_spread_over_remote_agents_that_report_resources_roles_and_attributes() {
    let dir = tempfile::tempdir().unwrap();
    let d = master(dir.path());
    let a1 = Agent::start(&d.url, TOKEN, &dir.path().join("a1"), "127.0.0.1", "cpus:2;mem:1024", "rack:r1,zone:a");
    let a2 = Agent::start(&d.url, TOKEN, &dir.path().join("a2"), "127.0.0.2", "cpus:2;mem:1024", "rack:r2,zone:a");
    let a3 = Agent::start(
        &d.url,
        TOKEN,
        &dir.path().join("a3"),
        "127.0.0.3",
        "cpus:2;mem:1024;cpus(batch):1;mem(batch):256",
        "rack:r3,zone:b",
    );
    wait_agents_active(&d, 3);

    let agents = agents_by_id(&d);
    let v3 = &agents[&a3.id];
    assert_eq!(v3["hostname"], "127.0.0.3");
    assert_eq!(v3["attributes"], json!({"rack": "r3", "zone": "b"}));
    assert_eq!(v3["resources"]["cpus"], 3.0);
    assert_eq!(v3["reservedResources"]["batch"]["cpus"], 1.0);
    assert_eq!(v3["unreservedResources"]["ports"], format!("[{}-{}]", a3.ports.0, a3.ports.1));
    assert_eq!(d.get(&format!("/v1/agents/{}", a1.id))["hostname"], "127.0.0.1");
    assert_eq!(d.call("GET", "/v1/agents/nope", None).status, 404);

    // Six web servers on three agents: two each, each reachable on its host and port.
    let web = json!({"id": "/web", "cmd": "exec python3 -m http.server --bind $HOST $PORT0", "instances": 6, "cpus": 0.5, "mem": 32});
    assert_eq!(d.call("POST", "/v2/apps", Some(&web)).status, 201);
    wait_for("6 running", T, || (running(&d, "/web").len() == 6).then_some(()));
    let tasks = d.get("/v2/apps/web/tasks")["tasks"].as_array().unwrap().clone();
    let mut per_host: BTreeMap<String, usize> = BTreeMap::new();
    for t in &tasks {
        *per_host.entry(t["host"].as_str().unwrap().to_string()).or_default() += 1;
        let url = format!("http://{}:{}/", t["host"].as_str().unwrap(), t["ports"][0]);
        wait_for(&format!("{url} to answer"), T, || ureq::get(&url).call().ok().map(|_| ()));
    }
    assert_eq!(per_host.values().copied().collect::<Vec<_>>(), vec![2, 2, 2], "{per_host:?}");
    // Each task's logs come from its own agent, through the master.
    for t in &tasks {
        let logs = format!("/v2/apps/web/tasks/{}/logs?stream=stderr", t["id"].as_str().unwrap());
        wait_for("the access log of a task on a remote agent", T, || {
            let r = d.call("GET", &logs, None);
            (r.status == 200 && r.text.contains("\"GET / HTTP/1.1\" 200")).then_some(())
        });
    }
    let missing =
        d.call("GET", "/v2/apps/web/tasks/web.instance-00000000-0000-0000-0000-000000000000._app.1/logs", None);
    assert_eq!(missing.status, 404, "{}", missing.text);
    assert_eq!(agents_by_id(&d)[&a2.id]["usedResources"]["cpus"], 1.0);
    assert_eq!(a1.live_sandboxes().len() + a2.live_sandboxes().len() + a3.live_sandboxes().len(), 6);

    // A batch app that accepts only its role's reservation lands on a3, and only once
    // (one reserved cpu; no ports are reserved for the role, so it asks for none); a
    // second instance waits.
    let batch = json!({"id": "/batch", "cmd": "exec sleep 1000", "instances": 2, "cpus": 1, "mem": 16,
        "role": "batch", "acceptedResourceRoles": ["batch"], "portDefinitions": []});
    assert_eq!(d.call("POST", "/v2/apps", Some(&batch)).status, 201);
    wait_for("one batch task on a3", T, || {
        let r = running(&d, "/batch");
        (r.len() == 1 && r.values().all(|h| h == "127.0.0.3")).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(running(&d, "/batch").len(), 1, "no second reserved cpu anywhere");
    let bad = json!({"id": "/bad-role", "cmd": "x", "role": "batch", "acceptedResourceRoles": ["other"]});
    let r = d.call("POST", "/v2/apps", Some(&bad));
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("/acceptedResourceRoles/0"), "{}", r.text);

    // An agent without the token is refused; it never shows up.
    let intruder = Agent::start(&d.url, "wrong", &dir.path().join("a4"), "127.0.0.4", "cpus:1;mem:64", "rack:x");
    std::thread::sleep(Duration::from_millis(800));
    assert!(!agents_by_id(&d).contains_key(&intruder.id));
}

#[test]
fn a_partitioned_agent_is_replaced_and_the_surplus_killed_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let d = master(dir.path());
    let (a1, a2) = two_agents(&d, dir.path());
    let app = json!({"id": "/sleepy", "cmd": "exec sleep 1000", "instances": 2, "cpus": 0.1, "mem": 16});
    assert_eq!(d.call("POST", "/v2/apps", Some(&app)).status, 201);
    wait_for("2 running, one per agent", T, || {
        let r = running(&d, "/sleepy");
        (r.len() == 2 && r.values().collect::<BTreeSet<_>>().len() == 2).then_some(())
    });
    let on_a1 = a1.live_sandboxes();
    assert_eq!(on_a1.len(), 1);

    // Pull the plug on a1: after the 1 s ping budget its task is unreachable and a
    // replacement runs on a2 (unreachableStrategy 0/0: replace at once).
    a1.pause();
    wait_for("a1 unreachable", T, || (agents_by_id(&d)[&a1.id]["state"] == "unreachable").then_some(()));
    assert!(d.call("GET", "/metrics", None).text.contains("dromos_agents_unreachable 1"));
    wait_for("replacement on a2", T, || {
        let r = running(&d, "/sleepy");
        (r.len() == 2 && r.values().all(|h| h == "127.0.0.2")).then_some(())
    });
    assert_eq!(a2.live_sandboxes().len(), 2);
    assert_eq!(a1.live_sandboxes(), on_a1, "the partitioned task kept running");

    // Heal: a1 reconnects; its task was expunged (expungeAfterSeconds 0), so it is
    // killed, and the count is exactly 2 again.
    a1.resume();
    wait_for("a1 active again", T, || (agents_by_id(&d)[&a1.id]["state"] == "active").then_some(()));
    wait_for("the returning copy killed", T, || a1.live_sandboxes().is_empty().then_some(()));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(running(&d, "/sleepy").len(), 2);
    assert_eq!(a1.live_sandboxes().len() + a2.live_sandboxes().len(), 2);
}

#[test]
fn an_unreachable_task_that_returns_before_expunge_is_kept_and_the_surplus_goes() {
    let dir = tempfile::tempdir().unwrap();
    let d = master(dir.path());
    let (a1, a2) = two_agents(&d, dir.path());
    // Replace after 0 s, expunge only after an hour: the original may come back.
    let app = json!({"id": "/keep", "cmd": "exec sleep 1000", "instances": 2, "cpus": 0.1, "mem": 16,
        "unreachableStrategy": {"inactiveAfterSeconds": 0, "expungeAfterSeconds": 3600}});
    assert_eq!(d.call("POST", "/v2/apps", Some(&app)).status, 201);
    wait_for("2 running", T, || (running(&d, "/keep").len() == 2).then_some(()));
    let original = a1.live_sandboxes();
    a1.pause();
    wait_for("an unreachable task and a replacement", T, || {
        let tasks = d.get("/v2/apps/keep/tasks")["tasks"].as_array().unwrap().clone();
        let unreachable = tasks.iter().filter(|t| t["state"] == "TASK_UNREACHABLE").count();
        (unreachable == 1 && running(&d, "/keep").len() == 2).then_some(())
    });
    a1.resume();
    // Back: three copies run for a moment; the youngest (the replacement) is killed.
    wait_for("exactly 2 again, the original kept", T, || {
        let r = running(&d, "/keep");
        (r.len() == 2 && a2.live_sandboxes().len() == 1 && a1.live_sandboxes() == original).then_some(())
    });
}

#[test]
fn a_killed_agent_restarts_and_adopts_its_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let d = master(dir.path());
    let mut a = Agent::start(&d.url, TOKEN, &dir.path().join("a1"), "127.0.0.1", "cpus:2;mem:1024", "rack:r1");
    wait_agents_active(&d, 1);
    let app = json!({"id": "/adopt", "cmd": "exec sleep 1000", "instances": 3, "cpus": 0.1, "mem": 16});
    assert_eq!(d.call("POST", "/v2/apps", Some(&app)).status, 201);
    wait_for("3 running", T, || (running(&d, "/adopt").len() == 3).then_some(()));
    let before = a.live_sandboxes();
    let ids_before = running(&d, "/adopt");
    let id = a.id.clone();
    // kill -9 the agent ten times in a row (reliability case 4): same processes, same
    // task ids, nothing launched again.
    for _ in 0..10 {
        a.restart();
        assert_eq!(a.id, id, "the agent keeps its id");
        wait_agents_active(&d, 1);
        assert_eq!(a.live_sandboxes(), before);
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(running(&d, "/adopt"), ids_before);
    assert_eq!(a.live_sandboxes(), before);
}

#[test]
fn a_wiped_agent_stops_what_it_left_running_and_the_tasks_are_replaced_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = master(dir.path());
    let mut a = Agent::start(&d.url, TOKEN, &dir.path().join("a1"), "127.0.0.1", "cpus:2;mem:1024", "rack:r1");
    wait_agents_active(&d, 1);
    // At most one copy: an unreachable task is never replaced, so only the agent's word
    // that the old copy is gone lets a new one start.
    let app = json!({"id": "/solo", "cmd": "exec sleep 1000", "instances": 1, "cpus": 0.1, "mem": 16,
        "unreachableStrategy": "disabled"});
    assert_eq!(d.call("POST", "/v2/apps", Some(&app)).status, 201);
    wait_for("1 running", T, || (running(&d, "/solo").len() == 1).then_some(()));
    let old_task = running(&d, "/solo").into_keys().next().unwrap();
    let old_procs = a.live_sandboxes();
    assert_eq!(old_procs.len(), 1);
    let old_id = a.id.clone();

    a.restart_wiped();
    assert_ne!(a.id, old_id, "a wiped agent cannot know its old id");
    // Stopped before the new agent registered: never two copies.
    for (_, sup, task) in &old_procs {
        assert!(!alive(*sup) && !alive(*task), "the old copy still runs");
    }
    let new_task = wait_for("the replacement", T, || {
        let r = running(&d, "/solo");
        (r.len() == 1 && !r.contains_key(&old_task)).then(|| r.into_keys().next().unwrap())
    });
    assert_eq!(d.app("/solo")["tasks"][0]["slaveId"], a.id.as_str());
    assert_ne!(new_task, old_task);
    let failure = d.app("/solo")["lastTaskFailure"].clone();
    assert_eq!((failure["taskId"].as_str(), failure["state"].as_str()), (Some(old_task.as_str()), Some("TASK_GONE")));
    assert!(failure["message"].as_str().unwrap().contains("wiped"), "{failure}");
    // The earlier agent is forgotten; the new one runs the one task.
    let agents = agents_by_id(&d);
    assert_eq!(agents.keys().collect::<Vec<_>>(), vec![&a.id]);
    assert_eq!(a.live_sandboxes().len(), 1);
}

/// Reliability case 10: half the cluster goes silent at once. The removal rate limit
/// (10% per minute, at least one agent) lets one agent be marked unreachable and holds
/// the other back, visibly (metrics, agent state), without touching its tasks; when the
/// partition heals, both agents are active again.
#[test]
fn a_partition_of_half_the_agents_is_held_back_by_the_removal_rate_limit() {
    let dir = tempfile::tempdir().unwrap();
    let d = master_with_removal_limit(dir.path(), "10%/10m");
    let agents: Vec<Agent> = (1..=4)
        .map(|i| {
            let host = format!("127.0.0.{i}");
            Agent::start(&d.url, TOKEN, &dir.path().join(format!("a{i}")), &host, "cpus:1;mem:256", "rack:r")
        })
        .collect();
    wait_agents_active(&d, 4);
    let app = json!({"id": "/spread", "cmd": "exec sleep 1000", "instances": 4, "cpus": 0.5, "mem": 16,
        "constraints": [], "unreachableStrategy": {"inactiveAfterSeconds": 3600, "expungeAfterSeconds": 7200}});
    assert_eq!(d.call("POST", "/v2/apps", Some(&app)).status, 201);
    wait_for("4 running", T, || (running(&d, "/spread").len() == 4).then_some(()));

    agents[0].pause();
    agents[1].pause();
    let metric = |name: &str| -> String {
        let text = d.call("GET", "/metrics", None).text;
        text.lines().find_map(|l| l.strip_prefix(&format!("{name} ")).map(String::from)).unwrap_or_default()
    };
    wait_for("one agent marked, one held back", T, || {
        (metric("dromos_agents_unreachable") == "1" && metric("dromos_agents_removal_held_back") == "1").then_some(())
    });
    let states: Vec<String> = agents_by_id(&d)
        .values()
        .map(|a| a["state"].as_str().unwrap().to_string())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(states, vec!["active", "disconnected", "unreachable"]);
    let by_id = agents_by_id(&d);
    let held = if by_id[&agents[0].id]["state"] == "disconnected" { &agents[0] } else { &agents[1] };
    assert_eq!(by_id[&held.id]["tasks"], 1, "the held-back agent's task is left alone");

    agents[0].resume();
    agents[1].resume();
    wait_agents_active(&d, 4);
    wait_for("the held-back count to clear", T, || (metric("dromos_agents_removal_held_back") == "0").then_some(()));
}

/// Tasks' hosts' racks, per running task of `app`.
fn racks_of(d: &Dromos, app: &str, rack_of: &BTreeMap<String, String>) -> Vec<String> {
    let mut r: Vec<String> = running(d, app).values().map(|h| rack_of[h].clone()).collect();
    r.sort();
    r
}

#[test]
fn constraints_spread_apps_over_hosts_and_racks_and_the_queue_says_what_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let d = master(dir.path());
    let hosts = [("127.0.0.1", "r1"), ("127.0.0.2", "r2"), ("127.0.0.3", "r3"), ("127.0.0.4", "r1")];
    let _agents: Vec<Agent> = hosts
        .iter()
        .enumerate()
        .map(|(i, (h, rack))| {
            Agent::start(&d.url, TOKEN, &dir.path().join(format!("a{i}")), h, "cpus:2;mem:512", &format!("rack:{rack}"))
        })
        .collect();
    wait_agents_active(&d, 4);
    let rack_of: BTreeMap<String, String> = hosts.iter().map(|(h, r)| (h.to_string(), r.to_string())).collect();

    let web = json!({"id": "/spread/web", "cmd": "exec sleep 1000", "instances": 3, "cpus": 0.1, "mem": 16,
        "constraints": [["hostname", "UNIQUE"], ["rack", "GROUP_BY", "3"]]});
    assert_eq!(d.call("POST", "/v2/apps", Some(&web)).status, 201);
    // Deployed (the deployment gone), or the scale below would find the app locked.
    wait_for("3 running, deployed", T, || {
        (running(&d, "/spread/web").len() == 3 && d.get("/v2/deployments") == json!([])).then_some(())
    });
    assert_eq!(racks_of(&d, "/spread/web", &rack_of), vec!["r1", "r2", "r3"]);

    // Five instances on four hosts: one waits, and the queue names the constraint.
    let r = d.call("PUT", "/v2/apps/spread/web", Some(&json!({"instances": 5})));
    assert_eq!(r.status, 200, "{}", r.text);
    let entry = wait_for("the fifth instance in the queue", T, || {
        let q = d.get("/v2/queue");
        let e = q["queue"].as_array().unwrap().iter().find(|e| e["app"]["id"] == "/spread/web").cloned();
        // The fourth instance may still be starting when the fifth is turned down.
        e.filter(|e| e["count"] == 1 && e["unfulfilledConstraints"].as_array().is_some_and(|c| !c.is_empty()))
            .filter(|_| running(&d, "/spread/web").len() == 4)
    });
    assert_eq!(entry["unfulfilledConstraints"][0]["constraint"], json!(["hostname", "UNIQUE"]));
    assert_eq!(entry["unfulfilledConstraints"][0]["declined"], 4);
    let summary = entry["processedOffersSummary"]["rejectSummaryLastOffers"].as_array().unwrap();
    let unfulfilled = summary.iter().find(|s| s["reason"] == "UnfulfilledConstraint").unwrap();
    assert_eq!((unfulfilled["declined"].as_u64(), unfulfilled["processed"].as_u64()), (Some(4), Some(4)));
    assert_eq!(d.call("DELETE", "/v2/queue/spread/web/delay", None).status, 204);
    assert_eq!(d.call("DELETE", "/v2/queue/nope/delay", None).status, 404);

    // The scale-up cannot finish, so the app is locked (Marathon's 409) until the
    // deployment is stopped. Scale-down keeps the racks even: the second r1 instance goes.
    let locked = d.call("PUT", "/v2/apps/spread/web", Some(&json!({"instances": 3})));
    assert_eq!(locked.status, 409, "{}", locked.text);
    let stuck = locked.json()["deployments"][0]["id"].as_str().unwrap().to_string();
    // Stopping the stuck deployment (force) releases the lock and changes no task.
    assert_eq!(d.call("DELETE", &format!("/v2/deployments/{stuck}?force=true"), None).status, 202);
    assert_eq!(d.get("/v2/deployments"), json!([]));
    assert_eq!(running(&d, "/spread/web").len(), 4);
    assert_eq!(d.call("PUT", "/v2/apps/spread/web", Some(&json!({"instances": 3}))).status, 200);
    // Deployed (the deployment gone), or the scale below would find the app locked.
    wait_for("3 running, deployed", T, || {
        (running(&d, "/spread/web").len() == 3 && d.get("/v2/deployments") == json!([])).then_some(())
    });
    assert_eq!(racks_of(&d, "/spread/web", &rack_of), vec!["r1", "r2", "r3"]);

    // LIKE keeps an app to the racks it names.
    let picky = json!({"id": "/spread/picky", "cmd": "exec sleep 1000", "instances": 4, "cpus": 0.1, "mem": 16,
        "constraints": [["rack", "LIKE", "r[23]"]]});
    assert_eq!(d.call("POST", "/v2/apps", Some(&picky)).status, 201);
    wait_for("4 running", T, || (running(&d, "/spread/picky").len() == 4).then_some(()));
    assert_eq!(racks_of(&d, "/spread/picky", &rack_of), vec!["r2", "r2", "r3", "r3"]);

    let bad = json!({"id": "/spread/bad", "cmd": "x", "constraints": [["rack", "LIKE", "r[2"]]});
    let r = d.call("POST", "/v2/apps", Some(&bad));
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("/constraints/0") && r.text.contains("regular expression"), "{}", r.text);
}

/// Reliability case 7: a master restart. Reads are served at once; writes wait (503 with
/// Retry-After) until the known agents have registered again; no task is killed or
/// started again.
#[test]
fn after_a_master_restart_writes_wait_for_the_agents_and_no_task_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Dromos::start(
        &dir.path().join("master"),
        &["--no-agent", "--auth-token", TOKEN, "--agent-ping-interval", "2s", "--agent-ping-timeouts", "5"],
    )
    .with_token(TOKEN);
    let a = Agent::start(&d.url, TOKEN, &dir.path().join("a1"), "127.0.0.1", "cpus:2;mem:1024", "rack:r1");
    wait_agents_active(&d, 1);
    let app = json!({"id": "/keep", "cmd": "exec sleep 1000", "instances": 3, "cpus": 0.1, "mem": 16});
    assert_eq!(d.call("POST", "/v2/apps", Some(&app)).status, 201);
    wait_for("3 running", T, || (running(&d, "/keep").len() == 3).then_some(()));
    let (tasks, processes) = (running(&d, "/keep"), a.live_sandboxes());

    // The agent cannot answer (frozen) while the master restarts.
    a.pause();
    d.restart();
    assert_eq!(d.app("/keep")["instances"], 3, "reads are served at once");
    let other = json!({"id": "/other", "cmd": "exec sleep 1000", "cpus": 0.1, "mem": 16});
    let r = d.call("POST", "/v2/apps", Some(&other));
    assert_eq!(r.status, 503, "{}", r.text);
    assert!(r.text.contains("recovering"), "{}", r.text);
    assert!(r.header("retry-after").is_some());

    a.resume();
    wait_for("writes to be taken again", T, || (d.call("POST", "/v2/apps", Some(&other)).status == 201).then_some(()));
    assert_eq!(running(&d, "/keep"), tasks, "the same tasks");
    assert_eq!(a.live_sandboxes(), processes, "the same processes");
}

/// A job run whose agent is cut off (frozen past the ping budget) is not started a second
/// time: its task is unreachable, the run waits, and when the agent is back the run ends
/// as its task did. One start, one end, one success.
#[test]
fn a_job_run_behind_a_partition_is_not_run_twice() {
    let dir = tempfile::tempdir().unwrap();
    let d = master(dir.path());
    let a1 = Agent::start(&d.url, TOKEN, &dir.path().join("a1"), "127.0.0.1", "cpus:2;mem:1024", "rack:r1");
    wait_agents_active(&d, 1);
    let log = dir.path().join("log");
    let job = json!({"name": "cut-off", "command": format!("echo start >> {l}; sleep 4; echo end >> {l}", l = log.display()),
        "schedule": "R1//PT1H", "mem": 16, "retries": 2, "retryDelaySeconds": 0});
    let r = d.call("POST", "/scheduler/iso8601", Some(&job));
    assert_eq!(r.status, 204, "{}", r.text);
    wait_for("the run to start", T, || std::fs::read_to_string(&log).ok().filter(|l| l.contains("start")));
    a1.pause();
    wait_for("the agent unreachable", T, || (agents_by_id(&d)[&a1.id]["state"] == "unreachable").then_some(()));
    std::thread::sleep(Duration::from_secs(2));
    let summary = d.get("/scheduler/jobs/summary");
    assert_eq!(summary["jobs"][0]["state"], "1 running", "the run waits for its task: {summary}");
    a1.resume();
    wait_for("the run to succeed", T, || {
        let j = d.get("/scheduler/job/cut-off");
        (j["successCount"] == 1).then_some(())
    });
    let lines = std::fs::read_to_string(&log).unwrap();
    assert_eq!(lines, "start\nend\n", "one run only");
    assert_eq!(d.get("/scheduler/job/cut-off")["errorCount"], 0);
}
