//! dromos: a Marathon/Chronos-compatible cluster scheduler and PaaS in one binary.
//!
//! Crate map (DESIGN.md has the full picture; dependencies point up this list):
//!
//! - [`domain`]: pure types and invariants (ids, app definitions, tasks, agents).
//! - [`scheduler`]: the functional core: reconcile, placement, backoff. Pure.
//! - [`store`]: the only module with SQL (SQLite or PostgreSQL).
//! - [`master`]: the imperative shell: single write path, scheduler loop, agent messages.
//! - [`agent`]: runs tasks as supervised processes, checkpoints and recovers them.
//! - [`api`]: the axum HTTP API (Marathon `/v2`, `/ping`, `/metrics`).
//! - [`config`]: flags > `DROMOS_*` env > config file > defaults.
//! - [`server`]: wiring for `dromos serve`.

pub mod agent;
pub mod api;
pub mod config;
pub mod domain;
pub mod master;
pub mod scheduler;
pub mod server;
pub mod store;
