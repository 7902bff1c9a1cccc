//! The Marathon app definition as a validated domain value ([`AppSpec`]) and its stored
//! versions ([`AppVersion`]).
//!
//! Nested value objects (health checks, port definitions, container, ...) carry serde
//! derives in Marathon's camelCase shape with Marathon's defaults: they are both the
//! storage form and the output form, and the API's input type reuses them for their
//! *shape*. Every semantic rule lives in the `validate` functions here, which report
//! JSON-pointer paths, so the API can answer 422 with the exact field.

use super::ids::PathId;
use super::resources::Resources;
use super::time::Timestamp;
use super::Violation;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;

/// An environment value: a plain string or a reference to one of the app's secrets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EnvValue {
    Plain(String),
    Secret { secret: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LimitValue {
    Amount(f64),
    /// Only the word `"unlimited"` is valid here (checked by validation).
    Named(String),
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceLimits {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<LimitValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem: Option<LimitValue>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutorResources {
    #[serde(default = "d_exec_cpus")]
    pub cpus: f64,
    #[serde(default = "d_exec_mem")]
    pub mem: f64,
    #[serde(default = "d_exec_disk")]
    pub disk: f64,
}
fn d_exec_cpus() -> f64 {
    0.1
}
fn d_exec_mem() -> f64 {
    32.0
}
fn d_exec_disk() -> f64 {
    10.0
}

/// Placement constraint operators (behaviour: issue "Marathon scheduling semantics").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConstraintOperator {
    Unique,
    Cluster,
    GroupBy,
    Like,
    Unlike,
    MaxPer,
    Is,
}

impl ConstraintOperator {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "UNIQUE" => Self::Unique,
            "CLUSTER" => Self::Cluster,
            "GROUP_BY" => Self::GroupBy,
            "LIKE" => Self::Like,
            "UNLIKE" => Self::Unlike,
            "MAX_PER" => Self::MaxPer,
            "IS" => Self::Is,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Unique => "UNIQUE",
            Self::Cluster => "CLUSTER",
            Self::GroupBy => "GROUP_BY",
            Self::Like => "LIKE",
            Self::Unlike => "UNLIKE",
            Self::MaxPer => "MAX_PER",
            Self::Is => "IS",
        }
    }
}

/// Compiles a constraint regex for whole-value matching (Marathon used Java's
/// `String.matches`).
pub fn whole_match_regex(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::Regex::new(&format!("^(?:{pattern})$"))
}

/// `["field", "OPERATOR"]` or `["field", "OPERATOR", "value"]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Constraint {
    pub field: String,
    pub operator: ConstraintOperator,
    pub value: Option<String>,
}

impl Constraint {
    /// Parses the wire form (an array of strings) with Marathon's structural rules.
    pub fn parse(raw: &[String]) -> Result<Self, String> {
        let (field, op, value) = match raw {
            [f, o] => (f, o, None),
            [f, o, v] => (f, o, Some(v.clone())),
            _ => return Err("Each constraint must have either 2 or 3 fields".into()),
        };
        if field.is_empty() {
            return Err("Missing field and operator".into());
        }
        let operator = ConstraintOperator::parse(op).ok_or_else(|| {
            format!("Constraint operator must be one of the following: [UNIQUE, CLUSTER, GROUP_BY, LIKE, UNLIKE, MAX_PER, IS], not '{op}'")
        })?;
        use ConstraintOperator::*;
        match (operator, value.as_deref()) {
            (Unique, Some(_)) => return Err("Value specified but not used".into()),
            (Like | Unlike | Is, None | Some("")) => {
                return Err(format!("{} requires a non-empty value", operator.name()))
            }
            (MaxPer, None) => return Err("MAX_PER requires a value".into()),
            (MaxPer, Some(v)) if v.parse::<u32>().is_err() => return Err("Value was not a valid integer".into()),
            (GroupBy, Some(v)) if v.parse::<u32>().is_err() => return Err("Value was not a valid integer".into()),
            (Like | Unlike, Some(v)) => {
                if let Err(e) = whole_match_regex(v) {
                    let first = e.to_string().lines().last().unwrap_or_default().trim().to_string();
                    return Err(format!("'{v}' is not a valid regular expression: {first}"));
                }
            }
            _ => {}
        }
        Ok(Constraint { field: field.clone(), operator, value })
    }

    fn to_wire(&self) -> Vec<String> {
        let mut v = vec![self.field.clone(), self.operator.name().to_string()];
        v.extend(self.value.clone());
        v
    }
}

impl Serialize for Constraint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_wire().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Constraint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Vec::<String>::deserialize(d)?;
        Constraint::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HealthProtocol {
    Http,
    Https,
    Tcp,
    Command,
    MesosHttp,
    MesosHttps,
    MesosTcp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandCheck {
    pub value: String,
}

/// A health check (behaviour: issue "Marathon scheduling semantics"; all checks run on
/// the agent that runs the task).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheck {
    #[serde(default = "d_hc_protocol")]
    pub protocol: HealthProtocol,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_index: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandCheck>,
    #[serde(default = "d_hc_grace")]
    pub grace_period_seconds: i64,
    #[serde(default = "d_hc_interval")]
    pub interval_seconds: i64,
    #[serde(default = "d_hc_timeout")]
    pub timeout_seconds: i64,
    #[serde(default = "d_hc_failures")]
    pub max_consecutive_failures: i64,
    #[serde(default = "d_hc_delay")]
    pub delay_seconds: i64,
    #[serde(default, rename = "ignoreHttp1xx")]
    pub ignore_http1xx: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_protocol: Option<String>,
}
fn d_hc_protocol() -> HealthProtocol {
    HealthProtocol::Http
}
fn d_hc_grace() -> i64 {
    300
}
fn d_hc_interval() -> i64 {
    60
}
fn d_hc_timeout() -> i64 {
    20
}
fn d_hc_failures() -> i64 {
    3
}
fn d_hc_delay() -> i64 {
    15
}

impl HealthCheck {
    /// Mesos ran these on the agent (MESOS_*, COMMAND); Marathon ran HTTP, HTTPS and TCP
    /// itself. Some settings mean different things for the two.
    pub fn is_mesos_level(&self) -> bool {
        !matches!(self.protocol, HealthProtocol::Http | HealthProtocol::Https | HealthProtocol::Tcp)
    }

    /// Failures in a row after which the task is killed; `None`: never. A
    /// `maxConsecutiveFailures` of 0 means never for Marathon-level checks and the first
    /// failure for Mesos-level ones (both as the originals did).
    pub fn kill_after(&self) -> Option<u32> {
        let n = self.max_consecutive_failures.clamp(0, u32::MAX as i64) as u32;
        match (n, self.is_mesos_level()) {
            (0, false) => None,
            (0, true) => Some(1),
            (n, _) => Some(n),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ReadinessProtocol {
    Http,
    Https,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReadinessCheck {
    #[serde(default = "d_rc_name")]
    pub name: String,
    #[serde(default = "d_rc_protocol")]
    pub protocol: ReadinessProtocol,
    #[serde(default = "d_slash")]
    pub path: String,
    #[serde(default = "d_rc_port_name")]
    pub port_name: String,
    #[serde(default = "d_rc_interval")]
    pub interval_seconds: i64,
    #[serde(default = "d_rc_timeout")]
    pub timeout_seconds: i64,
    #[serde(default = "d_rc_codes")]
    pub http_status_codes_for_ready: Vec<i64>,
    #[serde(default)]
    pub preserve_last_response: bool,
}
fn d_rc_name() -> String {
    "readinessCheck".into()
}
fn d_rc_protocol() -> ReadinessProtocol {
    ReadinessProtocol::Http
}
fn d_slash() -> String {
    "/".into()
}
fn d_rc_port_name() -> String {
    "http-api".into()
}
fn d_rc_interval() -> i64 {
    30
}
fn d_rc_timeout() -> i64 {
    10
}
fn d_rc_codes() -> Vec<i64> {
    vec![200]
}

/// Mesos-style informational check (`check`): reported, never kills.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Check {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecCheck>,
    #[serde(default = "d_hc_interval")]
    pub interval_seconds: i64,
    #[serde(default = "d_hc_timeout")]
    pub timeout_seconds: i64,
    #[serde(default = "d_hc_delay")]
    pub delay_seconds: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpCheck {
    #[serde(default)]
    pub port_index: i64,
    #[serde(default = "d_slash")]
    pub path: String,
    #[serde(default = "d_scheme")]
    pub scheme: String,
}
fn d_scheme() -> String {
    "HTTP".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpCheck {
    #[serde(default)]
    pub port_index: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecCheck {
    pub command: ShellCommand,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShellCommand {
    pub shell: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ContainerType {
    Docker,
    Mesos,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerParameter {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullConfig {
    pub secret: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerCredential {
    pub principal: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// `container.docker`. The legacy `network` and `portMappings` fields are moved to
/// `networks` and `container.portMappings` by the API before they get here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DockerSpec {
    pub image: String,
    #[serde(default)]
    pub privileged: bool,
    #[serde(default)]
    pub parameters: Vec<DockerParameter>,
    #[serde(default)]
    pub force_pull_image: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_config: Option<PullConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<DockerCredential>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortMapping {
    #[serde(default)]
    pub container_port: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<i64>,
    #[serde(default)]
    pub service_port: i64,
    #[serde(default = "d_tcp")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_names: Vec<String>,
}
fn d_tcp() -> String {
    "tcp".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VolumeMode {
    RO,
    RW,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PersistentVolume {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalVolume {
    pub name: String,
    pub provider: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
    #[serde(default)]
    pub shared: bool,
}

/// A volume: exactly one of `hostPath`, `persistent`, `external` or `secret`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Volume {
    pub container_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<VolumeMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent: Option<PersistentVolume>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalVolume>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Container {
    #[serde(rename = "type", default = "d_container_type")]
    pub kind: ContainerType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_mappings: Option<Vec<PortMapping>>,
    #[serde(default)]
    pub volumes: Vec<Volume>,
    /// Niche Mesos options (seccomp, IPC, shared memory): kept as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linux_info: Option<serde_json::Map<String, serde_json::Value>>,
}
fn d_container_type() -> ContainerType {
    ContainerType::Docker
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetworkMode {
    #[serde(rename = "host")]
    Host,
    #[serde(rename = "container/bridge")]
    Bridge,
    #[serde(rename = "container")]
    Container,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    #[serde(default = "d_net_mode")]
    pub mode: NetworkMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}
fn d_net_mode() -> NetworkMode {
    NetworkMode::Container
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortDefinition {
    /// 0 asks dromos for a cluster-unique service port; the stored definition holds the
    /// assigned one. With `requirePorts` it is the literal host port.
    #[serde(default)]
    pub port: i64,
    #[serde(default = "d_tcp")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fetch {
    pub uri: String,
    #[serde(default = "d_true")]
    pub extract: bool,
    #[serde(default)]
    pub executable: bool,
    #[serde(default)]
    pub cache: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dest_path: Option<String>,
}
fn d_true() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpgradeStrategy {
    #[serde(default = "d_one")]
    pub minimum_health_capacity: f64,
    #[serde(default = "d_one")]
    pub maximum_over_capacity: f64,
    /// dromos: a deployment of the app that makes no progress for this long fails
    /// (Marathon's deployments could hang forever). None: it waits as long as it takes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline_seconds: Option<u64>,
    /// dromos: a deployment that failed its deadline is rolled back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rollback_on_failure: bool,
}
fn d_one() -> f64 {
    1.0
}

impl Default for UpgradeStrategy {
    fn default() -> Self {
        UpgradeStrategy {
            minimum_health_capacity: 1.0,
            maximum_over_capacity: 1.0,
            progress_deadline_seconds: None,
            rollback_on_failure: false,
        }
    }
}

/// `"disabled"` or `{inactiveAfterSeconds, expungeAfterSeconds}`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UnreachableStrategy {
    Disabled,
    Enabled { inactive_after_seconds: i64, expunge_after_seconds: i64 },
}

impl Default for UnreachableStrategy {
    fn default() -> Self {
        UnreachableStrategy::Enabled { inactive_after_seconds: 0, expunge_after_seconds: 0 }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UnreachableEnabledWire {
    #[serde(default)]
    inactive_after_seconds: i64,
    #[serde(default)]
    expunge_after_seconds: i64,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum UnreachableWire {
    Word(String),
    Enabled(UnreachableEnabledWire),
}

impl Serialize for UnreachableStrategy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            UnreachableStrategy::Disabled => s.serialize_str("disabled"),
            UnreachableStrategy::Enabled { inactive_after_seconds, expunge_after_seconds } => {
                UnreachableEnabledWire { inactive_after_seconds, expunge_after_seconds }.serialize(s)
            }
        }
    }
}

impl<'de> Deserialize<'de> for UnreachableStrategy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match UnreachableWire::deserialize(d)? {
            UnreachableWire::Word(w) if w == "disabled" => Ok(UnreachableStrategy::Disabled),
            UnreachableWire::Word(w) => {
                Err(serde::de::Error::custom(format!("expected \"disabled\" or an object, got \"{w}\"")))
            }
            UnreachableWire::Enabled(e) => Ok(UnreachableStrategy::Enabled {
                inactive_after_seconds: e.inactive_after_seconds,
                expunge_after_seconds: e.expunge_after_seconds,
            }),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KillSelection {
    #[default]
    YoungestFirst,
    OldestFirst,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretDef {
    pub source: String,
}

/// Deprecated in Marathon 1.10 and without effect; kept so definitions round-trip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Residency {
    #[serde(default = "d_relaunch")]
    pub relaunch_escalation_timeout_seconds: i64,
    #[serde(default = "d_lost_behavior")]
    pub task_lost_behavior: String,
}
fn d_relaunch() -> i64 {
    3600
}
fn d_lost_behavior() -> String {
    "WAIT_FOREVER".into()
}

/// A validated app definition: what the user asked for, with Marathon's defaults filled in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppSpec {
    pub id: PathId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, EnvValue>,
    pub instances: u32,
    pub cpus: f64,
    pub mem: f64,
    pub disk: f64,
    pub gpus: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_limits: Option<ResourceLimits>,
    #[serde(default)]
    pub executor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor_resources: Option<ExecutorResources>,
    #[serde(default)]
    pub constraints: Vec<Constraint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_resource_roles: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    pub networks: Vec<Network>,
    /// Emitted only for host networking (as Marathon does).
    #[serde(default)]
    pub port_definitions: Vec<PortDefinition>,
    #[serde(default)]
    pub require_ports: bool,
    #[serde(default)]
    pub fetch: Vec<Fetch>,
    #[serde(default)]
    pub health_checks: Vec<HealthCheck>,
    #[serde(default)]
    pub readiness_checks: Vec<ReadinessCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<Check>,
    #[serde(default)]
    pub dependencies: Vec<PathId>,
    pub upgrade_strategy: UpgradeStrategy,
    pub backoff_seconds: u64,
    pub backoff_factor: f64,
    pub max_launch_delay_seconds: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_kill_grace_period_seconds: Option<u64>,
    #[serde(default)]
    pub kill_selection: KillSelection,
    #[serde(default)]
    pub unreachable_strategy: UnreachableStrategy,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretDef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub residency: Option<Residency>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<bool>,
}

impl AppSpec {
    /// The cpu and memory (MiB) limits the task is held to: `resourceLimits` when given
    /// (`"unlimited"` is 0, no limit), else what the app asks for (Marathon's rule).
    pub fn limits(&self) -> (f64, f64) {
        let pick = |limit: Option<&LimitValue>, asked: f64| match limit {
            Some(LimitValue::Amount(x)) => *x,
            Some(LimitValue::Named(_)) => 0.0,
            None => asked,
        };
        let l = self.resource_limits.as_ref();
        (pick(l.and_then(|l| l.cpus.as_ref()), self.cpus), pick(l.and_then(|l| l.mem.as_ref()), self.mem))
    }

    /// The role the app's tasks run as (`*` when none is given).
    pub fn role(&self) -> &str {
        self.role.as_deref().unwrap_or(super::resources::UNRESERVED)
    }

    /// The roles whose resources the app's tasks may use: `acceptedResourceRoles`, or by
    /// default unreserved resources and those reserved for the app's role.
    pub fn accepted_roles(&self) -> Vec<&str> {
        match &self.accepted_resource_roles {
            Some(r) => r.iter().map(String::as_str).collect(),
            None if self.role() == super::resources::UNRESERVED => vec![super::resources::UNRESERVED],
            None => vec![self.role(), super::resources::UNRESERVED],
        }
    }

    /// Resources one task of this app needs from an agent.
    pub fn task_resources(&self) -> Resources {
        Resources::new(self.cpus, self.mem, self.disk, self.gpus as f64)
    }

    /// True for host networking (no container network in `networks`).
    pub fn is_host_networking(&self) -> bool {
        self.networks.iter().all(|n| n.mode == NetworkMode::Host)
    }

    /// The docker image when the app runs in a container image.
    pub fn docker_image(&self) -> Option<&str> {
        self.container.as_ref().and_then(|c| c.docker.as_ref()).map(|d| d.image.as_str())
    }

    /// Host ports each task needs: one per port definition (host networking) or per
    /// port mapping with a host port (bridge networking).
    pub fn host_port_count(&self) -> usize {
        if self.is_host_networking() {
            self.port_definitions.len()
        } else {
            self.port_mappings().iter().filter(|m| m.host_port.is_some()).count()
        }
    }

    /// Ports that must be these exact host ports (`requirePorts`, or non-zero `hostPort`).
    /// `None` entries are dynamic.
    pub fn requested_host_ports(&self) -> Vec<Option<u16>> {
        if self.is_host_networking() {
            self.port_definitions
                .iter()
                .map(|p| if self.require_ports && p.port > 0 { Some(p.port as u16) } else { None })
                .collect()
        } else {
            self.port_mappings()
                .iter()
                .filter_map(|m| m.host_port)
                .map(|h| if h > 0 { Some(h as u16) } else { None })
                .collect()
        }
    }

    pub fn port_mappings(&self) -> &[PortMapping] {
        self.container.as_ref().and_then(|c| c.port_mappings.as_deref()).unwrap_or(&[])
    }

    /// Service ports in port-index order (what load balancers bind).
    pub fn service_ports(&self) -> Vec<u16> {
        if self.is_host_networking() {
            self.port_definitions.iter().map(|p| p.port as u16).collect()
        } else {
            self.port_mappings().iter().map(|m| m.service_port as u16).collect()
        }
    }

    /// Port names in port-index order (`PORT_<NAME>` variables, readiness `portName`).
    pub fn port_names(&self) -> Vec<Option<String>> {
        if self.is_host_networking() {
            self.port_definitions.iter().map(|p| p.name.clone()).collect()
        } else {
            self.port_mappings().iter().map(|m| m.name.clone()).collect()
        }
    }

    /// Does going from `self` to `other` need new tasks (Marathon's `isUpgrade`), or is
    /// it at most a change of `instances`?
    pub fn is_upgrade(&self, other: &AppSpec) -> bool {
        let mut a = self.clone();
        a.instances = other.instances;
        a != *other
    }

    /// Whole-definition checks that span fields. Field-local checks happen when the wire
    /// type is converted.
    pub fn validate(&self) -> Vec<Violation> {
        let mut v = Vec::new();
        if let Some(r) = &self.role {
            if !super::resources::valid_role(r) {
                v.push(Violation::new("/role", "is not a valid role name"));
            }
        }
        if let Some(roles) = &self.accepted_resource_roles {
            if roles.is_empty() {
                v.push(Violation::new("/acceptedResourceRoles", "must not be empty when given"));
            }
            for (i, r) in roles.iter().enumerate() {
                if r != super::resources::UNRESERVED && r != self.role() {
                    v.push(Violation::new(
                        format!("/acceptedResourceRoles/{i}"),
                        format!("may only contain '*' and the app's role '{}'", self.role()),
                    ));
                }
            }
        }
        if self.cmd.is_some() && !self.args.is_empty() {
            v.push(Violation::new("/", "AppDefinition must not contain both 'cmd' and 'args'."));
        }
        if self.cmd.is_none() && self.args.is_empty() && self.docker_image().is_none() {
            v.push(Violation::new(
                "/",
                "AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'.",
            ));
        }
        if let Some(c) = &self.container {
            if c.kind == ContainerType::Docker && c.docker.is_none() {
                v.push(Violation::new("/container/docker", "must be defined for a DOCKER container"));
            }
            if let Some(d) = &c.docker {
                if d.image.trim().is_empty() {
                    v.push(Violation::new("/container/docker/image", "must not be empty"));
                } else if let Err(e) = super::docker::check_image(&d.image) {
                    v.push(Violation::new("/container/docker/image", e));
                }
                if let Err(errs) = super::docker::validate_parameters(&d.parameters) {
                    for (i, e) in errs {
                        v.push(Violation::new(format!("/container/docker/parameters/{i}"), e));
                    }
                }
                if let Err(errs) = super::docker::validate_volumes(&c.volumes) {
                    for (i, e) in errs {
                        v.push(Violation::new(format!("/container/volumes/{i}"), e));
                    }
                }
            }
            for (i, vol) in c.volumes.iter().enumerate() {
                let kinds =
                    [vol.host_path.is_some(), vol.persistent.is_some(), vol.external.is_some(), vol.secret.is_some()];
                if kinds.iter().filter(|k| **k).count() != 1 {
                    v.push(Violation::new(
                        format!("/container/volumes/{i}"),
                        "must have exactly one of hostPath, persistent, external or secret",
                    ));
                }
                if vol.container_path.is_empty() {
                    v.push(Violation::new(format!("/container/volumes/{i}/containerPath"), "must not be empty"));
                }
            }
            if let Some(pms) = &c.port_mappings {
                for (i, pm) in pms.iter().enumerate() {
                    let p = format!("/container/portMappings/{i}");
                    check_port(&mut v, &format!("{p}/containerPort"), pm.container_port);
                    if let Some(h) = pm.host_port {
                        check_port(&mut v, &format!("{p}/hostPort"), h);
                    }
                    check_port(&mut v, &format!("{p}/servicePort"), pm.service_port);
                    check_protocol(&mut v, &format!("{p}/protocol"), &pm.protocol);
                    if let Some(n) = &pm.name {
                        check_port_name(&mut v, &format!("{p}/name"), n);
                    }
                }
            }
        }
        let host = self.is_host_networking();
        if self.networks.len() > 1 && self.networks.iter().any(|n| n.mode != NetworkMode::Container) {
            v.push(Violation::new(
                "/networks",
                "host and container/bridge networking cannot be combined with other networks",
            ));
        }
        if !host && self.container.is_none() && self.networks.iter().any(|n| n.mode == NetworkMode::Bridge) {
            v.push(Violation::new("/networks", "bridge networking requires a container"));
        }
        if !host && !self.port_definitions.is_empty() {
            v.push(Violation::new("/portDefinitions", "portDefinitions are only allowed with host networking"));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, p) in self.port_definitions.iter().enumerate() {
            let path = format!("/portDefinitions/{i}");
            check_port(&mut v, &format!("{path}/port"), p.port);
            check_protocol(&mut v, &format!("{path}/protocol"), &p.protocol);
            if let Some(n) = &p.name {
                check_port_name(&mut v, &format!("{path}/name"), n);
                if !names.insert(n.clone()) {
                    v.push(Violation::new(format!("{path}/name"), "Port names must be unique."));
                }
            }
        }
        if self.require_ports {
            let mut seen = std::collections::BTreeSet::new();
            for (i, p) in self.port_definitions.iter().enumerate() {
                if p.port == 0 {
                    v.push(Violation::new(
                        format!("/portDefinitions/{i}/port"),
                        "must be set (non-zero) when requirePorts is true",
                    ));
                } else if !seen.insert(p.port) {
                    v.push(Violation::new(format!("/portDefinitions/{i}/port"), "Ports must be unique."));
                }
            }
        }
        let port_count = if host { self.port_definitions.len() } else { self.port_mappings().len() };
        // Fixed host ports: the only ones an explicit health check `port` may name.
        let fixed: Vec<i64> = if host {
            self.port_definitions.iter().filter(|_| self.require_ports).map(|p| p.port).filter(|p| *p > 0).collect()
        } else {
            self.port_mappings().iter().filter_map(|m| m.host_port).filter(|p| *p > 0).collect()
        };
        for (i, hc) in self.health_checks.iter().enumerate() {
            let p = format!("/healthChecks/{i}");
            validate_health_check(&mut v, &p, hc, port_count);
            if hc.protocol == HealthProtocol::Command && self.docker_image().is_some() {
                v.push(Violation::new(
                    format!("{p}/protocol"),
                    "COMMAND health checks of Docker containers are not supported yet",
                ));
            }
            if let Some(port) = hc.port.filter(|p| !fixed.contains(p)) {
                v.push(Violation::new(
                    format!("{p}/port"),
                    format!(
                        "{port} is not one of the app's fixed host ports (requirePorts or a portMapping's \
                         hostPort): a check only probes the task itself; use portIndex"
                    ),
                ));
            }
        }
        if self.readiness_checks.len() > 1 {
            v.push(Violation::new("/readinessChecks", "Only one readinessCheck is allowed per app."));
        }
        let port_names = self.port_names();
        for (i, rc) in self.readiness_checks.iter().enumerate() {
            let p = format!("/readinessChecks/{i}");
            if rc.timeout_seconds >= rc.interval_seconds {
                v.push(Violation::new(format!("{p}/timeoutSeconds"), "must be smaller than intervalSeconds"));
            }
            if rc.timeout_seconds < 0 || rc.interval_seconds <= 0 {
                v.push(Violation::new(
                    format!("{p}/intervalSeconds"),
                    "intervalSeconds must be positive and timeoutSeconds non-negative",
                ));
            }
            if !port_names.iter().any(|n| n.as_deref() == Some(rc.port_name.as_str())) {
                v.push(Violation::new(
                    format!("{p}/portName"),
                    format!("no port named '{}' in the app's ports", rc.port_name),
                ));
            }
            if rc.http_status_codes_for_ready.iter().any(|c| !(100..=599).contains(c))
                || rc.http_status_codes_for_ready.is_empty()
            {
                v.push(Violation::new(
                    format!("{p}/httpStatusCodesForReady"),
                    "must be a non-empty list of HTTP status codes",
                ));
            }
        }
        if let Some(c) = &self.check {
            let n = [c.http.is_some(), c.tcp.is_some(), c.exec.is_some()].iter().filter(|x| **x).count();
            if n != 1 {
                v.push(Violation::new("/check", "must have exactly one of http, tcp or exec"));
            }
        }
        for (name, val) in &self.env {
            if let EnvValue::Secret { secret } = val {
                if !self.secrets.contains_key(secret) {
                    v.push(Violation::new(
                        format!("/env/{}", pointer_escape(name)),
                        format!("references undefined secret '{secret}'"),
                    ));
                }
            }
        }
        if self.dependencies.contains(&self.id) {
            v.push(Violation::new("/dependencies", "an app cannot depend on itself"));
        }
        if let UnreachableStrategy::Enabled { inactive_after_seconds: a, expunge_after_seconds: e } =
            self.unreachable_strategy
        {
            if a < 0 || e < 0 {
                v.push(Violation::new(
                    "/unreachableStrategy",
                    "inactiveAfterSeconds and expungeAfterSeconds must be non-negative",
                ));
            } else if a > e {
                v.push(Violation::new(
                    "/unreachableStrategy/inactiveAfterSeconds",
                    "must be less or equal to expungeAfterSeconds",
                ));
            }
        }
        v
    }
}

fn check_port(v: &mut Vec<Violation>, path: &str, p: i64) {
    if !(0..=65535).contains(&p) {
        v.push(Violation::new(path, "must be between 0 and 65535"));
    }
}

fn check_protocol(v: &mut Vec<Violation>, path: &str, p: &str) {
    if !matches!(p, "tcp" | "udp" | "udp,tcp" | "tcp,udp") {
        v.push(Violation::new(path, "must be one of tcp, udp, udp,tcp"));
    }
}

fn check_port_name(v: &mut Vec<Violation>, path: &str, n: &str) {
    let ok =
        !n.is_empty() && n.len() <= 63 && n.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
    if !ok {
        v.push(Violation::new(path, "must fully match regular expression '^[a-z0-9-]+$'"));
    }
}

fn validate_health_check(v: &mut Vec<Violation>, p: &str, hc: &HealthCheck, port_count: usize) {
    use HealthProtocol::*;
    let is_http = matches!(hc.protocol, Http | Https | MesosHttp | MesosHttps);
    if hc.protocol == Command {
        match &hc.command {
            Some(c) if !c.value.trim().is_empty() => {}
            _ => v.push(Violation::new(format!("{p}/command"), "COMMAND health checks need a command value")),
        }
    } else {
        if hc.command.is_some() {
            v.push(Violation::new(format!("{p}/command"), "only COMMAND health checks take a command"));
        }
        if hc.port.is_some() && hc.port_index.is_some() {
            v.push(Violation::new(p, "Health check must not specify both port and portIndex"));
        }
        if let Some(port) = hc.port {
            check_port(v, &format!("{p}/port"), port);
        } else {
            let idx = hc.port_index.unwrap_or(0);
            if idx < 0 || idx as usize >= port_count {
                v.push(Violation::new(
                    format!("{p}/portIndex"),
                    "Health check port indices must address an element of the ports array or container port mappings.",
                ));
            }
        }
    }
    if !is_http && hc.path.is_some() {
        v.push(Violation::new(format!("{p}/path"), "path is only valid for HTTP and HTTPS health checks"));
    }
    if let Some(path) = &hc.path {
        if !path.starts_with('/') || path.chars().any(|c| c.is_control() || c == ' ') {
            v.push(Violation::new(format!("{p}/path"), "must be an absolute URL path without spaces"));
        }
    }
    for (name, val) in [
        ("gracePeriodSeconds", hc.grace_period_seconds),
        ("timeoutSeconds", hc.timeout_seconds),
        ("maxConsecutiveFailures", hc.max_consecutive_failures),
        ("delaySeconds", hc.delay_seconds),
    ] {
        if val < 0 {
            v.push(Violation::new(format!("{p}/{name}"), "must be non-negative"));
        }
    }
    if hc.interval_seconds <= 0 {
        v.push(Violation::new(format!("{p}/intervalSeconds"), "must be positive"));
    }
    if let Some(ip) = &hc.ip_protocol {
        if ip != "IPv4" && ip != "IPv6" {
            v.push(Violation::new(format!("{p}/ipProtocol"), "must be IPv4 or IPv6"));
        }
    }
}

/// Escapes a key for use inside a JSON pointer (RFC 6901).
pub fn pointer_escape(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// Marathon's version metadata: scaling-only changes move `lastScalingAt`, everything
/// else moves both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    pub last_scaling_at: Timestamp,
    pub last_config_change_at: Timestamp,
}

/// One stored version of an app: the definition plus when it became current.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppVersion {
    pub spec: AppSpec,
    pub version: Timestamp,
    pub version_info: VersionInfo,
}

impl AppVersion {
    /// The version that results from changing `prev` (if any) to `spec` at `now`.
    /// Versions of one app strictly increase even when two changes share a millisecond.
    pub fn next(prev: Option<&AppVersion>, spec: AppSpec, now: Timestamp) -> AppVersion {
        let version = match prev {
            Some(p) if now <= p.version => p.version.plus_millis(1),
            _ => now,
        };
        let last_config_change_at = match prev {
            Some(p) if !p.spec.is_upgrade(&spec) => p.version_info.last_config_change_at,
            _ => version,
        };
        AppVersion { spec, version, version_info: VersionInfo { last_scaling_at: version, last_config_change_at } }
    }
}

impl AppVersion {
    /// A rollback from `current` to the earlier version `target`: a new version with the
    /// target's definition. When the definition differs from the current one by more than
    /// the scale, the configuration is the target's own, so tasks still running it are
    /// the app's current tasks again (a rolled-back upgrade kills only the new tasks).
    pub fn rolled_back(current: &AppVersion, target: &AppVersion, now: Timestamp) -> AppVersion {
        let mut next = AppVersion::next(Some(current), target.spec.clone(), now);
        if current.spec.is_upgrade(&target.spec) {
            next.version_info.last_config_change_at = target.version_info.last_config_change_at;
        }
        next
    }

    /// A restart: same definition, new version, and a config change so every task is
    /// replaced (`POST /v2/apps/{id}/restart`).
    pub fn restarted(prev: &AppVersion, now: Timestamp) -> AppVersion {
        let version = if now <= prev.version { prev.version.plus_millis(1) } else { now };
        AppVersion {
            spec: prev.spec.clone(),
            version,
            version_info: VersionInfo { last_scaling_at: version, last_config_change_at: version },
        }
    }
}
