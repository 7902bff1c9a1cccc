//! The store: the only module that speaks SQL.
//!
//! One set of queries, built with sea-query and rendered for SQLite (the embedded
//! default) or PostgreSQL (shared state for several masters). Writes arrive as a batch
//! of [`Change`]s and are committed in one transaction: the master's write path groups
//! many API writes, placements and status updates into each batch, because the commit
//! (fsync) is what costs. A change is acknowledged only after its batch committed.
//!
//! SQLite runs in WAL mode with `synchronous=FULL`, a busy timeout, and `BEGIN
//! IMMEDIATE` for write transactions, so a read-then-write never fails half way.

use crate::domain::job::{JobName, JobRecord, JobRun};
use crate::domain::task::TaskFailure;
use crate::domain::{
    AgentId, AgentRecord, AppVersion, Deployment, GroupSpec, GroupVersion, PathId, Task, TaskId, Timestamp,
};
use sea_query::{Alias, Expr, InsertStatement, OnConflict, Order, PostgresQueryBuilder, Query, SqliteQueryBuilder};
use sea_query_binder::SqlxBinder;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::Row;
use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;
use thiserror::Error;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Rows per multi-row INSERT: stays under SQLite's bind-parameter limit.
const INSERT_CHUNK: usize = 500;

/// How many versions of an app are kept (Marathon's `--zk_max_versions` default).
pub const MAX_VERSIONS: usize = 50;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored {what} '{key}' is unreadable: {source}")]
    Corrupt { what: &'static str, key: String, source: serde_json::Error },
    #[error("unsupported store URL '{0}': use a file path, sqlite://PATH or postgres://...")]
    BadUrl(String),
    /// A newer leader claimed the store: this master's writes are refused (fencing).
    #[error(
        "the store is led by epoch {current} ({holder}); this master's epoch {ours} is older, so it no longer leads"
    )]
    Fenced { ours: i64, current: i64, holder: String },
    /// Another master without etcd uses the same PostgreSQL database.
    #[error(
        "another dromos master uses this PostgreSQL database; to run several masters on one database, give each --etcd"
    )]
    InUse,
}

type Result<T> = std::result::Result<T, StoreError>;

/// One durable change. The master's write path produces these; `apply` commits a batch.
#[derive(Debug, Clone)]
pub enum Change {
    /// Make `version` the app's current definition and add it to its history.
    PutApp(Box<AppVersion>),
    /// Remove an app with all its versions.
    DeleteApp(PathId),
    /// Drop versions older than the given one (history is capped at [`MAX_VERSIONS`]).
    PruneVersions(PathId, Timestamp),
    SetLastFailure(Box<TaskFailure>),
    PutTask(Box<Task>),
    DeleteTask(TaskId),
    PutDeployment(Box<Deployment>),
    /// Forget a deployment; why it ended is for its events.
    DeleteDeployment(String, crate::domain::deployment::DeploymentEnd),
    PutAgent(Box<AgentRecord>),
    /// Forget an agent (its directory was wiped and it came back under a new id).
    DeleteAgent(AgentId),
    /// Create or change an explicit group.
    PutGroup(Box<GroupSpec>),
    /// Remove an explicit group with its versions.
    DeleteGroup(PathId),
    PutGroupVersion(Box<GroupVersion>),
    /// Drop a group's versions older than the given one.
    PruneGroupVersions(PathId, Timestamp),
    /// Create or change a job (definition and status).
    PutJob(Box<JobRecord>),
    /// Remove a job with its runs.
    DeleteJob(JobName),
    /// Record a run or its progress.
    PutRun(Box<JobRun>),
    /// Forget a finished run (history is capped per job).
    DeleteRun(JobName, Timestamp, u32),
}

/// Everything the master needs in memory after a start or a failover.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub apps: Vec<(AppVersion, Option<TaskFailure>)>,
    /// Version timestamps per app, oldest first.
    pub versions: Vec<(PathId, Vec<Timestamp>)>,
    pub tasks: Vec<Task>,
    pub deployments: Vec<Deployment>,
    pub agents: Vec<AgentRecord>,
    pub groups: Vec<GroupSpec>,
    /// Version timestamps per group, oldest first.
    pub group_versions: Vec<(PathId, Vec<Timestamp>)>,
    pub jobs: Vec<JobRecord>,
    /// Every stored run, in (job, due, attempt) order.
    pub job_runs: Vec<JobRun>,
}

#[derive(Clone)]
enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

#[derive(Clone)]
pub struct Store {
    backend: Backend,
    /// The epoch this store's writes assert ([`Store::claim`]): each write transaction
    /// first checks that the store's leadership row still holds it. `None` for a store
    /// that only reads or a tool that writes without leading.
    fence: Option<i64>,
}

/// The store's leadership row: which leader may write, and how many write transactions
/// were committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    pub epoch: i64,
    pub holder: String,
    pub revision: i64,
}

impl Leadership {
    /// Why this row refuses a write or claim that asserts epoch `ours`.
    fn refusing(self, ours: i64) -> StoreError {
        StoreError::Fenced { ours, current: self.epoch, holder: self.holder }
    }
}

/// Held while a master without etcd uses a PostgreSQL database: a session advisory lock
/// on a connection of its own, released when the process (or connection) ends.
pub struct SingleMaster {
    _conn: Option<sqlx::PgConnection>,
}

/// The advisory lock key of dromos masters on one PostgreSQL database.
const MASTER_LOCK: i64 = 0x6472_6f6d_6f73;

fn t(name: &str) -> Alias {
    Alias::new(name)
}

/// A statement of the one query set, rendered per backend at execution time.
enum Stmt {
    Insert(InsertStatement),
    Delete(sea_query::DeleteStatement),
    Update(sea_query::UpdateStatement),
}

fn json<T: serde::Serialize>(v: &T) -> String {
    // Serialising our own plain data types (strings, numbers, maps) cannot fail.
    serde_json::to_string(v).expect("domain types serialise to JSON")
}

fn upsert(
    table: &str,
    key: &[&str],
    cols: &[&str],
    rows: impl Iterator<Item = Vec<sea_query::SimpleExpr>>,
) -> Option<InsertStatement> {
    let mut q = Query::insert();
    q.into_table(t(table)).columns(cols.iter().map(|c| t(c)));
    let mut any = false;
    for r in rows {
        q.values_panic(r);
        any = true;
    }
    let update: Vec<Alias> = cols.iter().filter(|c| !key.contains(c)).map(|c| t(c)).collect();
    q.on_conflict(OnConflict::columns(key.iter().map(|c| t(c))).update_columns(update).to_owned());
    any.then_some(q)
}

/// Turns a batch of changes into statements. Consecutive task writes (the bulk of any
/// busy batch) become multi-row upserts.
fn statements(changes: &[Change]) -> Vec<Stmt> {
    let mut out = Vec::new();
    // A task written and then deleted in the same batch (a terminal state reported and
    // the task dropped) needs only the delete.
    let deleted_at: HashMap<&TaskId, usize> = changes
        .iter()
        .enumerate()
        .filter_map(|(i, c)| match c {
            Change::DeleteTask(id) => Some((id, i)),
            _ => None,
        })
        .collect();
    let mut i = 0;
    while i < changes.len() {
        if let Change::PutTask(_) = &changes[i] {
            let start = i;
            while i < changes.len() && matches!(changes[i], Change::PutTask(_)) && i - start < INSERT_CHUNK {
                i += 1;
            }
            // One row per task: the last write of it in the run wins (as one upsert after
            // another would; PostgreSQL refuses one statement that upserts a row twice).
            let last: HashMap<&TaskId, usize> = changes[start..i]
                .iter()
                .enumerate()
                .filter_map(|(k, c)| match c {
                    Change::PutTask(task) => Some((&task.id, k)),
                    _ => None,
                })
                .collect();
            let rows = changes[start..i].iter().enumerate().filter_map(|(k, c)| match c {
                Change::PutTask(task) if last.get(&task.id) != Some(&k) => None,
                Change::PutTask(task) if deleted_at.get(&task.id).is_some_and(|&d| d > start + k) => None,
                Change::PutTask(task) => Some(vec![
                    task.id.as_str().into(),
                    task.app_id.to_string().into(),
                    task.agent_id.0.clone().into(),
                    task.state.name().into(),
                    json(task).into(),
                ]),
                _ => None,
            });
            out.extend(
                upsert("tasks", &["id"], &["id", "app_id", "agent_id", "state", "data"], rows).map(Stmt::Insert),
            );
            continue;
        }
        match &changes[i] {
            Change::PutApp(v) => {
                let id = v.spec.id.to_string();
                let row = vec![id.clone().into(), v.version.to_string().into(), json(v).into()];
                out.extend(upsert("apps", &["id"], &["id", "version", "data"], std::iter::once(row)).map(Stmt::Insert));
                let row = vec![id.into(), v.version.to_string().into(), json(v).into()];
                out.extend(
                    upsert(
                        "app_versions",
                        &["app_id", "version"],
                        &["app_id", "version", "data"],
                        std::iter::once(row),
                    )
                    .map(Stmt::Insert),
                );
            }
            Change::DeleteApp(id) => {
                out.push(Stmt::Delete(
                    Query::delete().from_table(t("apps")).and_where(Expr::col(t("id")).eq(id.to_string())).to_owned(),
                ));
                out.push(Stmt::Delete(
                    Query::delete()
                        .from_table(t("app_versions"))
                        .and_where(Expr::col(t("app_id")).eq(id.to_string()))
                        .to_owned(),
                ));
            }
            Change::PruneVersions(id, keep_from) => out.push(Stmt::Delete(
                Query::delete()
                    .from_table(t("app_versions"))
                    .and_where(Expr::col(t("app_id")).eq(id.to_string()))
                    .and_where(Expr::col(t("version")).lt(keep_from.to_string()))
                    .to_owned(),
            )),
            Change::SetLastFailure(f) => out.push(Stmt::Update(
                Query::update()
                    .table(t("apps"))
                    .value(t("last_failure"), json(f))
                    .and_where(Expr::col(t("id")).eq(f.app_id.to_string()))
                    .to_owned(),
            )),
            Change::DeleteTask(id) => out.push(Stmt::Delete(
                Query::delete().from_table(t("tasks")).and_where(Expr::col(t("id")).eq(id.as_str())).to_owned(),
            )),
            Change::PutDeployment(d) => {
                let row = vec![d.id.clone().into(), json(d).into()];
                out.extend(upsert("deployments", &["id"], &["id", "data"], std::iter::once(row)).map(Stmt::Insert));
            }
            Change::DeleteDeployment(id, _) => out.push(Stmt::Delete(
                Query::delete().from_table(t("deployments")).and_where(Expr::col(t("id")).eq(id.as_str())).to_owned(),
            )),
            Change::PutAgent(a) => {
                let row = vec![a.info.id.0.clone().into(), json(a).into()];
                out.extend(upsert("agents", &["id"], &["id", "data"], std::iter::once(row)).map(Stmt::Insert));
            }
            Change::DeleteAgent(id) => out.push(Stmt::Delete(
                Query::delete().from_table(t("agents")).and_where(Expr::col(t("id")).eq(id.0.as_str())).to_owned(),
            )),
            Change::PutGroup(g) => {
                let row = vec![g.id.to_string().into(), json(g).into()];
                out.extend(upsert("groups", &["id"], &["id", "data"], std::iter::once(row)).map(Stmt::Insert));
            }
            Change::DeleteGroup(id) => {
                out.push(Stmt::Delete(
                    Query::delete().from_table(t("groups")).and_where(Expr::col(t("id")).eq(id.to_string())).to_owned(),
                ));
                out.push(Stmt::Delete(
                    Query::delete()
                        .from_table(t("group_versions"))
                        .and_where(Expr::col(t("group_id")).eq(id.to_string()))
                        .to_owned(),
                ));
            }
            Change::PutGroupVersion(g) => {
                let row = vec![g.id.to_string().into(), g.version.to_string().into(), json(g).into()];
                out.extend(
                    upsert(
                        "group_versions",
                        &["group_id", "version"],
                        &["group_id", "version", "data"],
                        std::iter::once(row),
                    )
                    .map(Stmt::Insert),
                );
            }
            Change::PruneGroupVersions(id, keep_from) => out.push(Stmt::Delete(
                Query::delete()
                    .from_table(t("group_versions"))
                    .and_where(Expr::col(t("group_id")).eq(id.to_string()))
                    .and_where(Expr::col(t("version")).lt(keep_from.to_string()))
                    .to_owned(),
            )),
            Change::PutJob(j) => {
                let row = vec![j.spec.name.as_str().into(), json(j).into()];
                out.extend(upsert("jobs", &["name"], &["name", "data"], std::iter::once(row)).map(Stmt::Insert));
            }
            Change::DeleteJob(name) => {
                for (table, col) in [("jobs", "name"), ("job_runs", "job")] {
                    out.push(Stmt::Delete(
                        Query::delete().from_table(t(table)).and_where(Expr::col(t(col)).eq(name.as_str())).to_owned(),
                    ));
                }
            }
            Change::PutRun(r) => {
                let row = vec![r.job.as_str().into(), r.due.millis().into(), (r.attempt as i64).into(), json(r).into()];
                out.extend(
                    upsert(
                        "job_runs",
                        &["job", "due", "attempt"],
                        &["job", "due", "attempt", "data"],
                        std::iter::once(row),
                    )
                    .map(Stmt::Insert),
                );
            }
            Change::DeleteRun(job, due, attempt) => out.push(Stmt::Delete(
                Query::delete()
                    .from_table(t("job_runs"))
                    .and_where(Expr::col(t("job")).eq(job.as_str()))
                    .and_where(Expr::col(t("due")).eq(due.millis()))
                    .and_where(Expr::col(t("attempt")).eq(*attempt as i64))
                    .to_owned(),
            )),
            Change::PutTask(_) => unreachable!("handled above"),
        }
        i += 1;
    }
    out
}

fn parse<T: serde::de::DeserializeOwned>(what: &'static str, key: &str, data: &str) -> Result<T> {
    serde_json::from_str(data).map_err(|source| StoreError::Corrupt { what, key: key.to_string(), source })
}

/// The key of a version table's row: an app id (`app`) or a group id, and a version.
fn version_key(id: String, v: String, app: bool) -> Result<(PathId, Timestamp)> {
    let corrupt = |what: &'static str, msg: String| StoreError::Corrupt {
        what,
        key: id.clone(),
        source: serde::de::Error::custom(msg),
    };
    let parsed = match app {
        true => PathId::parse_app(&id),
        false => PathId::parse_relative(&id, &PathId::root()),
    };
    let path = parsed.map_err(|e| corrupt("id", e.to_string()))?;
    let ts = Timestamp::parse(&v).ok_or_else(|| corrupt("version", "bad timestamp".into()))?;
    Ok((path, ts))
}

/// Runs `$body` once for whichever backend is configured, with `$builder` bound to its
/// sea-query builder (a constructor closure): the statements are the same, only their
/// rendering differs.
macro_rules! with_backend {
    ($self:expr, |$pool:ident, $builder:ident| $body:expr) => {
        match &$self.backend {
            Backend::Sqlite($pool) => {
                let $builder = || SqliteQueryBuilder;
                $body
            }
            Backend::Postgres($pool) => {
                let $builder = || PostgresQueryBuilder;
                $body
            }
        }
    };
}

macro_rules! fetch_rows {
    ($pool:expr, $builder:expr, $select:expr) => {{
        let (sql, values) = $select.build_sqlx($builder());
        sqlx::query_with(&sql, values).fetch_all($pool).await?
    }};
}

impl Store {
    /// Opens (creating if needed) the store and applies pending migrations.
    /// `url` is `postgres://...`, `sqlite://PATH`, or empty for `<data_dir>/dromos.db`.
    pub async fn open(url: &str, data_dir: &Path) -> Result<Store> {
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool =
                PgPoolOptions::new().max_connections(8).acquire_timeout(Duration::from_secs(10)).connect(url).await?;
            POSTGRES_MIGRATIONS.run(&pool).await?;
            Backend::Postgres(pool)
        } else {
            let path = match url {
                "" => data_dir.join("dromos.db"),
                u if u.starts_with("sqlite://") => u.trim_start_matches("sqlite://").into(),
                u if u.contains("://") => return Err(StoreError::BadUrl(u.to_string())),
                u => u.into(),
            };
            let opts = SqliteConnectOptions::from_str("sqlite://")?
                .filename(&path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(10));
            let pool = SqlitePoolOptions::new().max_connections(4).connect_with(opts).await?;
            SQLITE_MIGRATIONS.run(&pool).await?;
            Backend::Sqlite(pool)
        };
        Ok(Store { backend, fence: None })
    }

    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Commits a batch of changes in one transaction. Returns only once it is durable.
    pub async fn apply(&self, changes: &[Change]) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let stmts = statements(changes);
        with_backend!(self, |pool, builder| {
            let mut tx = match &self.backend {
                Backend::Sqlite(_) => pool.begin_with("BEGIN IMMEDIATE").await?,
                Backend::Postgres(_) => pool.begin().await?,
            };
            let bump = Query::update()
                .table(t("leadership"))
                .value(t("revision"), Expr::col(t("revision")).add(1))
                .and_where(Expr::col(t("id")).eq(1))
                .and_where_option(self.fence.map(|e| Expr::col(t("epoch")).eq(e)))
                .to_owned();
            let (sql, values) = bump.build_sqlx(builder());
            let bumped = sqlx::query_with(&sql, values).execute(&mut *tx).await?.rows_affected();
            if let (Some(ours), 0) = (self.fence, bumped) {
                drop(tx);
                return Err(self.leadership().await?.refusing(ours));
            }
            for s in &stmts {
                let (sql, values) = match s {
                    Stmt::Insert(q) => q.build_sqlx(builder()),
                    Stmt::Delete(q) => q.build_sqlx(builder()),
                    Stmt::Update(q) => q.build_sqlx(builder()),
                };
                sqlx::query_with(&sql, values).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Fails with [`StoreError::Fenced`] if a newer leader claimed the store: for
    /// commands that follow no write of their own (kill retries, acknowledgements).
    pub async fn check_fence(&self) -> Result<()> {
        let Some(ours) = self.fence else { return Ok(()) };
        let now = self.leadership().await?;
        match now.epoch == ours {
            true => Ok(()),
            false => Err(now.refusing(ours)),
        }
    }

    /// The store's leadership row.
    pub async fn leadership(&self) -> Result<Leadership> {
        let q = Query::select()
            .columns([t("epoch"), t("holder"), t("revision")])
            .from(t("leadership"))
            .and_where(Expr::col(t("id")).eq(1))
            .to_owned();
        with_backend!(self, |pool, builder| {
            let (sql, values) = q.build_sqlx(builder());
            let r = sqlx::query_with(&sql, values).fetch_one(pool).await?;
            Ok(Leadership { epoch: r.try_get(0)?, holder: r.try_get(1)?, revision: r.try_get(2)? })
        })
    }

    /// Claims the store for a leader that won with `epoch`, if no leader with that
    /// epoch or a newer one claimed it: returns the store with its writes fenced by
    /// `epoch`. From then on, writes of older leaders fail with [`StoreError::Fenced`].
    pub async fn claim(&self, epoch: i64, holder: &str) -> Result<Store> {
        let q = Query::update()
            .table(t("leadership"))
            .value(t("epoch"), epoch)
            .value(t("holder"), holder)
            .and_where(Expr::col(t("id")).eq(1))
            .and_where(Expr::col(t("epoch")).lt(epoch))
            .to_owned();
        let claimed = with_backend!(self, |pool, builder| {
            let (sql, values) = q.build_sqlx(builder());
            sqlx::query_with(&sql, values).execute(pool).await?.rows_affected()
        });
        if claimed == 0 {
            return Err(self.leadership().await?.refusing(epoch));
        }
        Ok(Store { backend: self.backend.clone(), fence: Some(epoch) })
    }

    /// Claims the store with the epoch after the current one: a master without etcd is
    /// the only master, and each of its starts leads anew.
    pub async fn claim_next(&self, holder: &str) -> Result<Store> {
        loop {
            let now = self.leadership().await?;
            match self.claim(now.epoch + 1, holder).await {
                Err(StoreError::Fenced { .. }) => continue, // claimed meanwhile: read again
                r => return r,
            }
        }
    }

    /// The epoch this store's writes assert, if any.
    pub fn epoch(&self) -> Option<i64> {
        self.fence
    }

    /// Makes sure no other master uses the database: on PostgreSQL, a master without
    /// etcd (`exclusive`) holds an exclusive advisory lock and masters with etcd a
    /// shared one, so a second master without etcd, or one without etcd beside masters
    /// with it, is refused ([`StoreError::InUse`]). SQLite's data dir lock does this for
    /// the embedded store.
    pub async fn lock_masters(&self, exclusive: bool) -> Result<SingleMaster> {
        let Backend::Postgres(pool) = &self.backend else {
            return Ok(SingleMaster { _conn: None });
        };
        let mut conn = pool.acquire().await?.detach();
        let sql = match exclusive {
            true => "SELECT pg_try_advisory_lock($1)",
            false => "SELECT pg_try_advisory_lock_shared($1)",
        };
        let got: bool = sqlx::query_scalar(sql).bind(MASTER_LOCK).fetch_one(&mut conn).await?;
        match got {
            true => Ok(SingleMaster { _conn: Some(conn) }),
            false => Err(StoreError::InUse),
        }
    }

    /// Reads the whole state (start-up and failover).
    pub async fn load(&self) -> Result<Snapshot> {
        let mut snap = Snapshot::default();
        let apps = Query::select().columns([t("id"), t("data"), t("last_failure")]).from(t("apps")).to_owned();
        let versions = Query::select()
            .columns([t("app_id"), t("version")])
            .from(t("app_versions"))
            .order_by(t("app_id"), Order::Asc)
            .order_by(t("version"), Order::Asc)
            .to_owned();
        let tasks = Query::select().columns([t("id"), t("data")]).from(t("tasks")).to_owned();
        let deps = Query::select().columns([t("id"), t("data")]).from(t("deployments")).to_owned();
        let agents = Query::select().columns([t("id"), t("data")]).from(t("agents")).to_owned();
        let jobs = Query::select().columns([t("name"), t("data")]).from(t("jobs")).to_owned();
        let runs = Query::select()
            .columns([t("job"), t("data")])
            .from(t("job_runs"))
            .order_by(t("job"), Order::Asc)
            .order_by(t("due"), Order::Asc)
            .order_by(t("attempt"), Order::Asc)
            .to_owned();
        let groups = Query::select().columns([t("id"), t("data")]).from(t("groups")).to_owned();
        let group_versions = Query::select()
            .columns([t("group_id"), t("version")])
            .from(t("group_versions"))
            .order_by(t("group_id"), Order::Asc)
            .order_by(t("version"), Order::Asc)
            .to_owned();
        with_backend!(self, |pool, builder| {
            for r in fetch_rows!(pool, builder, apps) {
                let id: String = r.try_get(0)?;
                let app: AppVersion = parse("app", &id, &r.try_get::<String, _>(1)?)?;
                let failure = match r.try_get::<Option<String>, _>(2)? {
                    Some(f) => Some(parse("last task failure", &id, &f)?),
                    None => None,
                };
                snap.apps.push((app, failure));
            }
            for r in fetch_rows!(pool, builder, versions) {
                let (app, ts) = version_key(r.try_get(0)?, r.try_get(1)?, true)?;
                match snap.versions.last_mut() {
                    Some((last, list)) if *last == app => list.push(ts),
                    _ => snap.versions.push((app, vec![ts])),
                }
            }
            for r in fetch_rows!(pool, builder, groups) {
                let id: String = r.try_get(0)?;
                snap.groups.push(parse("group", &id, &r.try_get::<String, _>(1)?)?);
            }
            for r in fetch_rows!(pool, builder, group_versions) {
                let (group, ts) = version_key(r.try_get(0)?, r.try_get(1)?, false)?;
                match snap.group_versions.last_mut() {
                    Some((last, list)) if *last == group => list.push(ts),
                    _ => snap.group_versions.push((group, vec![ts])),
                }
            }
            for r in fetch_rows!(pool, builder, tasks) {
                let id: String = r.try_get(0)?;
                snap.tasks.push(parse("task", &id, &r.try_get::<String, _>(1)?)?);
            }
            for r in fetch_rows!(pool, builder, deps) {
                let id: String = r.try_get(0)?;
                snap.deployments.push(parse("deployment", &id, &r.try_get::<String, _>(1)?)?);
            }
            for r in fetch_rows!(pool, builder, jobs) {
                let name: String = r.try_get(0)?;
                snap.jobs.push(parse("job", &name, &r.try_get::<String, _>(1)?)?);
            }
            for r in fetch_rows!(pool, builder, runs) {
                let job: String = r.try_get(0)?;
                snap.job_runs.push(parse("job run", &job, &r.try_get::<String, _>(1)?)?);
            }
            for r in fetch_rows!(pool, builder, agents) {
                let id: String = r.try_get(0)?;
                // The registry is soft state that agents re-send on registration: an entry
                // this version cannot read (an older format) is dropped, not fatal.
                match parse::<AgentRecord>("agent", &id, &r.try_get::<String, _>(1)?) {
                    Ok(a) => snap.agents.push(a),
                    Err(e) => tracing::warn!("ignoring stored agent: {e}"),
                }
            }
        });
        Ok(snap)
    }

    /// One stored version of an app.
    pub async fn app_version(&self, app: &PathId, version: Timestamp) -> Result<Option<AppVersion>> {
        let q = Query::select()
            .column(t("data"))
            .from(t("app_versions"))
            .and_where(Expr::col(t("app_id")).eq(app.to_string()))
            .and_where(Expr::col(t("version")).eq(version.to_string()))
            .to_owned();
        with_backend!(self, |pool, builder| {
            let rows = fetch_rows!(pool, builder, q);
            match rows.first() {
                Some(r) => Ok(Some(parse("app version", &app.to_string(), &r.try_get::<String, _>(0)?)?)),
                None => Ok(None),
            }
        })
    }

    /// One stored version of a group.
    pub async fn group_version(&self, group: &PathId, version: Timestamp) -> Result<Option<GroupVersion>> {
        let q = Query::select()
            .column(t("data"))
            .from(t("group_versions"))
            .and_where(Expr::col(t("group_id")).eq(group.to_string()))
            .and_where(Expr::col(t("version")).eq(version.to_string()))
            .to_owned();
        with_backend!(self, |pool, builder| {
            let rows = fetch_rows!(pool, builder, q);
            match rows.first() {
                Some(r) => Ok(Some(parse("group version", &group.to_string(), &r.try_get::<String, _>(0)?)?)),
                None => Ok(None),
            }
        })
    }

    /// Number of task rows (used by tests and benchmarks to check what is on disk).
    pub async fn count_tasks(&self) -> Result<i64> {
        let q = Query::select().expr(Expr::col(t("id")).count()).from(t("tasks")).to_owned();
        with_backend!(self, |pool, builder| {
            let rows = fetch_rows!(pool, builder, q);
            Ok(rows.first().map(|r| r.try_get::<i64, _>(0)).transpose()?.unwrap_or(0))
        })
    }

    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(p) => p.close().await,
            Backend::Postgres(p) => p.close().await,
        }
    }
}
