//! `dromos haproxy`: the load balancer sidecar (marathon-lb's job, reference
//! haproxy.md).
//!
//! - [`model`]: the input, read from Marathon's app JSON: apps, service ports, health
//!   checks, labels, routable tasks.
//! - [`labels`]: marathon-lb's `HAPROXY_*` labels, validated into services.
//! - [`template`]: the overridable config fragments and their validation.
//! - [`render`]: the pure generator, model to HAProxy 2.6 config text (deterministic),
//!   with the server lines apart so changes of membership can skip the reload.

pub mod labels;
pub mod model;
pub mod render;
pub mod template;
