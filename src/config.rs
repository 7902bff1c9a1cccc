//! Configuration: one struct, filled from command-line flags, then `DROMOS_*`
//! environment variables, then an optional TOML file (`--config`), then defaults.

use crate::domain::resources::{parse_attributes, parse_quota, parse_resources, ParseError, Value};
use crate::domain::{AgentResources, PortRange, Resources, UNRESERVED};
use crate::master::{Liveness, MasterConfig, RemovalLimit};
use crate::scheduler::RolePolicy;
use clap::{Args, Parser, Subcommand};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {0}: {1}")]
    File(PathBuf, std::io::Error),
    #[error("config file {0} is invalid: {1}")]
    Parse(PathBuf, toml::de::Error),
    #[error("cannot read the auth token file {0}: {1}")]
    TokenFile(PathBuf, std::io::Error),
    #[error("the auth token is empty")]
    EmptyToken,
    #[error(
        "refusing to listen on {0} without authentication: set --auth-token-file (or DROMOS_AUTH_TOKEN), \
         or pass --insecure if this network is trusted"
    )]
    InsecureBind(SocketAddr),
    #[error("invalid port range '{0}': use BEGIN-END, e.g. 31000-32000")]
    PortRange(String),
    #[error(transparent)]
    Resources(#[from] ParseError),
    #[error("invalid --master: {0}")]
    Master(String),
    #[error("invalid --templates: {0}")]
    Templates(String),
    #[error("invalid {0} '{1}': {2}")]
    Setting(&'static str, String, &'static str),
    #[error("--etcd elects a leader among masters that share a store: give --store postgres://... too")]
    EtcdNeedsPostgres,
}

#[derive(Debug, Parser)]
#[command(name = "dromos", version, about = "A Marathon/Chronos-compatible scheduler and PaaS in one binary")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the master, an embedded agent and the API (embedded SQLite by default).
    Serve(Box<ServeArgs>),
    /// Run an agent on this host that connects to a master and runs its tasks.
    Agent(AgentArgs),
    /// Run the HAProxy sidecar: keep a local HAProxy routing to the master's apps.
    Haproxy(Box<HaproxyArgs>),
    /// Internal: supervise one task (started by the agent).
    #[command(hide = true)]
    Supervise(SuperviseArgs),
}

#[derive(Debug, Args)]
pub struct SuperviseArgs {
    #[arg(long)]
    pub sandbox: PathBuf,
    #[arg(long, default_value_t = 3000)]
    pub grace_ms: u64,
    /// The agent that started the task: lets a restarted agent whose directory was
    /// wiped tell the master whose tasks it found (see agent::leftovers).
    #[arg(long)]
    pub agent_id: Option<String>,
    /// A cgroup directory to run the task in (repeated: one per hierarchy).
    #[arg(long)]
    pub cgroup: Vec<PathBuf>,
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (flag names as keys).
    #[arg(long, env = "DROMOS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to serve the API on [default: 127.0.0.1:8080].
    #[arg(long, env = "DROMOS_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Directory for the embedded store and the agent's sandboxes [default: ./dromos-data].
    #[arg(long, env = "DROMOS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Store URL: empty for SQLite in the data dir, sqlite://PATH, or postgres://...
    #[arg(long, env = "DROMOS_STORE")]
    pub store: Option<String>,
    /// File holding the API token (required for a non-loopback --listen).
    #[arg(long, env = "DROMOS_AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,
    /// The API token itself (prefer the file: flags show up in `ps`).
    #[arg(long, env = "DROMOS_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,
    /// Allow a non-loopback --listen without a token.
    #[arg(long, env = "DROMOS_INSECURE")]
    pub insecure: bool,
    /// Hostname the embedded agent reports (HOST of its tasks) [default: this machine's].
    #[arg(long, env = "DROMOS_HOSTNAME")]
    pub hostname: Option<String>,
    /// Host ports the embedded agent hands out [default: 31000-32000].
    #[arg(long, env = "DROMOS_AGENT_PORTS")]
    pub agent_ports: Option<String>,
    /// CPUs the embedded agent offers [default: detected].
    #[arg(long, env = "DROMOS_AGENT_CPUS")]
    pub agent_cpus: Option<f64>,
    /// Memory (MB) the embedded agent offers [default: detected].
    #[arg(long, env = "DROMOS_AGENT_MEM")]
    pub agent_mem: Option<f64>,
    /// Disk (MB) the embedded agent offers [default: free space of the data dir].
    #[arg(long, env = "DROMOS_AGENT_DISK")]
    pub agent_disk: Option<f64>,
    /// The embedded agent's resources in Mesos syntax, e.g. 'cpus:4;mem:8192;cpus(batch):2'
    /// (names given here replace the detected values and the flags above).
    #[arg(long, env = "DROMOS_AGENT_RESOURCES")]
    pub agent_resources: Option<String>,
    /// The embedded agent's attributes, e.g. 'rack:r1,zone:a'.
    #[arg(long, env = "DROMOS_AGENT_ATTRIBUTES")]
    pub agent_attributes: Option<String>,
    /// Run without the embedded agent (tasks only run on `dromos agent` hosts).
    #[arg(long, env = "DROMOS_NO_AGENT")]
    pub no_agent: bool,
    /// Run the embedded agent's process tasks without cgroup cpu and memory limits.
    #[arg(long, env = "DROMOS_NO_CGROUPS")]
    pub no_cgroups: bool,
    /// etcd endpoints (comma-separated): several masters on one PostgreSQL store elect
    /// one leader through etcd; the others forward to it.
    #[arg(long, env = "DROMOS_ETCD")]
    pub etcd: Option<String>,
    /// The URL other masters and agents reach this master at [default: http://LISTEN].
    #[arg(long, env = "DROMOS_ADVERTISE")]
    pub advertise: Option<String>,
    /// The etcd election's name: masters with the same one elect one leader [default: /dromos/leader].
    #[arg(long, env = "DROMOS_ELECTION")]
    pub election: Option<String>,
    /// Time to live of the leader's etcd lease: how long a dead leader holds up the next
    /// one [default: 2s].
    #[arg(long, env = "DROMOS_LEADER_LEASE")]
    pub leader_lease: Option<String>,
    /// How often the master pings agents [default: 15s].
    #[arg(long, env = "DROMOS_AGENT_PING_INTERVAL")]
    pub agent_ping_interval: Option<String>,
    /// Missed pings after which an agent is unreachable [default: 5].
    #[arg(long, env = "DROMOS_AGENT_PING_TIMEOUTS")]
    pub agent_ping_timeouts: Option<u32>,
    /// At most this many agents marked unreachable per window: 'N/DURATION',
    /// 'P%/DURATION' (of registered agents, at least 1) or 'off' [default: 10%/1m].
    #[arg(long, env = "DROMOS_AGENT_REMOVAL_RATE_LIMIT")]
    pub agent_removal_rate_limit: Option<String>,
    /// How often every agent re-registers for a full reconciliation [default: 10m].
    #[arg(long, env = "DROMOS_RECONCILE_INTERVAL")]
    pub reconcile_interval: Option<String>,
    /// An agent unreachable this long, with no tasks left, is removed from the registry
    /// [default: 14d].
    #[arg(long, env = "DROMOS_AGENT_FORGET_AFTER")]
    pub agent_forget_after: Option<String>,
    /// A role's weight for fair sharing, ROLE=WEIGHT (repeatable) [default: 1].
    #[arg(long = "role-weight", env = "DROMOS_ROLE_WEIGHTS", value_delimiter = ' ')]
    pub role_weights: Vec<String>,
    /// A role's quota, ROLE=RESOURCES, e.g. 'batch=cpus:10;mem:4096' (repeatable).
    #[arg(long = "role-quota", env = "DROMOS_ROLE_QUOTAS", value_delimiter = ' ')]
    pub role_quotas: Vec<String>,
    /// Let apps run privileged Docker containers (root on the host: trust the API users).
    #[arg(long, env = "DROMOS_ALLOW_PRIVILEGED")]
    pub allow_privileged: bool,
    /// Events a `/v2/events` subscriber may fall behind before it is cut off with an
    /// error (Marathon's flag) [default: 1024].
    #[arg(long, env = "DROMOS_EVENT_STREAM_MAX_OUTSTANDING_MESSAGES")]
    pub event_stream_max_outstanding_messages: Option<usize>,
}

/// How a client of the master (an agent, the HAProxy sidecar) reaches it.
#[derive(Debug, Args, Default)]
pub struct MasterArgs {
    /// The master's URL (several, comma-separated, are tried in turn).
    #[arg(long, env = "DROMOS_MASTER")]
    pub master: String,
    /// File holding the cluster token.
    #[arg(long, env = "DROMOS_AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,
    /// The cluster token itself (prefer the file).
    #[arg(long, env = "DROMOS_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,
}

impl MasterArgs {
    /// The master URLs (at least one) and the token.
    fn resolve(self) -> Result<(Vec<String>, Option<String>), ConfigError> {
        let token = read_token(self.auth_token, self.auth_token_file)?;
        let masters: Vec<String> =
            self.master.split(',').map(|m| m.trim().to_string()).filter(|m| !m.is_empty()).collect();
        if masters.is_empty() {
            return Err(ConfigError::Setting(
                "--master",
                self.master,
                "give the master's URL, e.g. http://10.0.0.1:8080",
            ));
        }
        Ok((masters, token))
    }
}

#[derive(Debug, Args, Default)]
pub struct AgentArgs {
    #[command(flatten)]
    pub master: MasterArgs,
    /// The agent's directory: its id, task sandboxes and checkpoints [default: ./dromos-agent].
    #[arg(long, env = "DROMOS_WORK_DIR")]
    pub work_dir: Option<PathBuf>,
    /// Hostname reported to the master (HOST of tasks) [default: this machine's].
    #[arg(long, env = "DROMOS_HOSTNAME")]
    pub hostname: Option<String>,
    /// Resources in Mesos syntax, e.g. 'cpus:8;mem:16384;ports:[31000-32000];cpus(batch):2'
    /// (names not given are detected; ports default to 31000-32000).
    #[arg(long, env = "DROMOS_RESOURCES")]
    pub resources: Option<String>,
    /// Attributes for placement constraints, e.g. 'rack:r1,zone:a'.
    #[arg(long, env = "DROMOS_ATTRIBUTES")]
    pub attributes: Option<String>,
    /// Run process tasks without cgroup cpu and memory limits.
    #[arg(long, env = "DROMOS_NO_CGROUPS")]
    pub no_cgroups: bool,
}

#[derive(Debug, Args, Default)]
pub struct HaproxyArgs {
    #[command(flatten)]
    pub master: MasterArgs,
    /// The HAProxy config file this sidecar owns.
    #[arg(long, default_value = "/etc/haproxy/haproxy.cfg")]
    pub config: PathBuf,
    /// HAPROXY_GROUP values to expose (repeatable or comma-separated; `*` for all).
    #[arg(long, default_value = "external", value_delimiter = ',')]
    pub group: Vec<String>,
    /// Expose only service ports labelled HAPROXY_{n}_ENABLED=true.
    #[arg(long)]
    pub strict_mode: bool,
    /// The shared HTTP frontend's port (vhost routing); 0 for none.
    #[arg(long, default_value_t = 80)]
    pub http_port: u16,
    /// The shared HTTPS frontend's port (with --ssl-cert).
    #[arg(long, default_value_t = 443)]
    pub https_port: u16,
    /// Certificate files for the shared HTTPS frontend (repeatable).
    #[arg(long)]
    pub ssl_cert: Vec<String>,
    /// Where HAProxy's stats page and Prometheus metrics listen.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub stats_bind: String,
    /// HAProxy's runtime API socket.
    #[arg(long, default_value = "/run/haproxy/admin.sock")]
    pub socket: PathBuf,
    /// HAProxy's master CLI socket.
    #[arg(long, default_value = "/run/haproxy/master.sock")]
    pub master_socket: PathBuf,
    /// Where server states are saved across reloads.
    #[arg(long, default_value = "/var/lib/haproxy/server-state")]
    pub state_file: PathBuf,
    /// A directory of template overrides (files named as marathon-lb's templates).
    #[arg(long)]
    pub templates: Option<PathBuf>,
    /// The haproxy executable.
    #[arg(long, default_value = "haproxy")]
    pub haproxy_bin: PathBuf,
    /// Where this sidecar serves /metrics, /config and /health; empty for nowhere.
    #[arg(long, default_value = "127.0.0.1:9091")]
    pub listen: String,
    /// Least time between two reloads (runtime updates are never held back).
    #[arg(long, default_value = "2s")]
    pub min_reload_interval: String,
    /// How often everything is read afresh, events or not.
    #[arg(long, default_value = "60s")]
    pub resync_interval: String,
    /// How long a removed server keeps its open connections before they are cut.
    #[arg(long, default_value = "30s")]
    pub drain_timeout: String,
    /// This load balancer's name in the reports it sends [default: the hostname].
    #[arg(long)]
    pub name: Option<String>,
    /// Render once and exit: write the validated config (or print it with --stdout).
    #[arg(long)]
    pub once: bool,
    /// With --once: print the config instead of writing it.
    #[arg(long, requires = "once")]
    pub stdout: bool,
}

impl HaproxyArgs {
    pub fn resolve(self) -> Result<crate::proxy::sidecar::SidecarConfig, ConfigError> {
        use crate::proxy::{client::Master, haproxy::Paths, labels::Selection, render::Settings, template};
        let (masters, token) = self.master.resolve()?;
        let masters =
            masters.iter().map(|m| Master::parse(m)).collect::<Result<Vec<_>, _>>().map_err(ConfigError::Master)?;
        let templates = match &self.templates {
            Some(dir) => template::from_dir(dir).map_err(ConfigError::Templates)?,
            None => template::Templates::new(),
        };
        let listen = match self.listen.trim() {
            "" => None,
            l => Some(l.parse().map_err(|_| ConfigError::Setting("--listen", l.into(), "use HOST:PORT"))?),
        };
        let path = |p: &PathBuf| p.to_string_lossy().into_owned();
        let settings = Settings {
            selection: Selection { groups: self.group, strict: self.strict_mode },
            http_port: self.http_port,
            https_port: self.https_port,
            ssl_certs: self.ssl_cert,
            stats_bind: self.stats_bind,
            socket: path(&self.socket),
            state_file: path(&self.state_file),
            templates,
        };
        for (what, p) in [("--socket", &settings.socket), ("--state-file", &settings.state_file)] {
            if p.contains(|c: char| c.is_whitespace() || c == '"' || c == '#') {
                return Err(ConfigError::Setting(what, p.clone(), "must not contain spaces, quotes or '#'"));
            }
        }
        Ok(crate::proxy::sidecar::SidecarConfig {
            masters,
            token,
            settings,
            paths: Paths {
                bin: self.haproxy_bin,
                config: self.config,
                master_socket: self.master_socket,
                socket: self.socket,
                state_file: self.state_file,
            },
            listen,
            min_reload_interval: parse_duration("--min-reload-interval", &self.min_reload_interval)?,
            resync_interval: parse_duration("--resync-interval", &self.resync_interval)?,
            drain_timeout: parse_duration("--drain-timeout", &self.drain_timeout)?,
            name: self.name.unwrap_or_else(machine_hostname),
            once: self.once,
            stdout: self.stdout,
        })
    }
}

/// The token from the flag, or else the file; trimmed, never empty.
fn read_token(token: Option<String>, file: Option<PathBuf>) -> Result<Option<String>, ConfigError> {
    let token = match (token, file) {
        (Some(t), _) => Some(t),
        (None, Some(f)) => Some(std::fs::read_to_string(&f).map_err(|e| ConfigError::TokenFile(f, e))?),
        (None, None) => None,
    }
    .map(|t| t.trim().to_string());
    if token.as_deref() == Some("") {
        return Err(ConfigError::EmptyToken);
    }
    Ok(token)
}

/// The same settings as a file (kebab-case keys, e.g. `data-dir = "/var/lib/dromos"`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    store: Option<String>,
    auth_token_file: Option<PathBuf>,
    insecure: Option<bool>,
    hostname: Option<String>,
    agent_ports: Option<String>,
    agent_cpus: Option<f64>,
    agent_mem: Option<f64>,
    agent_disk: Option<f64>,
    agent_resources: Option<String>,
    agent_attributes: Option<String>,
    no_agent: Option<bool>,
    no_cgroups: Option<bool>,
    etcd: Option<String>,
    advertise: Option<String>,
    election: Option<String>,
    leader_lease: Option<String>,
    agent_ping_interval: Option<String>,
    agent_ping_timeouts: Option<u32>,
    agent_removal_rate_limit: Option<String>,
    reconcile_interval: Option<String>,
    agent_forget_after: Option<String>,
    role_weights: Option<Vec<String>>,
    role_quotas: Option<Vec<String>>,
    allow_privileged: Option<bool>,
    event_stream_max_outstanding_messages: Option<usize>,
}

/// The resolved configuration of `dromos serve`.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub store: String,
    pub auth_token: Option<String>,
    pub insecure: bool,
    pub hostname: String,
    /// The embedded agent's resources and attributes; `None` without an embedded agent.
    pub agent: Option<(AgentResources, BTreeMap<String, Value>)>,
    /// Whether process tasks get cgroup limits where the machine allows it.
    pub cgroups: bool,
    pub master: MasterConfig,
    /// The URL other masters and agents reach this one at.
    pub advertise: String,
    /// The etcd election to join; `None`: this master always leads.
    pub election: Option<crate::master::leadership::EtcdElection>,
}

/// The resolved configuration of `dromos agent`.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    pub masters: Vec<String>,
    pub token: Option<String>,
    pub work_dir: PathBuf,
    pub hostname: String,
    pub resources: AgentResources,
    pub attributes: BTreeMap<String, Value>,
    /// Whether process tasks get cgroup limits where the machine allows it.
    pub cgroups: bool,
}

/// Parses `15s`, `200ms`, `1m`, `20mins`, `1h`.
pub fn parse_duration(what: &'static str, s: &str) -> Result<Duration, ConfigError> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| ConfigError::Setting(what, s.into(), "use e.g. 200ms, 15s, 1m, 1h or 14d"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" | "sec" | "secs" => n,
        "m" | "min" | "mins" => n * 60.0,
        "h" | "hr" | "hrs" => n * 3600.0,
        "d" | "day" | "days" => n * 86400.0,
        _ => return Err(ConfigError::Setting(what, s.into(), "use e.g. 200ms, 15s, 1m, 1h or 14d")),
    };
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(ConfigError::Setting(what, s.into(), "must be positive"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_removal_limit(s: &str) -> Result<RemovalLimit, ConfigError> {
    const W: &str = "agent removal rate limit";
    if s.trim() == "off" {
        return Ok(RemovalLimit::Off);
    }
    let (n, window) = s.split_once('/').ok_or(ConfigError::Setting(W, s.into(), "use N/DURATION or P%/DURATION"))?;
    let window = parse_duration(W, window)?;
    let bad = || ConfigError::Setting(W, s.into(), "use N/DURATION or P%/DURATION");
    match n.trim().strip_suffix('%') {
        Some(p) => {
            let percent: f64 = p.parse().map_err(|_| bad())?;
            if !(percent > 0.0 && percent <= 100.0) {
                return Err(bad());
            }
            Ok(RemovalLimit::Percent { percent, window })
        }
        None => Ok(RemovalLimit::Count { max: n.trim().parse().map_err(|_| bad())?, window }),
    }
}

fn parse_role_policy(weights: &[String], quotas: &[String]) -> Result<RolePolicy, ConfigError> {
    let mut p = RolePolicy::default();
    for w in weights.iter().filter(|w| !w.trim().is_empty()) {
        let bad = || ConfigError::Setting("role weight", w.clone(), "use ROLE=WEIGHT with a positive weight");
        let (role, weight) = w.split_once('=').ok_or_else(bad)?;
        let weight: f64 = weight.trim().parse().map_err(|_| bad())?;
        if !(weight > 0.0 && weight.is_finite() && crate::domain::resources::valid_role(role.trim())) {
            return Err(bad());
        }
        p.weights.insert(role.trim().to_string(), weight);
    }
    for q in quotas.iter().filter(|q| !q.trim().is_empty()) {
        let bad = || ConfigError::Setting("role quota", q.clone(), "use ROLE=cpus:N;mem:N");
        let (role, res) = q.split_once('=').ok_or_else(bad)?;
        if !crate::domain::resources::valid_role(role.trim()) {
            return Err(bad());
        }
        p.quotas.insert(role.trim().to_string(), parse_quota(res)?);
    }
    Ok(p)
}

/// An agent's resources: what `spec` names, the rest from `fallback` (detected or set
/// by other flags), unreserved.
pub fn agent_resources(
    spec: Option<&str>,
    fallback: Resources,
    fallback_ports: Vec<PortRange>,
) -> Result<AgentResources, ConfigError> {
    let mut res = match spec {
        Some(s) => parse_resources(s)?,
        None => AgentResources::default(),
    };
    let named = |n: &str| {
        spec.is_some_and(|s| s.split([';', ',']).any(|i| i.trim().split([':', '(']).next().map(str::trim) == Some(n)))
    };
    let star = res.pools.entry(UNRESERVED.to_string()).or_default();
    if !named("cpus") {
        star.scalars.cpus = fallback.cpus;
    }
    if !named("mem") {
        star.scalars.mem = fallback.mem;
    }
    if !named("disk") {
        star.scalars.disk = fallback.disk;
    }
    if !named("ports") {
        star.ports = fallback_ports;
    }
    Ok(res)
}

fn detected_cpus() -> f64 {
    std::thread::available_parallelism().map(|n| n.get() as f64).unwrap_or(1.0)
}

impl AgentSettings {
    pub fn resolve(a: AgentArgs) -> Result<AgentSettings, ConfigError> {
        let (masters, token) = a.master.resolve()?;
        let work_dir = a.work_dir.unwrap_or_else(|| PathBuf::from("dromos-agent"));
        let dir = if work_dir.exists() { work_dir.as_path() } else { Path::new(".") };
        let fallback = Resources::new(detected_cpus(), detected_mem_mb(), free_disk_mb(dir), 0.0);
        let ports = vec![PortRange::new(31000, 32000)];
        Ok(AgentSettings {
            masters,
            token,
            resources: agent_resources(a.resources.as_deref(), fallback, ports)?,
            attributes: a.attributes.as_deref().map(parse_attributes).transpose()?.unwrap_or_default(),
            hostname: a.hostname.unwrap_or_else(machine_hostname),
            cgroups: !a.no_cgroups,
            work_dir,
        })
    }
}

fn parse_ports(s: &str) -> Result<Vec<PortRange>, ConfigError> {
    s.split(',')
        .map(|r| {
            let (a, b) = r.trim().split_once('-').ok_or_else(|| ConfigError::PortRange(s.into()))?;
            let (a, b): (u16, u16) = (
                a.trim().parse().map_err(|_| ConfigError::PortRange(s.into()))?,
                b.trim().parse().map_err(|_| ConfigError::PortRange(s.into()))?,
            );
            if a == 0 || b < a {
                return Err(ConfigError::PortRange(s.into()));
            }
            Ok(PortRange::new(a, b))
        })
        .collect()
}

fn detected_mem_mb() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| (kb / 1024.0).floor())
        .unwrap_or(1024.0)
}

fn free_disk_mb(dir: &Path) -> f64 {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return 0.0;
    };
    // SAFETY: statvfs fills the zeroed struct for a NUL-terminated path.
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut s) == 0 {
            (s.f_bavail as f64 * s.f_frsize as f64 / 1_048_576.0).floor()
        } else {
            0.0
        }
    }
}

fn machine_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

impl Config {
    /// Merges flags/env (already in `args`, clap gives flags precedence) with the file
    /// and defaults, and checks the security rules.
    pub fn resolve(args: ServeArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| ConfigError::File(p.clone(), e))?;
                toml::from_str::<FileConfig>(&text).map_err(|e| ConfigError::Parse(p.clone(), e))?
            }
            None => FileConfig::default(),
        };
        let listen = args.listen.or(file.listen).unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
        let data_dir = args.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from("dromos-data"));
        let insecure = args.insecure || file.insecure.unwrap_or(false);
        let auth_token = read_token(args.auth_token, args.auth_token_file.or(file.auth_token_file))?;
        if !listen.ip().is_loopback() && auth_token.is_none() && !insecure {
            return Err(ConfigError::InsecureBind(listen));
        }
        let agent_ports = parse_ports(&args.agent_ports.or(file.agent_ports).unwrap_or_else(|| "31000-32000".into()))?;
        let cpus = args.agent_cpus.or(file.agent_cpus).unwrap_or_else(detected_cpus);
        let mem = args.agent_mem.or(file.agent_mem).unwrap_or_else(detected_mem_mb);
        let dir = if data_dir.exists() { data_dir.clone() } else { PathBuf::from(".") };
        let disk = args.agent_disk.or(file.agent_disk).unwrap_or_else(|| free_disk_mb(&dir));
        let spec = args.agent_resources.or(file.agent_resources);
        let resources = agent_resources(spec.as_deref(), Resources::new(cpus, mem, disk, 0.0), agent_ports)?;
        let attributes =
            args.agent_attributes.or(file.agent_attributes).as_deref().map(parse_attributes).transpose()?;
        let defaults = Liveness::default();
        let dur = |what, v: Option<String>, d: Duration| {
            v.map(|v| parse_duration(what, &v)).transpose().map(|x| x.unwrap_or(d))
        };
        let liveness = Liveness {
            ping_interval: dur(
                "agent ping interval",
                args.agent_ping_interval.or(file.agent_ping_interval),
                defaults.ping_interval,
            )?,
            ping_timeouts: args
                .agent_ping_timeouts
                .or(file.agent_ping_timeouts)
                .unwrap_or(defaults.ping_timeouts)
                .max(1),
            removal_limit: match args.agent_removal_rate_limit.or(file.agent_removal_rate_limit) {
                Some(s) => parse_removal_limit(&s)?,
                None => defaults.removal_limit,
            },
            reconcile_interval: dur(
                "reconcile interval",
                args.reconcile_interval.or(file.reconcile_interval),
                defaults.reconcile_interval,
            )?,
            forget_after: dur(
                "agent forget after",
                args.agent_forget_after.or(file.agent_forget_after),
                defaults.forget_after,
            )?,
        };
        let weights =
            if args.role_weights.is_empty() { file.role_weights.unwrap_or_default() } else { args.role_weights };
        let quotas = if args.role_quotas.is_empty() { file.role_quotas.unwrap_or_default() } else { args.role_quotas };
        let no_agent = args.no_agent || file.no_agent.unwrap_or(false);
        let store = args.store.or(file.store).unwrap_or_default();
        let advertise = args.advertise.or(file.advertise).unwrap_or_else(|| format!("http://{listen}"));
        let advertise = advertise.trim_end_matches('/').to_string();
        let election = match args.etcd.or(file.etcd) {
            None => None,
            Some(etcd) => {
                if !(store.starts_with("postgres://") || store.starts_with("postgresql://")) {
                    return Err(ConfigError::EtcdNeedsPostgres);
                }
                let endpoints: Vec<String> =
                    etcd.split(',').map(|e| e.trim().to_string()).filter(|e| !e.is_empty()).collect();
                if endpoints.is_empty() {
                    return Err(ConfigError::Setting(
                        "--etcd",
                        etcd,
                        "give at least one endpoint, e.g. http://etcd1:2379",
                    ));
                }
                let ttl = dur("leader lease", args.leader_lease.or(file.leader_lease), Duration::from_secs(2))?;
                if ttl < Duration::from_secs(2) {
                    return Err(ConfigError::Setting(
                        "--leader-lease",
                        format!("{ttl:?}"),
                        "etcd leases last 2s at least",
                    ));
                }
                Some(crate::master::leadership::EtcdElection {
                    endpoints,
                    name: args.election.or(file.election).unwrap_or_else(|| "/dromos/leader".into()),
                    advertise: advertise.clone(),
                    ttl,
                })
            }
        };
        Ok(Config {
            advertise,
            election,
            listen,
            store,
            data_dir,
            auth_token,
            insecure,
            hostname: args.hostname.or(file.hostname).unwrap_or_else(machine_hostname),
            agent: (!no_agent).then(|| (resources, attributes.unwrap_or_default())),
            cgroups: !(args.no_cgroups || file.no_cgroups.unwrap_or(false)),
            master: MasterConfig {
                liveness,
                roles: parse_role_policy(&weights, &quotas)?,
                allow_privileged: args.allow_privileged || file.allow_privileged.unwrap_or(false),
                event_outstanding: args
                    .event_stream_max_outstanding_messages
                    .or(file.event_stream_max_outstanding_messages)
                    .unwrap_or(crate::events::DEFAULT_OUTSTANDING),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_needs_nothing_but_public_needs_a_token() {
        let c = Config::resolve(ServeArgs::default()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.data_dir, PathBuf::from("dromos-data"));
        let public = ServeArgs { listen: Some("0.0.0.0:8080".parse().unwrap()), ..Default::default() };
        assert!(matches!(Config::resolve(public), Err(ConfigError::InsecureBind(_))));
        let insecure =
            ServeArgs { listen: Some("0.0.0.0:8080".parse().unwrap()), insecure: true, ..Default::default() };
        assert!(Config::resolve(insecure).is_ok());
        let token = ServeArgs {
            listen: Some("0.0.0.0:8080".parse().unwrap()),
            auth_token: Some("t".into()),
            ..Default::default()
        };
        assert_eq!(Config::resolve(token).unwrap().auth_token.as_deref(), Some("t"));
    }

    #[test]
    fn file_fills_what_flags_leave_open() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("dromos.toml");
        std::fs::write(
            &f,
            "listen = \"127.0.0.1:9999\"\ndata-dir = \"/tmp/x\"\nagent-ports = \"4000-4010,5000-5000\"\n",
        )
        .unwrap();
        let c = Config::resolve(ServeArgs {
            config: Some(f.clone()),
            data_dir: Some("/tmp/y".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.listen.port(), 9999);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/y"), "flags win over the file");
        let (res, _) = c.agent.unwrap();
        assert_eq!(res.pools["*"].ports, vec![PortRange::new(4000, 4010), PortRange::new(5000, 5000)]);
        std::fs::write(&f, "lisen = \"x\"\n").unwrap();
        assert!(matches!(
            Config::resolve(ServeArgs { config: Some(f), ..Default::default() }),
            Err(ConfigError::Parse(..))
        ));
    }

    #[test]
    fn liveness_and_roles() {
        let c = Config::resolve(ServeArgs {
            agent_ping_interval: Some("200ms".into()),
            agent_ping_timeouts: Some(3),
            agent_removal_rate_limit: Some("2/30s".into()),
            role_weights: vec!["batch=2".into()],
            role_quotas: vec!["batch=cpus:4;mem:1024".into()],
            agent_resources: Some("cpus:2;cpus(batch):1".into()),
            agent_attributes: Some("rack:r1".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.master.liveness.budget(), Duration::from_millis(600));
        assert_eq!(c.master.liveness.removal_limit, RemovalLimit::Count { max: 2, window: Duration::from_secs(30) });
        assert_eq!(c.master.roles.weights["batch"], 2.0);
        assert_eq!(c.master.roles.quotas["batch"].cpus, Some(4.0));
        let (res, attrs) = c.agent.unwrap();
        assert_eq!(res.pools["*"].scalars.cpus, 2.0);
        assert_eq!(res.pools["batch"].scalars.cpus, 1.0);
        assert!(res.pools["*"].scalars.mem > 0.0, "mem is detected when not named");
        assert_eq!(attrs["rack"].to_string(), "r1");
        for bad in ["x", "1/", "150%/1m", "-1/1m", "1/1y"] {
            assert!(parse_removal_limit(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_removal_limit("10%/1m").unwrap(),
            RemovalLimit::Percent { percent: 10.0, window: Duration::from_secs(60) }
        );
        assert!(parse_role_policy(&["batch=0".into()], &[]).is_err());
        assert!(Config::resolve(ServeArgs { no_agent: true, ..Default::default() }).unwrap().agent.is_none());
    }

    #[test]
    fn etcd_elects_among_masters_on_postgres() {
        let single = Config::resolve(ServeArgs::default()).unwrap();
        assert!(single.election.is_none());
        assert_eq!(single.advertise, "http://127.0.0.1:8080");
        let sqlite = ServeArgs { etcd: Some("http://e1:2379".into()), ..Default::default() };
        assert!(matches!(Config::resolve(sqlite), Err(ConfigError::EtcdNeedsPostgres)));
        let ha = |lease: Option<&str>| ServeArgs {
            store: Some("postgres://db/dromos".into()),
            etcd: Some(" http://e1:2379, http://e2:2379 ,".into()),
            advertise: Some("http://m1:8080/".into()),
            leader_lease: lease.map(str::to_string),
            ..Default::default()
        };
        let c = Config::resolve(ha(None)).unwrap();
        let e = c.election.unwrap();
        assert_eq!(e.endpoints, vec!["http://e1:2379", "http://e2:2379"]);
        assert_eq!((e.name.as_str(), e.ttl), ("/dromos/leader", Duration::from_secs(2)));
        assert_eq!((c.advertise.as_str(), e.advertise.as_str()), ("http://m1:8080", "http://m1:8080"));
        assert_eq!(Config::resolve(ha(Some("10s"))).unwrap().election.unwrap().ttl, Duration::from_secs(10));
        assert!(Config::resolve(ha(Some("1s"))).is_err(), "etcd leases last 2 s at least");
    }

    #[test]
    fn bad_port_ranges() {
        assert!(parse_ports("32000-31000").is_err());
        assert!(parse_ports("abc").is_err());
        assert!(parse_ports("0-10").is_err());
    }

    fn haproxy(args: &[&str]) -> Result<crate::proxy::sidecar::SidecarConfig, ConfigError> {
        let cli = Cli::try_parse_from(["dromos", "haproxy"].iter().chain(args))
            .map_err(|e| ConfigError::Setting("argv", e.to_string(), "does not parse"))?;
        match cli.command {
            Command::Haproxy(a) => a.resolve(),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn haproxy_flags() {
        let c = haproxy(&["--master", "http://m1:8080, m2:8080/prefix", "--group", "external,internal"]).unwrap();
        let masters: Vec<(&str, &str)> = c.masters.iter().map(|m| (m.authority.as_str(), m.prefix.as_str())).collect();
        assert_eq!(masters, [("m1:8080", ""), ("m2:8080", "/prefix")]);
        assert_eq!(c.settings.selection.groups, ["external", "internal"]);
        assert_eq!(c.paths.config, PathBuf::from("/etc/haproxy/haproxy.cfg"));
        assert_eq!(c.settings.socket, "/run/haproxy/admin.sock");
        assert_eq!(c.listen, Some("127.0.0.1:9091".parse().unwrap()));
        assert_eq!((c.min_reload_interval, c.resync_interval), (Duration::from_secs(2), Duration::from_secs(60)));
        assert!(!c.once && !c.stdout);
        let quiet = haproxy(&["--master", "m1:8080", "--listen", "", "--once", "--stdout"]).unwrap();
        assert_eq!((quiet.listen, quiet.once, quiet.stdout), (None, true, true));

        assert!(matches!(haproxy(&["--master", " , "]), Err(ConfigError::Setting("--master", ..))));
        assert!(matches!(haproxy(&["--master", "https://m1"]), Err(ConfigError::Master(_))));
        assert!(haproxy(&["--master", "m1", "--min-reload-interval", "soon"]).is_err());
        assert!(haproxy(&["--master", "m1", "--socket", "/run/my admin.sock"]).is_err());
        assert!(haproxy(&["--master", "m1", "--stdout"]).is_err(), "--stdout needs --once");
        assert!(matches!(haproxy(&["--master", "m1", "--templates", "/nonexistent"]), Err(ConfigError::Templates(_))));
    }
}
