//! Marathon's app definition on the wire: input (`AppDefinitionDto` -> `AppSpec`) and
//! output (`app_json`).

use super::from_value;
use crate::api::error::ApiError;
use crate::domain::app::*;
use crate::domain::{AppSpec, IdError, PathId, Violation};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// Upper bound on `instances`: far above any real app, low enough that a typo cannot
/// make the scheduler plan billions of tasks.
pub const MAX_INSTANCES: i64 = 1_000_000;

/// Every top-level field we accept. Anything else is answered with 422 and its path, so
/// a typo (`"intances"`) is caught instead of silently ignored (Marathon issue #2164).
const KNOWN_FIELDS: &[&str] = &[
    "id",
    "cmd",
    "args",
    "user",
    "env",
    "instances",
    "cpus",
    "mem",
    "disk",
    "gpus",
    "resourceLimits",
    "executor",
    "executorResources",
    "constraints",
    "acceptedResourceRoles",
    "role",
    "container",
    "networks",
    "portDefinitions",
    "ports",
    "requirePorts",
    "fetch",
    "uris",
    "healthChecks",
    "readinessChecks",
    "check",
    "dependencies",
    "upgradeStrategy",
    "backoffSeconds",
    "backoffFactor",
    "maxLaunchDelaySeconds",
    "taskKillGracePeriodSeconds",
    "killSelection",
    "unreachableStrategy",
    "labels",
    "secrets",
    "residency",
    "ipAddress",
    "tty",
    "version",
    // Read-only fields: accepted and ignored, so the output of GET can be sent back.
    "versionInfo",
    "tasksStaged",
    "tasksRunning",
    "tasksHealthy",
    "tasksUnhealthy",
    "deployments",
    "tasks",
    "lastTaskFailure",
    "lastDeploymentFailure",
    "readinessCheckResults",
    "taskStats",
    "tasksStats",
];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AppDefinitionDto {
    id: Option<String>,
    cmd: Option<String>,
    args: Option<Vec<String>>,
    user: Option<String>,
    env: Option<BTreeMap<String, EnvValue>>,
    instances: Option<i64>,
    cpus: Option<f64>,
    mem: Option<f64>,
    disk: Option<f64>,
    gpus: Option<i64>,
    resource_limits: Option<ResourceLimits>,
    executor: Option<String>,
    executor_resources: Option<ExecutorResources>,
    constraints: Option<Vec<Vec<String>>>,
    accepted_resource_roles: Option<Vec<String>>,
    role: Option<String>,
    container: Option<Container>,
    networks: Option<Vec<Network>>,
    port_definitions: Option<Vec<PortDefinition>>,
    ports: Option<Vec<i64>>,
    require_ports: Option<bool>,
    fetch: Option<Vec<Fetch>>,
    uris: Option<Vec<String>>,
    health_checks: Option<Vec<HealthCheck>>,
    readiness_checks: Option<Vec<ReadinessCheck>>,
    check: Option<Check>,
    dependencies: Option<Vec<String>>,
    upgrade_strategy: Option<UpgradeStrategy>,
    backoff_seconds: Option<i64>,
    backoff_factor: Option<f64>,
    max_launch_delay_seconds: Option<i64>,
    task_kill_grace_period_seconds: Option<i64>,
    kill_selection: Option<KillSelection>,
    unreachable_strategy: Option<UnreachableStrategy>,
    labels: Option<BTreeMap<String, String>>,
    secrets: Option<BTreeMap<String, SecretDef>>,
    residency: Option<Residency>,
    tty: Option<bool>,
    #[allow(dead_code)]
    version: Option<IgnoredAny>,
}

/// Moves legacy fields to their current places (before typing, so that both forms get
/// the same validation).
fn normalise_legacy(obj: &mut Map<String, Value>, violations: &mut Vec<Violation>) {
    if let Some(Value::Object(container)) = obj.get_mut("container") {
        let mut legacy_network = None;
        if let Some(Value::Object(docker)) = container.get_mut("docker") {
            legacy_network = docker.remove("network");
            if let Some(pm) = docker.remove("portMappings") {
                container.entry("portMappings").or_insert(pm);
            }
        }
        if let Some(Value::String(net)) = legacy_network {
            if !obj.contains_key("networks") {
                let mode = match net.as_str() {
                    "HOST" => json!([{"mode": "host"}]),
                    "BRIDGE" => json!([{"mode": "container/bridge"}]),
                    "USER" | "NONE" => {
                        let name = obj.get("ipAddress").and_then(|ip| ip.get("networkName")).cloned();
                        match name {
                            Some(n) => json!([{"mode": "container", "name": n}]),
                            None => json!([{"mode": "container"}]),
                        }
                    }
                    other => {
                        violations.push(Violation::new(
                            "/container/docker/network",
                            format!("unknown network '{other}' (HOST, BRIDGE, USER, NONE)"),
                        ));
                        json!([{"mode": "host"}])
                    }
                };
                obj.insert("networks".into(), mode);
            }
        }
    }
    if let Some(ip) = obj.remove("ipAddress") {
        if !ip.is_null() && !obj.contains_key("networks") {
            let name = ip.get("networkName").cloned();
            obj.insert(
                "networks".into(),
                match name {
                    Some(n) => json!([{"mode": "container", "name": n}]),
                    None => json!([{"mode": "container"}]),
                },
            );
        }
    }
    if obj.contains_key("ports")
        && obj.contains_key("portDefinitions")
        && !obj["ports"].is_null()
        && !obj["portDefinitions"].is_null()
    {
        violations.push(Violation::new("/ports", "You cannot specify both ports and port definitions"));
    }
    if obj.contains_key("uris") && obj.contains_key("fetch") && !obj["uris"].is_null() && !obj["fetch"].is_null() {
        violations.push(Violation::new("/uris", "You cannot specify both uris and fetch fields"));
    }
}

fn no_nul(v: &mut Vec<Violation>, path: &str, s: &str) {
    if s.contains('\0') {
        v.push(Violation::new(path, "must not contain NUL characters"));
    }
}

fn id_violation(path: &str, e: IdError) -> Violation {
    Violation::new(path, e.to_string())
}

/// Converts a JSON app definition into a validated [`AppSpec`]. `path_id`, when given
/// (PUT/PATCH on `/v2/apps/{id}`), overrides the body's id.
pub fn parse_app(mut value: Value, path_id: Option<&PathId>) -> Result<AppSpec, ApiError> {
    let Value::Object(obj) = &mut value else {
        return Err(ApiError::WrongShape { path: "/".into(), message: "expected a JSON object".into() });
    };
    let mut v = Vec::new();
    for key in obj.keys() {
        if !KNOWN_FIELDS.contains(&key.as_str()) {
            v.push(Violation::new(format!("/{}", pointer_escape(key)), "unknown field"));
        }
    }
    normalise_legacy(obj, &mut v);
    if !v.is_empty() {
        return Err(ApiError::Invalid(v));
    }
    let dto: AppDefinitionDto = from_value(value)?;
    let spec = to_spec(dto, path_id, &mut v);
    if let Some(spec) = &spec {
        v.extend(spec.validate());
    }
    match spec {
        Some(spec) if v.is_empty() => Ok(spec),
        _ => Err(ApiError::Invalid(v)),
    }
}

fn to_spec(d: AppDefinitionDto, path_id: Option<&PathId>, v: &mut Vec<Violation>) -> Option<AppSpec> {
    let id = match (path_id, &d.id) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(s)) => PathId::parse_app(s).map_err(|e| v.push(id_violation("/id", e))).ok(),
        (None, None) => {
            v.push(Violation::new("/id", "must be provided"));
            None
        }
    };
    let nonneg_int = |v: &mut Vec<Violation>, path: &str, x: Option<i64>, default: i64| -> i64 {
        let x = x.unwrap_or(default);
        if x < 0 {
            v.push(Violation::new(path, format!("got {x}, expected 0 or more")));
        }
        x.max(0)
    };
    let nonneg = |v: &mut Vec<Violation>, path: &str, x: Option<f64>, default: f64| -> f64 {
        let x = x.unwrap_or(default);
        if !x.is_finite() || x < 0.0 {
            v.push(Violation::new(path, format!("got {x}, expected 0.0 or more")));
        }
        x
    };
    let instances = nonneg_int(v, "/instances", d.instances, 1);
    if instances > MAX_INSTANCES {
        v.push(Violation::new("/instances", format!("got {instances}, expected at most {MAX_INSTANCES}")));
    }
    let cpus = nonneg(v, "/cpus", d.cpus, 1.0);
    let mem = nonneg(v, "/mem", d.mem, 128.0);
    let disk = nonneg(v, "/disk", d.disk, 0.0);
    let gpus = nonneg_int(v, "/gpus", d.gpus, 0);
    let backoff_seconds = nonneg_int(v, "/backoffSeconds", d.backoff_seconds, 1);
    let backoff_factor = d.backoff_factor.unwrap_or(1.15);
    if !backoff_factor.is_finite() || backoff_factor < 1.0 {
        v.push(Violation::new("/backoffFactor", format!("got {backoff_factor}, expected 1.0 or more")));
    }
    let max_launch_delay_seconds = nonneg_int(v, "/maxLaunchDelaySeconds", d.max_launch_delay_seconds, 300);
    let task_kill_grace_period_seconds =
        d.task_kill_grace_period_seconds.map(|g| nonneg_int(v, "/taskKillGracePeriodSeconds", Some(g), 0) as u64);

    if let Some(cmd) = &d.cmd {
        if cmd.trim().is_empty() {
            v.push(Violation::new("/cmd", "must not be empty"));
        }
        no_nul(v, "/cmd", cmd);
    }
    let args = d.args.unwrap_or_default();
    for (i, a) in args.iter().enumerate() {
        no_nul(v, &format!("/args/{i}"), a);
    }
    let env = d.env.unwrap_or_default();
    for (k, val) in &env {
        let path = format!("/env/{}", pointer_escape(k));
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            v.push(Violation::new(&path, "must be a valid environment variable name"));
        }
        if let EnvValue::Plain(s) = val {
            no_nul(v, &path, s);
        }
    }
    let labels = d.labels.unwrap_or_default();
    for (k, val) in &labels {
        no_nul(v, &format!("/labels/{}", pointer_escape(k)), &format!("{k}{val}"));
    }
    if let Some(u) = &d.user {
        let ok = !u.is_empty()
            && u.len() <= 32
            && u.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
            && !u.starts_with('-');
        if !ok {
            v.push(Violation::new("/user", "must be a valid Unix user name"));
        }
    }
    if let Some(e) = &d.executor {
        no_nul(v, "/executor", e);
    }
    let mut constraints = Vec::new();
    for (i, raw) in d.constraints.unwrap_or_default().iter().enumerate() {
        match Constraint::parse(raw) {
            Ok(c) => constraints.push(c),
            Err(m) => v.push(Violation::new(format!("/constraints/{i}"), m)),
        }
    }
    let mut dependencies = Vec::new();
    // Marathon resolves relative dependencies against the app id itself: from `/shop/web`,
    // `../db` is the sibling `/shop/db`.
    let base = id.clone().unwrap_or_default();
    for (i, dep) in d.dependencies.unwrap_or_default().iter().enumerate() {
        match PathId::parse_relative(dep, &base) {
            Ok(p) if !p.is_root() => dependencies.push(p),
            Ok(_) => v.push(Violation::new(format!("/dependencies/{i}"), "must name an app or group")),
            Err(e) => v.push(id_violation(&format!("/dependencies/{i}"), e)),
        }
    }
    if let Some(us) = &d.upgrade_strategy {
        for (name, x) in
            [("minimumHealthCapacity", us.minimum_health_capacity), ("maximumOverCapacity", us.maximum_over_capacity)]
        {
            if !(0.0..=1.0).contains(&x) {
                v.push(Violation::new(
                    format!("/upgradeStrategy/{name}"),
                    format!("got {x}, expected a value between 0.0 and 1.0"),
                ));
            }
        }
        if us.progress_deadline_seconds == Some(0) {
            v.push(Violation::new("/upgradeStrategy/progressDeadlineSeconds", "must be at least 1"));
        }
        if us.rollback_on_failure && us.progress_deadline_seconds.is_none() {
            v.push(Violation::new(
                "/upgradeStrategy/rollbackOnFailure",
                "needs progressDeadlineSeconds: a deployment fails only at its deadline",
            ));
        }
    }
    let networks = d
        .networks
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| vec![Network { mode: NetworkMode::Host, name: None, labels: BTreeMap::new() }]);
    let host = networks.iter().all(|n| n.mode == NetworkMode::Host);
    let port_definitions = if !host {
        d.port_definitions.unwrap_or_default()
    } else if let Some(pd) = d.port_definitions {
        pd
    } else if let Some(ports) = d.ports {
        ports
            .into_iter()
            .map(|p| PortDefinition { port: p, protocol: "tcp".into(), name: None, labels: BTreeMap::new() })
            .collect()
    } else {
        vec![PortDefinition { port: 0, protocol: "tcp".into(), name: Some("default".into()), labels: BTreeMap::new() }]
    };
    let mut container = d.container;
    if let Some(c) = container.as_mut() {
        if !host && c.port_mappings.is_none() {
            let bridge = networks.iter().any(|n| n.mode == NetworkMode::Bridge);
            c.port_mappings = Some(vec![PortMapping {
                container_port: 0,
                host_port: bridge.then_some(0),
                service_port: 0,
                protocol: "tcp".into(),
                name: Some("default".into()),
                labels: BTreeMap::new(),
                network_names: vec![],
            }]);
        }
    }
    let fetch = match (d.fetch, d.uris) {
        (Some(f), _) => f,
        (None, Some(uris)) => uris
            .into_iter()
            .map(|uri| Fetch { uri, extract: true, executable: false, cache: false, dest_path: None })
            .collect(),
        (None, None) => vec![],
    };
    let upgrade_strategy = d.upgrade_strategy.unwrap_or(if d.residency.is_some() {
        UpgradeStrategy { minimum_health_capacity: 0.5, maximum_over_capacity: 0.0, ..Default::default() }
    } else {
        UpgradeStrategy::default()
    });
    let unreachable_strategy = d.unreachable_strategy.unwrap_or(if d.residency.is_some() {
        UnreachableStrategy::Disabled
    } else {
        UnreachableStrategy::default()
    });
    Some(AppSpec {
        id: id?,
        cmd: d.cmd,
        args,
        user: d.user,
        env,
        instances: instances.min(MAX_INSTANCES) as u32,
        cpus,
        mem,
        disk,
        gpus: gpus.min(u32::MAX as i64) as u32,
        resource_limits: d.resource_limits,
        executor: d.executor.unwrap_or_default(),
        executor_resources: d.executor_resources,
        constraints,
        accepted_resource_roles: d.accepted_resource_roles,
        role: d.role,
        container,
        networks,
        port_definitions,
        require_ports: d.require_ports.unwrap_or(false),
        fetch,
        health_checks: d.health_checks.unwrap_or_default(),
        readiness_checks: d.readiness_checks.unwrap_or_default(),
        check: d.check,
        dependencies,
        upgrade_strategy,
        backoff_seconds: backoff_seconds as u64,
        backoff_factor,
        max_launch_delay_seconds: max_launch_delay_seconds as u64,
        task_kill_grace_period_seconds,
        kill_selection: d.kill_selection.unwrap_or_default(),
        unreachable_strategy,
        labels,
        secrets: d.secrets.unwrap_or_default(),
        residency: d.residency,
        tty: d.tty,
    })
}

/// Marathon's PATCH-like update: the fields present in `update` replace the app's.
/// Legacy fields in the update replace their modern counterparts.
pub fn merge_update(current: &AppSpec, update: Value) -> Result<Value, ApiError> {
    let Value::Object(upd) = update else {
        return Err(ApiError::WrongShape { path: "/".into(), message: "expected a JSON object".into() });
    };
    let mut base = match serde_json::to_value(current) {
        Ok(Value::Object(m)) => m,
        _ => return Err(ApiError::Internal("app definition did not serialise to an object".into())),
    };
    if upd.contains_key("ports") {
        base.remove("portDefinitions");
    }
    if upd.contains_key("uris") {
        base.remove("fetch");
    }
    if upd.contains_key("ipAddress") {
        base.remove("networks");
    }
    if upd.get("container").and_then(|c| c.get("docker")).and_then(|d| d.get("network")).is_some() {
        base.remove("networks");
    }
    for (k, val) in upd {
        if k != "id" {
            base.insert(k, val);
        }
    }
    Ok(Value::Object(base))
}

/// Whether a PUT body is Marathon's rollback form: `{"version": "<timestamp>"}` only.
pub fn rollback_version(body: &Value) -> Option<&str> {
    match body {
        Value::Object(m) if m.len() == 1 => m.get("version").and_then(Value::as_str),
        _ => None,
    }
}

/// Which optional parts to embed in app JSON (`embed=apps.tasks` / `app.tasks`, ...).
#[derive(Debug, Clone, Copy, Default)]
pub struct Embed {
    pub tasks: bool,
    pub last_task_failure: bool,
    pub readiness: bool,
}

impl Embed {
    /// Parses `embed` values; Marathon 1.10 always embeds counts and deployments, and
    /// for a single app also tasks and the last failure.
    pub fn parse<'a>(values: impl Iterator<Item = &'a str>, single: bool) -> Embed {
        let mut e = Embed { tasks: single, last_task_failure: single, readiness: false };
        for v in values {
            match v.trim_start_matches("apps.").trim_start_matches("app.") {
                "tasks" => e.tasks = true,
                "lastTaskFailure" => e.last_task_failure = true,
                "readiness" => e.readiness = true,
                "failures" => {
                    e.tasks = true;
                    e.last_task_failure = true;
                }
                _ => {}
            }
        }
        e
    }
}

/// The readiness answers of an app's current-config tasks (Marathon's
/// `readinessCheckResults`: `{name, taskId, ready, lastResponse}`).
pub fn readiness_results(state: &crate::master::state::State, app: &crate::domain::PathId) -> Vec<Value> {
    let Some(rec) = state.apps.get(app) else { return vec![] };
    let config = rec.current.version_info.last_config_change_at;
    state
        .tasks_of(app)
        .filter(|t| t.is_active() && t.config_version == config)
        .filter_map(|t| {
            let r = state.readiness.get(&t.id)?;
            let mut v = json!(r);
            v["taskId"] = json!(t.id);
            Some(v)
        })
        .collect()
}

/// App JSON as Marathon returns it: the definition, its version, counts, deployments and
/// the embedded parts asked for.
pub fn app_json(rec: &crate::master::state::AppRecord, state: &crate::master::state::State, embed: Embed) -> Value {
    let spec = &rec.current.spec;
    let mut v = serde_json::to_value(spec).unwrap_or_else(|_| json!({}));
    if !spec.is_host_networking() {
        if let Some(m) = v.as_object_mut() {
            m.remove("portDefinitions");
        }
    }
    let summary = crate::master::summary::app_summary(rec, state, None, crate::master::now());
    v["version"] = json!(rec.current.version);
    v["versionInfo"] = json!(rec.current.version_info);
    v["tasksStaged"] = json!(summary.staged);
    v["tasksRunning"] = json!(summary.running);
    // Healthy: every health check reported the task alive; unhealthy: some check
    // reported it not alive. Without health checks no task counts either way (Marathon).
    v["tasksHealthy"] = json!(summary.healthy);
    v["tasksUnhealthy"] = json!(summary.unhealthy);
    v["deployments"] = json!(state.deployments_of(&spec.id).map(|d| json!({"id": d.id})).collect::<Vec<_>>());
    if embed.tasks {
        let sp = spec.service_ports();
        v["tasks"] = json!(state
            .tasks_of(&spec.id)
            .filter(|t| t.is_active())
            .map(|t| super::task::task_json(t, &sp, state.health.get(&t.id)))
            .collect::<Vec<_>>());
    }
    if let Some(f) = state.deployment_failures.get(&spec.id) {
        v["lastDeploymentFailure"] = json!(f);
    }
    if embed.readiness {
        v["readinessCheckResults"] = json!(readiness_results(state, &spec.id));
    }
    if embed.last_task_failure {
        if let Some(f) = &rec.last_failure {
            v["lastTaskFailure"] = json!(f);
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errs(r: Result<AppSpec, ApiError>) -> Vec<String> {
        match r {
            Err(ApiError::Invalid(v)) => v.into_iter().map(|x| x.path).collect(),
            Err(e) => vec![format!("other: {e:?}")],
            Ok(_) => vec![],
        }
    }

    #[test]
    fn defaults_match_marathon() {
        let s = parse_app(json!({"id": "/web", "cmd": "run"}), None).unwrap();
        assert_eq!((s.instances, s.cpus, s.mem, s.disk, s.gpus), (1, 1.0, 128.0, 0.0, 0));
        assert_eq!((s.backoff_seconds, s.backoff_factor, s.max_launch_delay_seconds), (1, 1.15, 300));
        assert_eq!(s.port_definitions.len(), 1);
        assert_eq!(s.port_definitions[0].name.as_deref(), Some("default"));
        assert_eq!(s.upgrade_strategy, UpgradeStrategy::default());
        assert_eq!(s.kill_selection, KillSelection::YoungestFirst);
        assert!(s.is_host_networking());
    }

    #[test]
    fn legacy_aliases_are_normalised() {
        let s =
            parse_app(json!({"id": "/a", "cmd": "x", "ports": [0, 8080], "uris": ["http://x/y.tgz"]}), None).unwrap();
        assert_eq!(s.port_definitions.iter().map(|p| p.port).collect::<Vec<_>>(), vec![0, 8080]);
        assert_eq!(s.fetch[0].uri, "http://x/y.tgz");
        assert!(s.fetch[0].extract);
        let s = parse_app(
            json!({"id": "/d", "container": {"type": "DOCKER", "docker": {"image": "nginx", "network": "BRIDGE",
                "portMappings": [{"containerPort": 80, "hostPort": 0}]}}}),
            None,
        )
        .unwrap();
        assert_eq!(s.networks[0].mode, NetworkMode::Bridge);
        assert_eq!(s.port_mappings()[0].container_port, 80);
        assert!(s.port_definitions.is_empty());
        let out = serde_json::to_value(&s).unwrap();
        assert!(out["container"]["docker"].get("network").is_none());
    }

    #[test]
    fn rejects_with_paths() {
        assert_eq!(errs(parse_app(json!({"id": "/a", "cmd": "x", "instances": -1}), None)), vec!["/instances"]);
        assert_eq!(errs(parse_app(json!({"id": "../x", "cmd": "x"}), None)), vec!["/id"]);
        assert_eq!(errs(parse_app(json!({"id": "/ünï", "cmd": "x"}), None)), vec!["/id"]);
        assert_eq!(errs(parse_app(json!({"id": "/a", "cmd": "x", "intances": 2}), None)), vec!["/intances"]);
        assert_eq!(errs(parse_app(json!({"id": "/a"}), None)), vec!["/"]);
        assert_eq!(errs(parse_app(json!({"id": "/a", "cmd": "x", "args": ["y"]}), None)), vec!["/"]);
        assert_eq!(
            errs(parse_app(json!({"id": "/a", "cmd": "x", "constraints": [["host", "SOMETIMES"]]}), None)),
            vec!["/constraints/0"]
        );
        let bad = json!({"id": "/a", "cmd": "x", "constraints": [["rack", "LIKE", "r.*"], ["rack", "UNLIKE", "r[0-"],
            ["rack", "MAX_PER", "many"], ["hostname", "UNIQUE", "x"], ["rack", "GROUP_BY", "-1"], ["rack", "IS"]]});
        assert_eq!(
            errs(parse_app(bad, None)),
            vec!["/constraints/1", "/constraints/2", "/constraints/3", "/constraints/4", "/constraints/5"]
        );
        assert_eq!(
            errs(parse_app(json!({"id": "/a", "cmd": "x", "upgradeStrategy": {"minimumHealthCapacity": 2}}), None)),
            vec!["/upgradeStrategy/minimumHealthCapacity"]
        );
        assert_eq!(
            errs(parse_app(json!({"id": "/a", "cmd": "x", "healthChecks": [{"portIndex": 3}]}), None)),
            vec!["/healthChecks/0/portIndex"]
        );
        assert_eq!(
            errs(parse_app(json!({"id": "/a", "cmd": "x", "backoffFactor": 0.5}), None)),
            vec!["/backoffFactor"]
        );
        assert_eq!(errs(parse_app(json!({"id": "/a", "cmd": "x\u{0}y"}), None)), vec!["/cmd"]);
    }

    #[test]
    fn wrong_types_are_400_with_path() {
        match parse_app(json!({"id": "/a", "cmd": "x", "healthChecks": [{"protocol": 5}]}), None) {
            Err(ApiError::WrongShape { path, .. }) => assert_eq!(path, "/healthChecks/0/protocol"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn later_issue_fields_round_trip() {
        let input = json!({
            "id": "/full", "cmd": "run", "constraints": [["hostname", "UNIQUE"], ["rack", "GROUP_BY", "3"]],
            "healthChecks": [{"protocol": "HTTP", "path": "/health", "portIndex": 0, "gracePeriodSeconds": 10}],
            "readinessChecks": [{"portName": "default"}],
            "upgradeStrategy": {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0.2},
            "dependencies": ["../db"], "unreachableStrategy": "disabled", "labels": {"HAPROXY_GROUP": "external"},
            "fetch": [{"uri": "https://x/a.tgz", "cache": true}], "killSelection": "OLDEST_FIRST",
            "taskKillGracePeriodSeconds": 7, "acceptedResourceRoles": ["*"], "secrets": {"s": {"source": "/db/pw"}},
            "env": {"PW": {"secret": "s"}}
        });
        let s = parse_app(input, None).unwrap();
        let out = serde_json::to_value(&s).unwrap();
        assert_eq!(out["constraints"], json!([["hostname", "UNIQUE"], ["rack", "GROUP_BY", "3"]]));
        assert_eq!(out["healthChecks"][0]["gracePeriodSeconds"], 10);
        assert_eq!(out["healthChecks"][0]["intervalSeconds"], 60);
        assert_eq!(out["readinessChecks"][0]["httpStatusCodesForReady"], json!([200]));
        assert_eq!(out["dependencies"], json!(["/db"]));
        assert_eq!(out["unreachableStrategy"], "disabled");
        assert_eq!(out["fetch"][0]["extract"], true);
        assert_eq!(out["env"]["PW"], json!({"secret": "s"}));
        let back: AppSpec = serde_json::from_value(out).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn partial_update_merges_top_level_fields() {
        let s = parse_app(json!({"id": "/a", "cmd": "x", "instances": 3, "ports": [0]}), None).unwrap();
        let merged = merge_update(&s, json!({"instances": 5})).unwrap();
        let s2 = parse_app(merged, Some(&s.id)).unwrap();
        assert_eq!(s2.instances, 5);
        assert_eq!(s2.cmd.as_deref(), Some("x"));
        assert!(!s.is_upgrade(&s2));
        assert_eq!(rollback_version(&json!({"version": "2020-01-01T00:00:00.000Z"})), Some("2020-01-01T00:00:00.000Z"));
        assert_eq!(rollback_version(&json!({"version": "x", "cmd": "y"})), None);
    }
}
