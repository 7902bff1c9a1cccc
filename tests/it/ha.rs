//! High availability: several `dromos serve` on one real PostgreSQL, electing a leader
//! through a real etcd (one member, or three for quorum loss), with remote agents
//! given every master's URL. reliability.md section 6, items 13-17 and 19.

use crate::support::agent::Agent;
use crate::support::dromos::Dromos;
use crate::support::etcd::Etcd;
use crate::support::http::Resp;
use crate::support::postgres::Postgres;
use crate::support::sse::EventStream;
use crate::support::wait_for;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);
pub(crate) const TOKEN: &str = "ha-test-token";

pub(crate) struct Cluster {
    pub(crate) masters: Vec<Dromos>,
    // Dropped after the masters: tasks first, then the agent, then etcd and PostgreSQL.
    agent: Agent,
    etcd: Etcd,
    pg: Postgres,
    dir: tempfile::TempDir,
}

fn master(dir: &std::path::Path, pg: &Postgres, etcd: &Etcd) -> Dromos {
    let e = etcd.endpoints();
    let args = [
        "--store",
        &pg.url,
        "--etcd",
        &e,
        "--leader-lease",
        "2s",
        "--no-agent",
        "--auth-token",
        TOKEN,
        "--agent-ping-interval",
        "200ms",
        "--agent-ping-timeouts",
        "5",
    ];
    Dromos::start(dir, &args).with_token(TOKEN)
}

/// `n` masters on one PostgreSQL and an etcd of `members`, and one agent that knows
/// every master.
pub(crate) fn cluster(n: usize, members: usize) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    let etcd = Etcd::start(members);
    let masters: Vec<Dromos> = (0..n).map(|i| master(&dir.path().join(format!("m{i}")), &pg, &etcd)).collect();
    let urls = masters.iter().map(|m| m.url.clone()).collect::<Vec<_>>().join(",");
    let agent = Agent::start(&urls, TOKEN, &dir.path().join("agent"), "127.0.0.1", "cpus:4;mem:2048", "");
    Cluster { masters, agent, etcd, pg, dir }
}

impl Cluster {
    /// The leader's index once every live master (not `except`) names the same one.
    pub(crate) fn leader(&self, except: &[usize]) -> usize {
        wait_for("one leader that every master names", T, || {
            let named: BTreeSet<String> = (0..self.masters.len())
                .filter(|i| !except.contains(i))
                .map(|i| self.masters[i].call("GET", "/v2/leader", None))
                .map(|r| {
                    if r.status == 200 {
                        r.json()["leader"].as_str().unwrap_or("").to_string()
                    } else {
                        String::new()
                    }
                })
                .collect();
            let one = named.iter().next().filter(|l| named.len() == 1 && !l.is_empty())?;
            self.masters.iter().position(|m| m.url == format!("http://{one}"))
        })
    }

    fn tasks(&self, through: usize, app: &str) -> BTreeSet<String> {
        let r = self.masters[through].call("GET", &format!("/v2/apps{app}/tasks"), None);
        assert_eq!(r.status, 200, "{}", r.text);
        r.json()["tasks"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap().to_string()).collect()
    }

    fn running(&self, through: usize, app: &str) -> BTreeSet<String> {
        let r = self.masters[through].call("GET", &format!("/v2/apps{app}/tasks"), None);
        if r.status != 200 {
            return BTreeSet::new();
        }
        let tasks = r.json()["tasks"].as_array().cloned().unwrap_or_default();
        tasks.iter().filter(|t| t["state"] == "TASK_RUNNING").map(|t| t["id"].as_str().unwrap().to_string()).collect()
    }

    /// Retries a write while the masters answer 503 (a takeover); returns the answer.
    pub(crate) fn write(&self, through: usize, method: &str, path: &str, body: &Value) -> Resp {
        wait_for("a write to be taken", T, || {
            let r = self.masters[through].call(method, path, Some(body));
            (r.status != 503 && r.status != 502).then_some(r)
        })
    }
}

/// `/v2/events` of a master, with the token.
fn events_of(master: &Dromos) -> EventStream {
    let bearer = format!("Bearer {TOKEN}");
    EventStream::open(&master.url, "/v2/events", &[("Authorization", &bearer), ("Accept", "text/event-stream")])
}

fn app(id: &str, instances: u32) -> Value {
    json!({"id": id, "cmd": "exec sleep 1000", "instances": instances, "cpus": 0.01, "mem": 4})
}

/// Items 15 and 17, and a leader killed with `kill -9`: followers forward writes and
/// reads to the leader (never applying them themselves); a killed or abdicating
/// leader is replaced, and the new one carries on with the same tasks.
#[test]
fn followers_forward_and_a_new_leader_takes_over_without_touching_tasks() {
    let mut c = cluster(3, 1);
    let leader = c.leader(&[]);
    let follower = (leader + 1) % 3;

    // The event stream, read through a follower, streams the leader's events.
    let events = events_of(&c.masters[follower]);
    assert_eq!(events.status, 200, "{}", events.head);
    // A write sent to a follower is forwarded to the leader.
    let r = c.write(follower, "POST", "/v2/apps", &app("/ha/web", 2));
    assert_eq!(r.status, 201, "{}", r.text);
    let leader_host = c.masters[leader].url.trim_start_matches("http://").to_string();
    assert_eq!(r.header("X-Marathon-Leader"), Some(format!("http://{leader_host}").as_str()));
    events.wait("api_post_event", T, |e| e["appDefinition"]["id"] == "/ha/web");
    wait_for("2 running", T, || (c.running(follower, "/ha/web").len() == 2).then_some(()));
    let before = c.tasks(leader, "/ha/web");
    assert_eq!(c.agent.live_sandboxes().len(), 2);
    // No master forwards a request another master forwarded already.
    let r = c.masters[follower].raw("GET", "/v2/apps", &[("X-Dromos-Forwarded-By", "http://elsewhere")], None);
    assert_eq!(r.status, 503, "{}", r.text);
    // Agents talk to the leader itself: a follower turns them away and names it.
    let r = c.masters[follower].call("GET", "/v1/agent/stream", None);
    assert_eq!((r.status, r.header("X-Marathon-Leader")), (503, Some(c.masters[leader].url.as_str())));

    // kill -9 the leader: another takes over, reloads, and carries on. The event
    // stream through the follower ends (its client reconnects, to the next leader).
    let killed_at = Instant::now();
    c.masters[leader].kill9();
    events.until_closed(T);
    let next = c.leader(&[leader]);
    assert_ne!(next, leader);
    let other = (0..3).find(|i| *i != leader && *i != next).unwrap();
    let r = c.write(other, "POST", "/v2/apps", &app("/ha/after", 1));
    assert_eq!(r.status, 201, "{}", r.text);
    eprintln!("failover: a write through a follower was taken {:?} after the leader died", killed_at.elapsed());
    wait_for("the new app running", T, || (c.running(other, "/ha/after").len() == 1).then_some(()));
    assert_eq!(c.tasks(next, "/ha/web"), before, "no task killed, none launched twice");
    assert_eq!(c.agent.live_sandboxes().len(), 3);

    // Abdication (DELETE /v2/leader): the other master leads next; same tasks still.
    let r = c.masters[next].call("DELETE", "/v2/leader", None);
    assert_eq!(r.status, 200, "{}", r.text);
    let third = wait_for("a different leader after abdication", T, || {
        let l = c.leader(&[leader]);
        (l != next).then_some(l)
    });
    assert_eq!(third, other);
    let r = c.write(next, "PUT", "/v2/apps/ha/web", &app("/ha/web", 3));
    assert_eq!(r.status, 200, "{}", r.text);
    wait_for("3 running", T, || (c.running(next, "/ha/web").len() == 3).then_some(()));
    assert!(c.tasks(third, "/ha/web").is_superset(&before), "the first two tasks are the same ones");
    assert_eq!(c.agent.live_sandboxes().len(), 4);
}

/// Item 13: a leader frozen past its lease is replaced; when it wakes it writes and
/// launches nothing (the store refuses its epoch), and it steps down.
#[test]
fn a_leader_paused_past_its_lease_is_fenced_out() {
    let c = cluster(2, 1);
    let old = c.leader(&[]);
    let new = 1 - old;
    let r = c.write(new, "POST", "/v2/apps", &app("/ha/fence", 1));
    assert_eq!(r.status, 201, "{}", r.text);
    wait_for("1 running", T, || (c.running(new, "/ha/fence").len() == 1).then_some(()));

    c.masters[old].signal(libc::SIGSTOP);
    wait_for("the other master to lead", T, || {
        let r = c.masters[new].call("GET", "/v2/leader", None);
        (r.status == 200 && format!("http://{}", r.json()["leader"].as_str().unwrap_or("")) == c.masters[new].url)
            .then_some(())
    });
    // The new leader changes the app while the old one sleeps.
    let r = c.write(new, "PUT", "/v2/apps/ha/fence", &app("/ha/fence", 2));
    assert_eq!(r.status, 200, "{}", r.text);
    wait_for("2 running", T, || (c.running(new, "/ha/fence").len() == 2).then_some(()));

    // The old leader wakes with its old view (1 instance) and queued work: whatever it
    // answers, it is not the leader's answer of its own.
    c.masters[old].signal(libc::SIGCONT);
    let r = c.masters[old].call("PUT", "/v2/apps/ha/fence", Some(&app("/ha/fence", 5)));
    let answered_by = r.header("X-Marathon-Leader").unwrap_or("").to_string();
    assert!(r.status == 503 || answered_by == c.masters[new].url, "{} from {answered_by}: {}", r.status, r.text);
    wait_for("the old leader to follow", T, || {
        let r = c.masters[old].call("GET", "/v2/leader", None);
        (r.status == 200 && format!("http://{}", r.json()["leader"].as_str().unwrap_or("")) == c.masters[new].url)
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let instances = c.masters[new].app("/ha/fence")["instances"].as_u64().unwrap();
    assert!(instances == 2 || instances == 5, "only the new leader applied writes: {instances}");
    wait_for("the instances the new leader wants", T, || {
        (c.agent.live_sandboxes().len() == instances as usize).then_some(())
    });
    // The store names the new leader; its epoch is the newer one.
    let leadership = c.store_leadership();
    assert_eq!(leadership.0, c.masters[new].url);
}

impl Cluster {
    /// The store's leadership row: (holder, epoch).
    fn store_leadership(&self) -> (String, i64) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = dromos::store::Store::open(&self.pg.url, dir.path()).await.unwrap();
            let l = store.leadership().await.unwrap();
            store.close().await;
            (l.holder, l.epoch)
        })
    }
}

/// Item 14 (and Marathon #4227): when etcd loses quorum, no master takes writes after
/// one lease TTL, no task is touched, and all recovers by itself once quorum is back.
#[test]
fn etcd_quorum_loss_stops_writes_and_recovers() {
    let mut c = cluster(2, 3);
    let leader = c.leader(&[]);
    let r = c.write(leader, "POST", "/v2/apps", &app("/ha/quorum", 2));
    assert_eq!(r.status, 201, "{}", r.text);
    wait_for("2 running", T, || (c.running(leader, "/ha/quorum").len() == 2).then_some(()));
    let before = c.agent.live_sandboxes();

    c.etcd.stop(1);
    c.etcd.stop(2);
    // After the lease's TTL (2 s) at most, every master refuses writes. (Until then the
    // leader still leads: the probe is invalid, so it creates nothing either way.)
    let probe = json!({"id": "/ha/probe", "cmd": "x", "instances": -1});
    wait_for("every master to refuse writes", T, || {
        (0..2).all(|i| c.masters[i].call("POST", "/v2/apps", Some(&probe)).status == 503).then_some(())
    });
    for _ in 0..10 {
        for i in 0..2 {
            let r = c.masters[i].call("POST", "/v2/apps", Some(&app("/ha/refused", 1)));
            assert_eq!(r.status, 503, "no writes without etcd quorum: {}", r.text);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(c.agent.live_sandboxes(), before, "no task touched");

    c.etcd.restart(1);
    c.etcd.restart(2);
    c.etcd.wait_healthy();
    let leader = c.leader(&[]);
    let r = c.write(1 - leader, "POST", "/v2/apps", &app("/ha/back", 1));
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(c.masters[leader].call("GET", "/v2/apps/ha/refused", None).status, 404, "no refused write applied");
    wait_for("the new app running", T, || (c.running(leader, "/ha/back").len() == 1).then_some(()));
    let now = c.agent.live_sandboxes();
    assert!(before.iter().all(|s| now.contains(s)), "the first tasks are untouched");
}

/// Without etcd, one PostgreSQL database has one master: a second is refused with a
/// clear error.
#[test]
fn a_second_master_without_etcd_on_one_database_is_refused() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let first = Dromos::start(&dir.path().join("m1"), &["--store", &pg.url, "--no-agent"]);
    assert_eq!(first.call("GET", "/ping", None).status, 200);
    let mut second = std::process::Command::new(crate::support::dromos::exe())
        .args(["serve", "--listen", "127.0.0.1:0", "--no-agent", "--store", &pg.url, "--data-dir"])
        .arg(dir.path().join("m2"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_for("the second master to give up", T, || second.try_wait().unwrap());
    assert!(!status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("another dromos master uses this PostgreSQL database"), "{err}");
    assert_eq!(first.call("GET", "/ping", None).status, 200);
}

/// Items 16 and 25: a job due every 3 s runs each due time exactly once while the
/// leadership moves three times by abdication and once by `kill -9`: each new leader
/// reloads the runs and timers from the store, none is lost or doubled. (The period is
/// longer than a takeover: a due time passed during one runs late as its catch-up; of
/// several passed, only the latest runs, by the missed-run policy.)
#[test]
fn jobs_run_each_due_time_once_while_the_leadership_moves() {
    let mut c = cluster(3, 1);
    let leader = c.leader(&[]);
    let out = c.dir.path().join("runs");
    let job = json!({"name": "tick", "command": format!("echo $CHRONOS_JOB_RUN_TIME >> {}", out.display()),
        "schedule": "R6//PT3S", "epsilon": "PT60S", "concurrent": true, "mem": 16});
    let r = c.write(leader, "POST", "/scheduler/iso8601", &job);
    assert_eq!(r.status, 204, "{}", r.text);
    let mut epochs = vec![c.store_leadership().1];
    for _ in 0..3 {
        let l = c.leader(&[]);
        assert_eq!(c.masters[l].call("DELETE", "/v2/leader", None).status, 200);
        wait_for("the next term", T, || {
            let e = c.store_leadership().1;
            (e > *epochs.last().unwrap()).then_some(())
        });
        epochs.push(c.store_leadership().1);
        std::thread::sleep(Duration::from_millis(1500));
    }
    let l = c.leader(&[]);
    c.masters[l].kill9();
    let live = (0..3).find(|i| *i != l).unwrap();
    wait_for("all six runs", T, || {
        let r = c.masters[live].call("GET", "/scheduler/job/tick", None);
        (r.status == 200 && r.json()["successCount"] == 6).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let lines: Vec<String> = std::fs::read_to_string(&out).unwrap().lines().map(str::to_string).collect();
    let mut seen = lines.clone();
    seen.sort();
    seen.dedup();
    assert_eq!((lines.len(), seen.len()), (6, 6), "each due time once, none twice: {lines:?}");
    assert!(epochs.windows(2).all(|w| w[0] < w[1]), "each term has a newer epoch: {epochs:?}");
}

/// Item 16 on a single master: each abdication ends the term and starts the next one
/// from the store, with a newer epoch; apps and their tasks carry on untouched.
#[test]
fn a_single_master_abdicates_and_leads_again_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let d = Dromos::start(dir.path(), &[]);
    let r = d.call("POST", "/v2/apps", Some(&app("/solo", 2)));
    assert_eq!(r.status, 201, "{}", r.text);
    wait_for("2 running", T, || (d.app("/solo")["tasksRunning"] == 2).then_some(()));
    let sandboxes = d.live_sandboxes();
    for _ in 0..3 {
        assert_eq!(d.call("DELETE", "/v2/leader", None).status, 200);
        wait_for("the next term to take writes", T, || {
            let r = d.call("PUT", "/v2/apps/solo", Some(&app("/solo", 2)));
            (r.status == 200).then_some(())
        });
    }
    wait_for("2 running", T, || (d.app("/solo")["tasksRunning"] == 2).then_some(()));
    assert_eq!(d.live_sandboxes(), sandboxes, "the same tasks, adopted by each term");
}

/// Reliability cases 1 and 15 across masters: `kill -9` of the leader in the middle of a
/// rolling upgrade. The other master takes over, carries on with the stored deployment
/// and ends with every instance on the new version, the running processes within
/// `[minimumHealthCapacity × n, (1 + maximumOverCapacity) × n]` throughout, and only
/// the final four running.
#[test]
fn a_new_leader_finishes_a_rolling_upgrade_within_its_bounds() {
    rolling_upgrade_across_a_leader_change(|c, leader| c.masters[leader].kill9());
}

/// Reliability case 15 as the issue states it: the leader abdicates (`DELETE
/// /v2/leader`) in the middle of a rolling upgrade; it stays up as a follower, and the
/// new leader finishes the upgrade within its bounds.
#[test]
fn a_leader_abdicating_mid_upgrade_leaves_it_to_the_next() {
    rolling_upgrade_across_a_leader_change(|c, leader| {
        assert_eq!(c.masters[leader].call("DELETE", "/v2/leader", None).status, 200);
        wait_for("the other master to lead", T, || (c.leader(&[]) != leader).then_some(()));
    });
}

/// A rolling upgrade of four instances from v1 to v2, with `change` moving the
/// leadership away from the leader (its index) halfway.
fn rolling_upgrade_across_a_leader_change(change: impl FnOnce(&mut Cluster, usize)) {
    let mut c = cluster(2, 1);
    let leader = c.leader(&[]);
    let version = crate::support::rolling_app;
    // ceil(4 × 0.75) = 3 and floor(4 × 1.25) = 5 processes at any time.
    let in_bounds = |c: &Cluster| {
        let live = c.agent.live_sandboxes().len();
        assert!((3..=5).contains(&live), "{live} task processes run, outside [3, 5]");
    };
    assert_eq!(c.write(leader, "POST", "/v2/apps", &version("v1")).status, 201);
    wait_for("four healthy v1 tasks", T, || {
        let app = c.masters[leader].app("/rolling");
        (app["tasksHealthy"] == 4 && app["deployments"] == json!([])).then_some(())
    });
    let v1: BTreeSet<String> = c.agent.live_sandboxes().into_iter().map(|(t, _, _)| t).collect();
    assert_eq!(c.write(leader, "PUT", "/v2/apps/rolling", &version("v2")).status, 200);
    wait_for("some but not all v1 tasks replaced", T, || {
        in_bounds(&c);
        let live: BTreeSet<String> = c.agent.live_sandboxes().into_iter().map(|(t, _, _)| t).collect();
        let old_left = live.intersection(&v1).count();
        (old_left > 0 && old_left < 4).then_some(())
    });
    change(&mut c, leader);
    let next = c.leader(&[leader]);
    wait_for("four healthy v2 tasks and the deployment done", T, || {
        in_bounds(&c);
        let r = c.masters[next].call("GET", "/v2/apps/rolling", None);
        if r.status != 200 {
            return None;
        }
        let app = r.json()["app"].clone();
        let tasks = app["tasks"].as_array().unwrap().clone();
        let all_new = tasks.iter().all(|t| !v1.contains(t["id"].as_str().unwrap()));
        (app["tasksHealthy"] == 4 && tasks.len() == 4 && all_new && app["deployments"] == json!([])).then_some(())
    });
    let finals = c.tasks(next, "/rolling");
    let live: BTreeSet<String> = c.agent.live_sandboxes().into_iter().map(|(t, _, _)| t).collect();
    assert_eq!(live, finals, "only the final four tasks run");
    assert_eq!(c.masters[next].app("/rolling")["env"]["TAG"], "v2");
}

/// A leader stopped with SIGTERM while an event stream is open resigns and exits
/// promptly (its streams end), and the other master leads.
#[test]
fn a_leader_stopped_with_sigterm_resigns_and_exits() {
    let mut c = cluster(2, 1);
    let leader = c.leader(&[]);
    let events = events_of(&c.masters[leader]);
    assert_eq!(events.status, 200, "{}", events.head);
    let stopped = Instant::now();
    c.masters[leader].signal(libc::SIGTERM);
    events.until_closed(T);
    c.masters[leader].wait_crash();
    assert!(stopped.elapsed() < Duration::from_secs(8), "exited after {:?}", stopped.elapsed());
    let next = c.leader(&[leader]);
    assert_ne!(next, leader);
    assert_eq!(c.write(next, "POST", "/v2/apps", &app("/ha/after-stop", 0)).status, 201);
}
