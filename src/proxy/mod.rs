//! `dromos haproxy`: the load balancer sidecar (marathon-lb's job, reference
//! haproxy.md).
//!
//! - [`model`]: the input, read from Marathon's app JSON: apps, service ports, health
//!   checks, labels, routable tasks.
//! - [`labels`]: marathon-lb's `HAPROXY_*` labels, validated into services.
//! - [`template`]: the overridable config fragments and their validation.
//! - [`render`]: the pure generator, model to HAProxy 2.6 config text (deterministic),
//!   with the server lines apart so changes of membership can skip the reload.
//! - [`runtime`]: the pure plan from what HAProxy runs to a new render: nothing,
//!   runtime API operations, or a reload.
//! - [`haproxy`]: the real HAProxy: files, `haproxy -c`, the master-worker process and
//!   its sockets.
//! - [`client`]: HTTP to the master (the apps, the event stream, reports).
//! - [`sidecar`]: the loop of `dromos haproxy` that ties them together.

pub mod client;
pub mod haproxy;
pub mod labels;
pub mod model;
pub mod render;
pub mod runtime;
pub mod sidecar;
pub mod template;
