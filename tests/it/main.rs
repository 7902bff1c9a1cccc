//! The integration suite: one test binary. Every test starts its own real servers
//! (dromos on port 0 in a temp dir, PostgreSQL via initdb + pg_ctl) and real processes.

mod agents;
mod apps;
mod bad_input;
mod crash;
mod docker;
mod events;
mod groups;
mod ha;
mod haproxy;
mod health;
mod jobs;
mod lb;
mod spec;
mod store;
mod support;
mod web;
