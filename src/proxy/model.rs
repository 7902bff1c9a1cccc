//! The load balancer's input: apps with their labels, service ports, health checks and
//! routable tasks, read from Marathon's app JSON (`GET /v2/apps?embed=apps.tasks`, which
//! dromos and Marathon both serve). Reading is lenient (missing fields, nulls, the
//! legacy `ports` and `container.docker.portMappings` forms); what it keeps is typed.
//!
//! Which tasks are routed (reference section 1.3 step 6, made stricter): running tasks
//! with a host address; when the app has health checks, only those whose every check
//! result is alive. Lost and unreachable tasks are not routed.

use serde_json::Value;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq)]
pub struct LbApp {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    /// Service ports in port-index order.
    pub service_ports: Vec<u16>,
    pub health_checks: Vec<LbHealthCheck>,
    /// The routable tasks.
    pub tasks: Vec<LbTask>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LbHealthCheck {
    pub protocol: String,
    pub path: Option<String>,
    pub port_index: Option<usize>,
    pub port: Option<u16>,
    pub interval_seconds: u64,
    pub timeout_seconds: u64,
    pub max_consecutive_failures: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LbTask {
    /// The agent's hostname as Marathon reports it.
    pub host: String,
    /// Where HAProxy connects.
    pub ip: Ipv4Addr,
    /// Host ports in port-index order.
    pub ports: Vec<u16>,
}

/// Reads `{"apps": [...]}` (tasks embedded); `resolve` turns a task's host into an
/// IPv4 address (tasks whose host does not resolve are left out).
pub fn from_marathon(doc: &Value, resolve: &mut dyn FnMut(&str) -> Option<Ipv4Addr>) -> Vec<LbApp> {
    let apps = doc.get("apps").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    let mut out: Vec<LbApp> = apps.iter().filter_map(|a| app(a, resolve)).collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

fn app(a: &Value, resolve: &mut dyn FnMut(&str) -> Option<Ipv4Addr>) -> Option<LbApp> {
    let id = a.get("id")?.as_str()?.to_string();
    let labels = a
        .get("labels")
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default();
    let health_checks: Vec<LbHealthCheck> =
        a.get("healthChecks").and_then(Value::as_array).into_iter().flatten().map(health_check).collect();
    let mut tasks: Vec<LbTask> = a
        .get("tasks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|t| routable(t, !health_checks.is_empty()))
        .filter_map(|t| {
            let host = t.get("host")?.as_str()?.to_string();
            let ip = resolve(&host)?;
            let ports = t.get("ports").and_then(Value::as_array)?.iter().filter_map(port).collect();
            Some(LbTask { host, ip, ports })
        })
        .collect();
    tasks.sort_by(|x, y| (&x.host, &x.ports).cmp(&(&y.host, &y.ports)));
    Some(LbApp { id, labels, service_ports: service_ports(a), health_checks, tasks })
}

fn port(v: &Value) -> Option<u16> {
    v.as_u64().and_then(|p| u16::try_from(p).ok())
}

/// Running, and alive in every check when the app has checks.
fn routable(t: &Value, checked: bool) -> bool {
    if t.get("state").and_then(Value::as_str) != Some("TASK_RUNNING") {
        return false;
    }
    if !checked {
        return true;
    }
    let results = t.get("healthCheckResults").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    !results.is_empty() && results.iter().all(|r| r.get("alive").and_then(Value::as_bool) == Some(true))
}

/// Service ports: `portDefinitions[].port`, else the port mappings' `servicePort`
/// (`container.portMappings`, or the older `container.docker.portMappings`), else the
/// legacy `ports`.
fn service_ports(a: &Value) -> Vec<u16> {
    let list = |v: Option<&Value>, field: &str| -> Option<Vec<u16>> {
        let arr = v?.as_array()?;
        (!arr.is_empty()).then(|| arr.iter().filter_map(|p| p.get(field).and_then(port)).collect())
    };
    let container = a.get("container");
    let mappings = container
        .and_then(|c| c.get("portMappings"))
        .filter(|m| m.as_array().is_some_and(|a| !a.is_empty()))
        .or_else(|| container.and_then(|c| c.get("docker")).and_then(|d| d.get("portMappings")));
    let network_mode = a.get("networks").and_then(|n| n.get(0)).and_then(|n| n.get("mode")).and_then(Value::as_str);
    let bridged = network_mode.is_some_and(|m| m != "host")
        || container.and_then(|c| c.get("docker")).and_then(|d| d.get("network")).and_then(Value::as_str)
            == Some("BRIDGE");
    let from_defs = list(a.get("portDefinitions"), "port");
    let from_mappings = list(mappings, "servicePort");
    let legacy = || a.get("ports").and_then(Value::as_array).map(|p| p.iter().filter_map(port).collect());
    let found = if bridged { from_mappings.or(from_defs) } else { from_defs.or(from_mappings) };
    found.or_else(legacy).unwrap_or_default()
}

fn health_check(h: &Value) -> LbHealthCheck {
    let num = |k: &str, default: u64| h.get(k).and_then(Value::as_u64).unwrap_or(default);
    LbHealthCheck {
        protocol: h.get("protocol").and_then(Value::as_str).unwrap_or("HTTP").to_string(),
        path: h.get("path").and_then(Value::as_str).map(str::to_string),
        port_index: h.get("portIndex").and_then(Value::as_u64).map(|i| i as usize),
        port: h.get("port").and_then(port),
        interval_seconds: num("intervalSeconds", 60),
        timeout_seconds: num("timeoutSeconds", 20),
        max_consecutive_failures: num("maxConsecutiveFailures", 3),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_apps_ports_checks_and_only_routable_tasks() {
        let doc = json!({"apps": [
            {"id": "/web", "labels": {"HAPROXY_GROUP": "external", "n": 1},
             "portDefinitions": [{"port": 10000}, {"port": 10001}],
             "healthChecks": [{"protocol": "HTTP", "path": "/ok", "portIndex": 0, "intervalSeconds": 2,
                               "timeoutSeconds": 10, "maxConsecutiveFailures": 10}],
             "tasks": [
                {"host": "agent1", "ports": [31001, 31002], "state": "TASK_RUNNING",
                 "healthCheckResults": [{"alive": true}]},
                {"host": "agent0", "ports": [31003, 31004], "state": "TASK_RUNNING",
                 "healthCheckResults": [{"alive": true}]},
                {"host": "agent2", "ports": [31005, 31006], "state": "TASK_RUNNING",
                 "healthCheckResults": [{"alive": false}]},
                {"host": "agent3", "ports": [31007, 31008], "state": "TASK_RUNNING", "healthCheckResults": []},
                {"host": "agent4", "ports": [31009, 31010], "state": "TASK_STAGING"},
                {"host": "nowhere", "ports": [1, 2], "state": "TASK_RUNNING", "healthCheckResults": [{"alive": true}]}
             ]},
            {"id": "/bridged", "container": {"type": "DOCKER", "docker": {"network": "BRIDGE",
                "portMappings": [{"containerPort": 80, "hostPort": 0, "servicePort": 10005}]}},
             "tasks": [{"host": "agent1", "ports": [31500], "state": "TASK_RUNNING"}]},
            {"id": "/legacy", "ports": [10009], "tasks": null}
        ]});
        let mut resolve = |h: &str| match h {
            "agent0" => Some(Ipv4Addr::new(10, 0, 0, 1)),
            "nowhere" => None,
            _ => Some(Ipv4Addr::new(10, 0, 0, 2)),
        };
        let apps = from_marathon(&doc, &mut resolve);
        assert_eq!(apps.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(), ["/bridged", "/legacy", "/web"]);
        let web = &apps[2];
        assert_eq!(web.service_ports, [10000, 10001]);
        assert_eq!(web.labels.get("HAPROXY_GROUP").map(String::as_str), Some("external"));
        assert!(!web.labels.contains_key("n"), "only string labels");
        let hosts: Vec<&str> = web.tasks.iter().map(|t| t.host.as_str()).collect();
        assert_eq!(hosts, ["agent0", "agent1"], "healthy running tasks that resolve, sorted");
        assert_eq!(web.tasks[0].ip, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(web.health_checks[0].max_consecutive_failures, 10);
        assert_eq!(apps[0].service_ports, [10005]);
        assert_eq!(apps[0].tasks.len(), 1);
        assert_eq!(apps[1].service_ports, [10009]);
    }
}
