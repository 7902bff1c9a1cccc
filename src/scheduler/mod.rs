//! The functional core: pure, synchronous decisions over a snapshot and an injected `now`.
//!
//! - [`reconcile`]: desired vs actual per app -> how many to launch, which tasks to kill.
//! - [`placement`]: fits launch requests into agents' free resources and host ports.
//! - [`constraints`]: Marathon's placement constraints (UNIQUE, GROUP_BY, ...).
//! - [`drf`]: whose turn it is between roles (weighted Dominant Resource Fairness, quotas).
//! - [`rolling`]: rolling-replacement arithmetic (`upgradeStrategy`).
//! - [`deploy`]: deployment plans (the steps from one app tree to another).
//! - [`backoff`]: Marathon's launch backoff after failed tasks.
//! - [`jobs`]: the job scheduler's decisions (due times and missed runs, concurrency,
//!   retries, dependencies).
//!
//! The master (imperative shell) gathers a snapshot, calls these, re-checks the result
//! against current state and commits it. Nothing here does I/O, reads the clock or
//! draws random numbers, so everything is unit-tested and benchmarked directly.

pub mod backoff;
pub mod constraints;
pub mod deploy;
pub mod drf;
pub mod jobs;
pub mod placement;
pub mod reconcile;
pub mod rolling;

pub use backoff::Backoff;
pub use constraints::{AgentFields, ConstraintTracker};
pub use drf::{Fairness, RolePolicy};
pub use placement::{place, AgentCapacity, LaunchRequest, PlacementResult, PortPool};
pub use reconcile::{reconcile_app, AppPlan};
