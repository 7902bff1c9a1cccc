//! dromos: a Marathon/Chronos-compatible cluster scheduler and PaaS in one binary.
//!
//! Crate map (DESIGN.md has the full picture; dependencies point up this list):
//!
//! - [`domain`]: pure types and invariants (ids, app definitions, tasks, agents,
//!   resources and roles, groups, deployments, jobs and their schedules, Docker option
//!   rules).
//! - [`scheduler`]: the functional core: reconcile, placement, constraints, DRF between
//!   roles, backoff, deployment plans and rolling upgrades, job due times. Pure.
//! - [`store`]: the only module with SQL (SQLite or PostgreSQL).
//! - [`master`]: the imperative shell: single write path, app and job scheduler loops,
//!   deployments, health-check kills, agent links, liveness and agent messages.
//! - [`agent`]: runs tasks as supervised processes or Docker containers, checkpoints
//!   and recovers them; the link to a remote master.
//! - [`api`]: the axum HTTP API (Marathon `/v2`, Chronos `/scheduler` and
//!   `/v1/scheduler`, Metronome `/v1/jobs`, `/v1/agents`, the agent stream, `/ping`,
//!   `/metrics`).
//! - [`events`]: the event bus behind `/v2/events` (numbered, replayable, never blocks
//!   the write path).
//! - [`proxy`]: `dromos haproxy`, the HAProxy config generator and sidecar.
//! - [`config`]: flags > `DROMOS_*` env > config file > defaults.
//! - [`failpoint`]: named crash points for the fault tests.
//! - [`server`]: wiring for `dromos serve` and `dromos agent`.

pub mod agent;
pub mod api;
pub mod config;
pub mod domain;
pub mod events;
pub mod failpoint;
pub mod files;
pub mod master;
pub mod proxy;
pub mod scheduler;
pub mod server;
pub mod store;
pub mod web;
