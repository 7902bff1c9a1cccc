//! The store's suite, run against both backends: embedded SQLite and a real PostgreSQL.

use crate::support::dromos::Dromos;
use crate::support::postgres::Postgres;
use crate::support::wait_for;
use dromos::domain::task::Goal;
use dromos::domain::*;
use dromos::store::{Change, Store, StoreError};
use serde_json::json;
use std::time::Duration;

fn app(id: &str, version_ms: i64, instances: u32) -> AppVersion {
    let body = json!({"id": id, "cmd": "sleep 1", "instances": instances});
    let spec = dromos::api::dto::app::parse_app(body, None).expect("valid app");
    AppVersion::next(None, spec, Timestamp::from_millis(version_ms))
}

fn task(app: &AppVersion, n: usize) -> Task {
    Task {
        id: InstanceId::new(&app.spec.id, &format!("00000000-0000-0000-0000-{n:012}")).task_id(1),
        app_id: app.spec.id.clone(),
        agent_id: AgentId("agent-1".into()),
        host: "h1".into(),
        state: TaskState::Running,
        goal: Goal::Running,
        ports: vec![31000 + (n % 1000) as u16],
        version: app.version,
        config_version: app.version_info.last_config_change_at,
        staged_at: Timestamp::from_millis(n as i64),
        started_at: Some(Timestamp::from_millis(n as i64 + 1)),
        message: None,
        unreachable_since: None,
        job: None,
    }
}

async fn exercise(url: &str, dir: &std::path::Path) {
    let store = Store::open(url, dir).await.expect("open store");
    let a1 = app("/shop/web", 1_000, 3);
    let mut a2 = a1.clone();
    a2.spec.instances = 5;
    let a2 = AppVersion::next(Some(&a1), a2.spec, Timestamp::from_millis(2_000));
    let b = app("/db", 1_500, 1);

    // One batch: versions, 2,000 tasks (multi-row upserts), a deployment, an agent.
    let mut batch = vec![
        Change::PutApp(Box::new(a1.clone())),
        Change::PutApp(Box::new(a2.clone())),
        Change::PutApp(Box::new(b.clone())),
    ];
    batch.extend((0..2000).map(|i| Change::PutTask(Box::new(task(&a2, i)))));
    let dep = Deployment {
        id: "d-1".into(),
        version: a2.version,
        affected_apps: vec![a2.spec.id.clone()],
        steps: vec![vec![DeploymentAction {
            action: dromos::domain::deployment::ActionKind::ScaleApplication,
            app: a2.spec.id.clone(),
        }]],
        original: [(a1.spec.id.clone(), a1.version)].into_iter().collect(),
        removed: vec![b.clone()],
        deadline: Some(dromos::domain::deployment::Deadline { seconds: 60, rollback: true }),
        mark: Some(dromos::domain::deployment::Mark { steps: 1, counted: 2, remaining: 3 }),
        last_progress_at: a2.version,
        reason: Some("rollback of d-0".into()),
    };
    batch.push(Change::PutDeployment(Box::new(dep.clone())));
    // An explicit group and two versions of it.
    let shop = PathId::parse_app("/shop").unwrap();
    let group =
        GroupSpec { id: shop.clone(), dependencies: vec![b.spec.id.clone()], enforce_role: true, version: a2.version };
    let gv = |ms: i64| GroupVersion {
        id: shop.clone(),
        version: Timestamp::from_millis(ms),
        groups: vec![group.clone()],
        apps: vec![a2.clone()],
    };
    batch.extend([
        Change::PutGroup(Box::new(group.clone())),
        Change::PutGroupVersion(Box::new(gv(10))),
        Change::PutGroupVersion(Box::new(gv(20))),
    ]);
    let agent = AgentRecord {
        info: AgentInfo {
            id: AgentId("agent-1".into()),
            hostname: "h1".into(),
            resources: dromos::domain::resources::parse_resources(
                "cpus:2;mem:1024;disk:100;ports:[31000-32000];cpus(batch):1",
            )
            .unwrap(),
            attributes: dromos::domain::resources::parse_attributes("rack:r1").unwrap(),
            containerizers: vec![dromos::domain::agent::Containerizer::Process],
        },
        mark: AgentMark::Unreachable,
        registered_at: Timestamp::from_millis(5),
        unreachable_since: Some(Timestamp::from_millis(7)),
    };
    batch.push(Change::PutAgent(Box::new(agent.clone())));
    store.apply(&batch).await.expect("commit batch");
    assert_eq!(store.count_tasks().await.unwrap(), 2000);

    let snap = store.load().await.unwrap();
    assert_eq!(snap.deployments, vec![dep], "a deployment round-trips with what it needs for a rollback");

    // Updates and deletes in a second batch.
    let mut t0 = task(&a2, 0);
    t0.state = TaskState::Killing;
    store
        .apply(&[
            Change::PutTask(Box::new(t0.clone())),
            Change::DeleteTask(task(&a2, 1).id),
            Change::DeleteApp(b.spec.id.clone()),
            Change::DeleteDeployment("d-1".into(), ::dromos::domain::deployment::DeploymentEnd::Finished),
        ])
        .await
        .unwrap();
    store.close().await;

    // Reopen (migrations are idempotent) and read everything back.
    let store = Store::open(url, dir).await.expect("reopen store");
    let snap = store.load().await.unwrap();
    assert_eq!(snap.apps.len(), 1);
    assert_eq!(snap.apps[0].0, a2, "current version round-trips exactly");
    assert_eq!(snap.versions, vec![(a1.spec.id.clone(), vec![a1.version, a2.version])]);
    assert_eq!(snap.tasks.len(), 1999);
    assert_eq!(snap.tasks.iter().find(|t| t.id == t0.id), Some(&t0));
    assert!(snap.deployments.is_empty());
    assert_eq!(snap.agents, vec![agent]);
    assert_eq!(store.app_version(&a1.spec.id, a1.version).await.unwrap(), Some(a1.clone()));
    assert_eq!(store.app_version(&a1.spec.id, Timestamp::from_millis(7)).await.unwrap(), None);
    assert_eq!(snap.groups, vec![group.clone()]);
    assert_eq!(snap.group_versions, vec![(shop.clone(), vec![Timestamp::from_millis(10), Timestamp::from_millis(20)])]);
    assert_eq!(store.group_version(&shop, Timestamp::from_millis(10)).await.unwrap(), Some(gv(10)));

    // Group version pruning, then the group goes with its versions.
    store.apply(&[Change::PruneGroupVersions(shop.clone(), Timestamp::from_millis(20))]).await.unwrap();
    assert_eq!(store.load().await.unwrap().group_versions[0].1, vec![Timestamp::from_millis(20)]);
    store.apply(&[Change::DeleteGroup(shop.clone())]).await.unwrap();
    let snap = store.load().await.unwrap();
    assert!(snap.groups.is_empty() && snap.group_versions.is_empty());

    // Version pruning.
    store.apply(&[Change::PruneVersions(a1.spec.id.clone(), a2.version)]).await.unwrap();
    assert_eq!(store.load().await.unwrap().versions[0].1, vec![a2.version]);

    // One batch that writes a task twice (a job's task reported running and finished
    // in one burst): the later write is what is stored, on either backend.
    let twice = app("/twice/app", 60_000, 1);
    let mut t = task(&twice, 7);
    t.state = TaskState::Staging;
    let mut later = t.clone();
    later.state = TaskState::Finished;
    store.apply(&[Change::PutTask(Box::new(t.clone())), Change::PutTask(Box::new(later))]).await.unwrap();
    let stored = store.load().await.unwrap().tasks.into_iter().find(|x| x.id == t.id).unwrap();
    assert_eq!(stored.state, TaskState::Finished);
    store.apply(&[Change::DeleteTask(t.id.clone())]).await.unwrap();

    // Fencing: a leader claims the store with its epoch; once a newer leader claimed
    // it, the older one's writes are refused whole, and so is an older claim.
    let fenced = app("/fence/app", 50_000, 1);
    let has = |snap: &dromos::store::Snapshot| snap.apps.iter().any(|(a, _)| a.spec.id == fenced.spec.id);
    let first = store.claim(5, "http://m1").await.unwrap();
    first.apply(&[Change::PutApp(Box::new(fenced.clone()))]).await.unwrap();
    let second = store.claim(7, "http://m2").await.unwrap();
    let refused =
        first.apply(&[Change::DeleteApp(fenced.spec.id.clone()), Change::PutTask(Box::new(task(&fenced, 1)))]).await;
    assert!(matches!(refused, Err(StoreError::Fenced { ours: 5, current: 7, .. })), "{refused:?}");
    // Commands that follow no write of their own check the fence alone.
    assert!(matches!(first.check_fence().await, Err(StoreError::Fenced { ours: 5, current: 7, .. })));
    let snap = store.load().await.unwrap();
    assert!(has(&snap) && snap.tasks.iter().all(|t| t.app_id != fenced.spec.id), "nothing of the refused batch");
    assert!(matches!(store.claim(6, "http://m1").await, Err(StoreError::Fenced { current: 7, .. })));
    assert!(matches!(store.claim(7, "http://m3").await, Err(StoreError::Fenced { .. })), "an epoch claims once");
    let before = store.leadership().await.unwrap();
    assert_eq!((before.epoch, before.holder.as_str()), (7, "http://m2"));
    second.check_fence().await.unwrap();
    second.apply(&[Change::DeleteApp(fenced.spec.id.clone())]).await.unwrap();
    assert!(!has(&store.load().await.unwrap()));
    assert_eq!(store.leadership().await.unwrap().revision, before.revision + 1, "each write counts");
    // A single master claims the epoch after the current one.
    let next = store.claim_next("http://m4").await.unwrap();
    assert_eq!(next.epoch(), Some(8));
    assert!(matches!(second.apply(&[Change::DeleteApp(fenced.spec.id.clone())]).await, Err(StoreError::Fenced { .. })));
    store.close().await;
}

#[tokio::test]
async fn store_round_trips_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    exercise("", dir.path()).await;
    assert!(dir.path().join("dromos.db").exists());
}

#[tokio::test]
async fn store_round_trips_on_postgres() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    exercise(&pg.url, dir.path()).await;
}

/// A follower's warm copy follows the store's writes while the leader does not answer
/// (and loads nothing while it does), and is handed over only at the revision the new
/// leader reads after claiming.
#[tokio::test]
async fn a_warm_copy_follows_the_store() {
    use dromos::master::{state::State, warm::WarmCopy};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open("", dir.path()).await.unwrap();
    let a1 = app("/warm/one", 1_000, 1);
    store.apply(&[Change::PutApp(Box::new(a1.clone())), Change::PutTask(Box::new(task(&a1, 1)))]).await.unwrap();
    let warm = WarmCopy::start(store.clone(), || async { false });
    async fn held_at(warm: &WarmCopy, revision: i64) {
        for _ in 0..200 {
            if warm.revision().await == Some(revision) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the warm copy never reached revision {revision}");
    }
    let first = store.leadership().await.unwrap().revision;
    held_at(&warm, first).await;
    // A write moves the revision; the copy loads again.
    let a2 = app("/warm/two", 2_000, 1);
    store.apply(&[Change::PutApp(Box::new(a2.clone())), Change::DeleteTask(task(&a1, 1).id)]).await.unwrap();
    let second = store.leadership().await.unwrap().revision;
    assert_eq!(second, first + 1);
    held_at(&warm, second).await;
    let (copy, published) = warm.take(second).await.expect("the copy at the current revision");
    assert_eq!(copy.apps.keys().collect::<Vec<_>>(), published.apps.keys().collect::<Vec<_>>());
    let loaded = State::from_snapshot(store.load().await.unwrap());
    assert_eq!(copy.apps.keys().collect::<Vec<_>>(), loaded.apps.keys().collect::<Vec<_>>());
    assert_eq!(copy.apps.len(), 2);
    assert!(copy.tasks.is_empty() && loaded.tasks.is_empty());
    // While the leader answers, a follower loads nothing.
    let idle = WarmCopy::start(store.clone(), || async { true });
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(idle.revision().await, None);
    // A copy behind the revision read after the claim is not used.
    let warm = WarmCopy::start(store.clone(), || async { false });
    held_at(&warm, second).await;
    assert!(warm.take(second + 1).await.is_none());
}

#[test]
fn dromos_serves_from_postgres_and_survives_a_crash() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let mut d = Dromos::start(dir.path(), &["--store", &pg.url]);
    let body = json!({"id": "/pg/app", "cmd": "exec sleep 1000", "instances": 2, "cpus": 0.01, "mem": 4});
    assert_eq!(d.call("POST", "/v2/apps", Some(&body)).status, 201);
    wait_for("2 running", Duration::from_secs(30), || (d.app("/pg/app")["tasksRunning"] == 2).then_some(()));
    let live = d.live_sandboxes();
    d.restart();
    assert_eq!(d.app("/pg/app")["instances"], 2);
    wait_for("2 running after restart", Duration::from_secs(30), || {
        (d.app("/pg/app")["tasksRunning"] == 2).then_some(())
    });
    assert_eq!(d.live_sandboxes(), live, "adopted, not relaunched");
}

/// Reliability case 19: with PostgreSQL down, writes answer 503 with `Retry-After` and
/// change nothing, reads go on from memory, and all resumes once it is back.
#[test]
fn writes_wait_for_postgres_and_resume() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let d = Dromos::start(dir.path(), &["--store", &pg.url, "--no-agent"]);
    let app = |id: &str| json!({"id": id, "cmd": "sleep 1", "instances": 0});
    assert_eq!(d.call("POST", "/v2/apps", Some(&app("/before"))).status, 201);
    pg.stop();
    let r = d.call("POST", "/v2/apps", Some(&app("/during")));
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.header("Retry-After"), Some("1"));
    assert_eq!(d.call("GET", "/v2/apps/before", None).status, 200, "reads go on");
    assert_eq!(d.call("GET", "/v2/apps/during", None).status, 404, "the refused write changed nothing");
    pg.start_again();
    wait_for("writes to resume", Duration::from_secs(60), || {
        (d.call("POST", "/v2/apps", Some(&app("/after"))).status == 201).then_some(())
    });
    assert_eq!(d.call("GET", "/v2/apps/during", None).status, 404);
    assert_eq!(d.get("/v2/apps")["apps"].as_array().unwrap().len(), 2);
}
