//! Task JSON (reference section 7.1) and Marathon's text/plain task list (7.3).

use crate::domain::health::Health;
use crate::domain::{AppSpec, Task};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// A task as Marathon shows it; `health` is the state of each of its app's health
/// checks that has reported (`healthCheckResults`).
pub fn task_json(t: &Task, service_ports: &[u16], health: Option<&BTreeMap<u16, Health>>) -> Value {
    let instance = t.id.instance_id();
    let results: Vec<Value> = health
        .into_iter()
        .flat_map(|h| h.values())
        .map(|h| {
            let mut v = serde_json::to_value(h).unwrap_or_else(|_| json!({}));
            v["instanceId"] = json!(instance.as_str());
            v
        })
        .collect();
    let mut v = json!({
        "id": t.id,
        "appId": t.app_id,
        "host": t.host,
        "slaveId": t.agent_id,
        "state": t.state.name(),
        "ports": t.ports,
        "servicePorts": service_ports,
        "ipAddresses": [],
        "stagedAt": t.staged_at,
        "version": t.version,
        "healthCheckResults": results,
        "localVolumes": [],
        "role": "*",
    });
    if let Some(s) = t.started_at {
        v["startedAt"] = json!(s);
    }
    if let Some(m) = &t.message {
        v["message"] = json!(m);
    }
    v
}

/// One line per app and service port: `<safeAppId>\t<servicePort>\t<host>:<port>\t...`,
/// running tasks only. Apps without ports get one line with the bare hosts.
pub fn tasks_text<'a>(apps: impl Iterator<Item = (&'a AppSpec, Vec<&'a Task>)>) -> String {
    let mut out = String::new();
    for (app, tasks) in apps {
        let running: Vec<&&Task> = tasks.iter().filter(|t| t.state == crate::domain::TaskState::Running).collect();
        let service = app.service_ports();
        if service.is_empty() {
            out.push_str(&app.id.safe_id());
            out.push_str("\t \t");
            let hosts: Vec<&str> = running.iter().map(|t| t.host.as_str()).collect();
            out.push_str(&hosts.join("\t"));
            out.push('\n');
            continue;
        }
        for (i, sp) in service.iter().enumerate() {
            out.push_str(&format!("{}\t{}\t", app.id.safe_id(), sp));
            let eps: Vec<String> =
                running.iter().filter_map(|t| t.ports.get(i).map(|p| format!("{}:{}", t.host, p))).collect();
            out.push_str(&eps.join("\t"));
            out.push('\n');
        }
    }
    out
}
