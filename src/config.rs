//! Configuration: one struct, filled from command-line flags, then `DROMOS_*`
//! environment variables, then an optional TOML file (`--config`), then defaults.

use crate::domain::{PortRange, Resources};
use clap::{Args, Parser, Subcommand};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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
    Serve(ServeArgs),
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
    pub agent_resources: Resources,
    pub agent_ports: Vec<PortRange>,
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
        let auth_token = match (args.auth_token, args.auth_token_file.or(file.auth_token_file)) {
            (Some(t), _) => Some(t),
            (None, Some(f)) => Some(std::fs::read_to_string(&f).map_err(|e| ConfigError::TokenFile(f, e))?),
            (None, None) => None,
        }
        .map(|t| t.trim().to_string());
        if auth_token.as_deref() == Some("") {
            return Err(ConfigError::EmptyToken);
        }
        if !listen.ip().is_loopback() && auth_token.is_none() && !insecure {
            return Err(ConfigError::InsecureBind(listen));
        }
        let agent_ports = parse_ports(&args.agent_ports.or(file.agent_ports).unwrap_or_else(|| "31000-32000".into()))?;
        let cpus = args
            .agent_cpus
            .or(file.agent_cpus)
            .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get() as f64).unwrap_or(1.0));
        let mem = args.agent_mem.or(file.agent_mem).unwrap_or_else(detected_mem_mb);
        let disk = args
            .agent_disk
            .or(file.agent_disk)
            .unwrap_or_else(|| free_disk_mb(if data_dir.exists() { &data_dir } else { Path::new(".") }));
        Ok(Config {
            listen,
            store: args.store.or(file.store).unwrap_or_default(),
            data_dir,
            auth_token,
            insecure,
            hostname: args.hostname.or(file.hostname).unwrap_or_else(machine_hostname),
            agent_resources: Resources::new(cpus, mem, disk, 0.0),
            agent_ports,
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
        assert_eq!(c.agent_ports, vec![PortRange::new(4000, 4010), PortRange::new(5000, 5000)]);
        std::fs::write(&f, "lisen = \"x\"\n").unwrap();
        assert!(matches!(
            Config::resolve(ServeArgs { config: Some(f), ..Default::default() }),
            Err(ConfigError::Parse(..))
        ));
    }

    #[test]
    fn bad_port_ranges() {
        assert!(parse_ports("32000-31000").is_err());
        assert!(parse_ports("abc").is_err());
        assert!(parse_ports("0-10").is_err());
    }
}
