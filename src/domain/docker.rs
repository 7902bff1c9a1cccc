//! What dromos lets an app ask of Docker, checked without touching Docker: the allow-list
//! of `container.docker.parameters` (a safe subset of `docker run` flags) with each
//! value's syntax, host-path volume rules, and image references.
//!
//! Pure: the API runs these checks when an app is submitted (so a bad definition gets a
//! 422 instead of a failing task), and the agent's Docker executor runs them again on
//! what it is about to launch, turning the parsed [`DockerOption`]s into container
//! settings. Nothing here may grant more than a task's own container: flags that reach
//! the host (capabilities, devices, host namespaces, extra mounts, security options,
//! cgroup placement) are not on the list, and dromos' own `dromos.*` labels are reserved.

use super::app::{DockerParameter, Volume, VolumeMode};
use std::net::IpAddr;

/// The `docker run` flags (without the leading `--`) accepted as parameter keys.
pub const ALLOWED_PARAMETERS: &[&str] = &[
    "add-host",
    "cpu-shares",
    "dns",
    "dns-option",
    "dns-search",
    "entrypoint",
    "env",
    "hostname",
    "init",
    "label",
    "log-driver",
    "log-opt",
    "memory-reservation",
    "memory-swap",
    "pids-limit",
    "read-only",
    "shm-size",
    "stop-signal",
    "tmpfs",
    "ulimit",
    "user",
    "workdir",
];

/// Keys that may appear more than once; the others set a single value.
const REPEATABLE: &[&str] =
    &["add-host", "dns", "dns-option", "dns-search", "env", "label", "log-opt", "tmpfs", "ulimit"];

/// Label prefix dromos uses to find its own containers; apps may not set it.
pub const RESERVED_LABEL_PREFIX: &str = "dromos.";

/// Host paths of the Docker control socket. Binding one (or a directory above one) would
/// hand the task control over every container on the host.
pub const DOCKER_SOCKETS: &[&str] = &["/var/run/docker.sock", "/run/docker.sock"];

/// The logging drivers whose output `docker logs` can read back (the agent copies it
/// into the sandbox from there).
const LOG_DRIVERS: &[&str] = &["json-file", "local"];

const ULIMITS: &[&str] = &[
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

const SIGNALS: &[&str] = &[
    "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2", "PIPE", "ALRM", "TERM",
    "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG", "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO",
    "PWR", "SYS",
];

/// Longest accepted parameter value or path, in bytes.
const MAX_VALUE_LEN: usize = 4096;

/// One accepted parameter, parsed into what it sets on the container.
#[derive(Debug, Clone, PartialEq)]
pub enum DockerOption {
    Label {
        key: String,
        value: String,
    },
    Env {
        name: String,
        value: String,
    },
    Workdir(String),
    Hostname(String),
    User(String),
    /// Replaces the image's entrypoint with one program (like `docker run --entrypoint`).
    Entrypoint(String),
    /// Bytes of memory + swap, or -1 for unlimited swap.
    MemorySwap(i64),
    MemoryReservation(i64),
    ShmSize(i64),
    /// -1 for unlimited.
    PidsLimit(i64),
    CpuShares(i64),
    /// -1 stands for unlimited.
    Ulimit {
        name: String,
        soft: i64,
        hard: i64,
    },
    LogDriver(String),
    LogOpt {
        key: String,
        value: String,
    },
    ReadOnly(bool),
    Init(bool),
    /// The signal `docker stop` sends first, as given (`TERM`, `SIGTERM` or a number).
    StopSignal(String),
    /// An `/etc/hosts` entry; `ip` is an address or Docker's `host-gateway`.
    AddHost {
        host: String,
        ip: String,
    },
    Dns(IpAddr),
    DnsSearch(String),
    DnsOption(String),
    /// A tmpfs mount at `path` with mount options (`size=64m,noexec`), possibly empty.
    Tmpfs {
        path: String,
        options: String,
    },
}

/// Checks every parameter: its key must be on the allow-list and its value well-formed.
/// Errors carry the parameter's index, so callers can point at `parameters/<i>`.
pub fn validate_parameters(params: &[DockerParameter]) -> Result<(), Vec<(usize, String)>> {
    parse_parameters(params).map(|_| ())
}

/// Parses the parameters into options, reporting every bad one (index + message).
pub fn parse_parameters(params: &[DockerParameter]) -> Result<Vec<DockerOption>, Vec<(usize, String)>> {
    let mut out = Vec::with_capacity(params.len());
    let mut errors = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (i, p) in params.iter().enumerate() {
        if !REPEATABLE.contains(&p.key.as_str()) && ALLOWED_PARAMETERS.contains(&p.key.as_str()) && !seen.insert(&p.key)
        {
            errors.push((i, format!("'{}' may be given only once", p.key)));
            continue;
        }
        match parse_parameter(&p.key, &p.value) {
            Ok(o) => out.push(o),
            Err(e) => errors.push((i, e)),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Parses one `key`/`value` pair.
pub fn parse_parameter(key: &str, value: &str) -> Result<DockerOption, String> {
    if !ALLOWED_PARAMETERS.contains(&key) {
        return Err(format!("docker parameter '{key}' is not allowed; allowed: {}", ALLOWED_PARAMETERS.join(", ")));
    }
    check_text(value).map_err(|e| format!("{key}: {e}"))?;
    let bad = |why: &str| format!("{key}: {why} (got '{value}')");
    Ok(match key {
        "label" => {
            let (k, v) = value.split_once('=').unwrap_or((value, ""));
            if k.is_empty() {
                return Err(bad("expected key=value"));
            }
            if k.starts_with(RESERVED_LABEL_PREFIX) {
                return Err(bad("labels starting with 'dromos.' are reserved"));
            }
            DockerOption::Label { key: k.to_string(), value: v.to_string() }
        }
        "env" => {
            let (k, v) = value.split_once('=').ok_or_else(|| bad("expected NAME=value"))?;
            if k.is_empty() || k.chars().any(char::is_whitespace) {
                return Err(bad("the variable name must be non-empty without spaces"));
            }
            DockerOption::Env { name: k.to_string(), value: v.to_string() }
        }
        "workdir" => {
            check_abs_path(value).map_err(|e| bad(&e))?;
            DockerOption::Workdir(value.to_string())
        }
        "hostname" => {
            if !is_hostname(value) {
                return Err(bad("expected a hostname (RFC 1123)"));
            }
            DockerOption::Hostname(value.to_string())
        }
        "user" => {
            let ok = match value.split_once(':') {
                Some((u, g)) => is_user_name(u) && is_user_name(g),
                None => is_user_name(value),
            };
            if !ok {
                return Err(bad("expected user[:group] (names or ids)"));
            }
            DockerOption::User(value.to_string())
        }
        "entrypoint" => {
            if value.trim().is_empty() {
                return Err(bad("must not be empty"));
            }
            DockerOption::Entrypoint(value.to_string())
        }
        "memory-swap" => {
            if value == "-1" {
                DockerOption::MemorySwap(-1)
            } else {
                DockerOption::MemorySwap(parse_size(value).map_err(|e| bad(&e))?)
            }
        }
        "memory-reservation" => DockerOption::MemoryReservation(parse_size(value).map_err(|e| bad(&e))?),
        "shm-size" => DockerOption::ShmSize(parse_size(value).map_err(|e| bad(&e))?),
        "pids-limit" => match value.parse::<i64>() {
            Ok(n) if n == -1 || n > 0 => DockerOption::PidsLimit(n),
            _ => return Err(bad("expected a positive number or -1")),
        },
        "cpu-shares" => match value.parse::<i64>() {
            Ok(n) if (2..=262_144).contains(&n) => DockerOption::CpuShares(n),
            _ => return Err(bad("expected a number from 2 to 262144")),
        },
        "ulimit" => parse_ulimit(value).map_err(|e| bad(&e))?,
        "log-driver" => {
            if !LOG_DRIVERS.contains(&value) {
                return Err(bad(&format!("expected one of {}", LOG_DRIVERS.join(", "))));
            }
            DockerOption::LogDriver(value.to_string())
        }
        "log-opt" => parse_log_opt(value).map_err(|e| bad(&e))?,
        "read-only" => DockerOption::ReadOnly(parse_bool(value).ok_or_else(|| bad("expected true or false"))?),
        "init" => DockerOption::Init(parse_bool(value).ok_or_else(|| bad("expected true or false"))?),
        "stop-signal" => {
            if !is_signal(value) {
                return Err(bad("expected a signal name (TERM, SIGTERM) or number"));
            }
            DockerOption::StopSignal(value.to_string())
        }
        "add-host" => {
            let (h, ip) = value.split_once(':').ok_or_else(|| bad("expected host:ip"))?;
            if !is_hostname(h) {
                return Err(bad("expected a hostname before ':'"));
            }
            if ip != "host-gateway" && ip.parse::<IpAddr>().is_err() {
                return Err(bad("expected an IP address (or host-gateway) after ':'"));
            }
            DockerOption::AddHost { host: h.to_string(), ip: ip.to_string() }
        }
        "dns" => DockerOption::Dns(value.parse().map_err(|_| bad("expected an IP address"))?),
        "dns-search" => {
            if value != "." && !is_hostname(value.trim_end_matches('.')) {
                return Err(bad("expected a domain name"));
            }
            DockerOption::DnsSearch(value.to_string())
        }
        "dns-option" => {
            let ok = !value.is_empty() && value.chars().all(|c| c.is_ascii_alphanumeric() || "_:.-".contains(c));
            if !ok {
                return Err(bad("expected an option like ndots:2"));
            }
            DockerOption::DnsOption(value.to_string())
        }
        "tmpfs" => parse_tmpfs(value).map_err(|e| bad(&e))?,
        // Every key of ALLOWED_PARAMETERS has an arm above; this is the list check's twin.
        _ => return Err(format!("docker parameter '{key}' is not allowed")),
    })
}

fn check_text(s: &str) -> Result<(), String> {
    if s.len() > MAX_VALUE_LEN {
        return Err(format!("longer than {MAX_VALUE_LEN} bytes"));
    }
    if s.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

/// RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens.
fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn is_user_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.starts_with(['-', '.'])
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

fn is_signal(s: &str) -> bool {
    if let Ok(n) = s.parse::<u32>() {
        return (1..=64).contains(&n);
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    SIGNALS.contains(&name)
}

/// Parses a Docker size (`512m`, `1g`, `1.5g`, `1024`, `64kb`): binary multiples, bytes
/// without a unit. The result is at least one byte.
pub fn parse_size(s: &str) -> Result<i64, String> {
    let lower = s.trim().to_ascii_lowercase();
    let num_end = lower.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(lower.len());
    let (num, unit) = lower.split_at(num_end);
    let shift = match unit.trim_start() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err("expected a size like 512m or 1g".into()),
    };
    let valid_num = !num.is_empty() && num.matches('.').count() <= 1 && !num.starts_with('.') && !num.ends_with('.');
    if !valid_num {
        return Err("expected a size like 512m or 1g".into());
    }
    let too_large = || "size too large".to_string();
    let unit: i128 = 1 << shift;
    let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
    let whole: i128 = whole.parse().map_err(|_| too_large())?;
    // The fraction, exactly: frac * unit / 10^digits (at most 18 digits are read).
    let digits = frac.len().min(18);
    let frac_bytes = match &frac[..digits] {
        "" => 0,
        f => f.parse::<i128>().map_err(|_| too_large())? * unit / 10i128.pow(digits as u32),
    };
    let bytes = whole.checked_mul(unit).and_then(|b| b.checked_add(frac_bytes)).ok_or_else(too_large)?;
    match i64::try_from(bytes) {
        Ok(b) if b >= 1 => Ok(b),
        Ok(_) => Err("size must be at least one byte".into()),
        Err(_) => Err(too_large()),
    }
}

fn parse_ulimit(value: &str) -> Result<DockerOption, String> {
    let (name, limits) = value.split_once('=').ok_or("expected name=soft[:hard]")?;
    if !ULIMITS.contains(&name) {
        return Err(format!("unknown ulimit '{name}'; known: {}", ULIMITS.join(", ")));
    }
    let limit = |s: &str| match s.parse::<i64>() {
        Ok(n) if n >= -1 => Ok(n),
        _ => Err(format!("'{s}' is not a limit (a number, -1 for unlimited)")),
    };
    let (soft, hard) = match limits.split_once(':') {
        Some((s, h)) => (limit(s)?, limit(h)?),
        None => {
            let l = limit(limits)?;
            (l, l)
        }
    };
    let unlimited = |n: i64| n == -1;
    if !unlimited(hard) && (unlimited(soft) || soft > hard) {
        return Err("the soft limit must not exceed the hard limit".into());
    }
    Ok(DockerOption::Ulimit { name: name.to_string(), soft, hard })
}

fn parse_log_opt(value: &str) -> Result<DockerOption, String> {
    let (k, v) = value.split_once('=').ok_or("expected key=value")?;
    let ok = match k {
        "max-size" | "max-buffer-size" => parse_size(v).is_ok(),
        "max-file" => v.parse::<u32>().is_ok_and(|n| n >= 1),
        "compress" => parse_bool(v).is_some(),
        "mode" => v == "blocking" || v == "non-blocking",
        _ => return Err("allowed log options: max-size, max-file, compress, mode, max-buffer-size".into()),
    };
    if !ok {
        return Err(format!("bad value for log option {k}"));
    }
    Ok(DockerOption::LogOpt { key: k.to_string(), value: v.to_string() })
}

fn parse_tmpfs(value: &str) -> Result<DockerOption, String> {
    let (path, options) = value.split_once(':').unwrap_or((value, ""));
    check_abs_path(path)?;
    if normalize(path) == "/" {
        return Err("cannot mount over /".into());
    }
    for o in options.split(',').filter(|o| !o.is_empty()) {
        let ok = match o.split_once('=') {
            Some(("size", v)) => parse_size(v).is_ok(),
            Some(("mode", v)) => !v.is_empty() && v.len() <= 4 && v.chars().all(|c| ('0'..='7').contains(&c)),
            Some(_) => false,
            None => matches!(o, "rw" | "ro" | "noexec" | "exec" | "nosuid" | "nodev"),
        };
        if !ok {
            return Err(format!(
                "tmpfs option '{o}' is not allowed (size=, mode=, rw, ro, noexec, exec, nosuid, nodev)"
            ));
        }
    }
    Ok(DockerOption::Tmpfs { path: path.to_string(), options: options.to_string() })
}

/// An absolute path without `..` segments, control characters or `:` (which Docker's
/// bind syntax would split on).
fn check_abs_path(p: &str) -> Result<(), String> {
    check_text(p)?;
    if !p.starts_with('/') {
        return Err(format!("'{p}' must be an absolute path"));
    }
    if p.split('/').any(|seg| seg == "..") {
        return Err(format!("'{p}' must not contain '..'"));
    }
    if p.contains(':') {
        return Err(format!("'{p}' must not contain ':'"));
    }
    Ok(())
}

/// `p` with repeated and trailing slashes and `.` segments removed (`/a//b/./` -> `/a/b`).
fn normalize(p: &str) -> String {
    let segs: Vec<&str> = p.split('/').filter(|s| !s.is_empty() && *s != ".").collect();
    format!("/{}", segs.join("/"))
}

/// Checks one host bind: both paths absolute and clean, and the host path is neither `/`
/// nor the Docker socket nor a directory that contains it. The agent calls this again
/// with the symlink-resolved host path.
pub fn check_host_bind(container_path: &str, host_path: &str) -> Result<(), String> {
    check_abs_path(container_path).map_err(|e| format!("containerPath: {e}"))?;
    check_abs_path(host_path).map_err(|e| format!("hostPath: {e}"))?;
    if normalize(container_path) == "/" {
        return Err("containerPath: cannot mount over /".into());
    }
    let host = normalize(host_path);
    if host == "/" {
        return Err("hostPath: binding the host's / is not allowed".into());
    }
    for sock in DOCKER_SOCKETS {
        if *sock == host || sock.starts_with(&format!("{host}/")) {
            return Err(format!("hostPath: '{host_path}' would expose the Docker socket {sock}"));
        }
    }
    Ok(())
}

/// Checks the `hostPath` volumes of a Docker container (other volume kinds are not the
/// Docker executor's business): paths as in [`check_host_bind`] and a mode (RO or RW).
pub fn validate_volumes(volumes: &[Volume]) -> Result<(), Vec<(usize, String)>> {
    let mut errors = Vec::new();
    for (i, v) in volumes.iter().enumerate() {
        let Some(host) = &v.host_path else { continue };
        if let Err(e) = check_host_bind(&v.container_path, host) {
            errors.push((i, e));
        }
        if !matches!(v.mode, Some(VolumeMode::RO | VolumeMode::RW)) {
            errors.push((i, "mode: must be RO or RW".into()));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Checks an image reference's characters (not its registry grammar: Docker does that).
pub fn check_image(image: &str) -> Result<(), String> {
    if image.is_empty() || image.len() > 512 {
        return Err("image: must be 1 to 512 characters".into());
    }
    if image.starts_with('-') || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("image: '{image}' is not an image reference"));
    }
    Ok(())
}

/// The reference to pull: the image itself if it names a tag or digest, else `:latest`
/// (a name-only pull would fetch every tag of the repository).
pub fn pull_reference(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if last.contains('@') || last.contains(':') {
        image.to_string()
    } else {
        format!("{image}:latest")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(key: &str, value: &str) -> DockerParameter {
        DockerParameter { key: key.into(), value: value.into() }
    }

    fn one(key: &str, value: &str) -> Result<DockerOption, String> {
        parse_parameter(key, value)
    }

    #[test]
    fn every_allowed_key_has_a_parser() {
        for key in ALLOWED_PARAMETERS {
            let err = one(key, "\u{1}").unwrap_err();
            assert!(err.contains("control"), "{key}: {err}");
        }
    }

    #[test]
    fn dangerous_flags_are_rejected() {
        for key in [
            "cap-add",
            "device",
            "pid",
            "ipc",
            "network",
            "net",
            "volume",
            "v",
            "security-opt",
            "privileged",
            "userns",
            "cgroup-parent",
            "mount",
            "uts",
            "volumes-from",
            "memory",
            "cpus",
            "restart",
            "publish",
            "tty",
        ] {
            let err = one(key, "x").unwrap_err();
            assert!(err.contains("not allowed"), "{key}: {err}");
        }
    }

    #[test]
    fn validate_reports_each_bad_index() {
        let params =
            [p("label", "a=b"), p("cap-add", "ALL"), p("env", "X=1"), p("shm-size", "lots"), p("init", "true")];
        let errs = validate_parameters(&params).unwrap_err();
        let idx: Vec<usize> = errs.iter().map(|e| e.0).collect();
        assert_eq!(idx, [1, 3]);
        assert!(validate_parameters(&[p("label", "a=b"), p("env", "X=1")]).is_ok());
        assert!(validate_parameters(&[]).is_ok());
    }

    #[test]
    fn single_valued_keys_may_not_repeat() {
        let errs =
            validate_parameters(&[p("user", "1"), p("user", "2"), p("label", "a"), p("label", "b")]).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].0, 1);
    }

    #[test]
    fn labels() {
        assert_eq!(
            one("label", "team=shop").unwrap(),
            DockerOption::Label { key: "team".into(), value: "shop".into() }
        );
        assert_eq!(one("label", "flag").unwrap(), DockerOption::Label { key: "flag".into(), value: "".into() });
        assert_eq!(one("label", "a=b=c").unwrap(), DockerOption::Label { key: "a".into(), value: "b=c".into() });
        assert!(one("label", "=v").is_err());
        assert!(one("label", "dromos.task-id=x").unwrap_err().contains("reserved"));
        assert!(one("label", "a=b\nc").is_err());
    }

    #[test]
    fn env_and_paths() {
        assert_eq!(one("env", "A=1=2").unwrap(), DockerOption::Env { name: "A".into(), value: "1=2".into() });
        assert_eq!(one("env", "A=").unwrap(), DockerOption::Env { name: "A".into(), value: "".into() });
        assert!(one("env", "A").is_err());
        assert!(one("env", "A B=1").is_err());
        assert!(one("workdir", "/srv/app").is_ok());
        assert!(one("workdir", "srv").is_err());
        assert!(one("workdir", "/srv/../etc").is_err());
        assert!(one("entrypoint", "/bin/run").is_ok());
        assert!(one("entrypoint", " ").is_err());
    }

    #[test]
    fn hostnames_users_signals() {
        assert!(one("hostname", "web-1.example.com").is_ok());
        for bad in ["-web", "web-", "a..b", "we b", "x_y", ""] {
            assert!(one("hostname", bad).is_err(), "{bad}");
        }
        for good in ["nobody", "1000", "1000:1000", "app:staff", "www-data"] {
            assert!(one("user", good).is_ok(), "{good}");
        }
        for bad in ["", "a:b:c", "-x", "a b", "root:"] {
            assert!(one("user", bad).is_err(), "{bad}");
        }
        for good in ["TERM", "SIGTERM", "sigquit", "15", "64"] {
            assert!(one("stop-signal", good).is_ok(), "{good}");
        }
        for bad in ["0", "65", "SIGFOO", ""] {
            assert!(one("stop-signal", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("64k").unwrap(), 64 << 10);
        assert_eq!(parse_size("512m").unwrap(), 512 << 20);
        assert_eq!(parse_size("512MB").unwrap(), 512 << 20);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("1.5g").unwrap(), 3 << 29);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("10b").unwrap(), 10);
        for bad in ["", "m", "1.2.3m", "-1m", "1x", ".5g", "5.g", "0", "99999999999999999999t", "9".repeat(60).as_str()]
        {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(one("memory-swap", "-1").unwrap(), DockerOption::MemorySwap(-1));
        assert_eq!(one("memory-swap", "1g").unwrap(), DockerOption::MemorySwap(1 << 30));
        assert_eq!(one("shm-size", "64m").unwrap(), DockerOption::ShmSize(64 << 20));
        assert!(one("memory-reservation", "-1").is_err());
    }

    #[test]
    fn numbers_and_booleans() {
        assert_eq!(one("pids-limit", "100").unwrap(), DockerOption::PidsLimit(100));
        assert_eq!(one("pids-limit", "-1").unwrap(), DockerOption::PidsLimit(-1));
        assert!(one("pids-limit", "0").is_err());
        assert!(one("cpu-shares", "1").is_err());
        assert_eq!(one("cpu-shares", "512").unwrap(), DockerOption::CpuShares(512));
        assert_eq!(one("read-only", "true").unwrap(), DockerOption::ReadOnly(true));
        assert_eq!(one("init", "FALSE").unwrap(), DockerOption::Init(false));
        assert!(one("init", "yes").is_err());
    }

    #[test]
    fn ulimits() {
        assert_eq!(
            one("ulimit", "nofile=1024:4096").unwrap(),
            DockerOption::Ulimit { name: "nofile".into(), soft: 1024, hard: 4096 }
        );
        assert_eq!(one("ulimit", "core=0").unwrap(), DockerOption::Ulimit { name: "core".into(), soft: 0, hard: 0 });
        assert_eq!(
            one("ulimit", "memlock=-1:-1").unwrap(),
            DockerOption::Ulimit { name: "memlock".into(), soft: -1, hard: -1 }
        );
        for bad in ["nofile", "nofile=", "nofile=a", "nofile=10:5", "nofile=-1:5", "bogus=1", "nofile=1:2:3", "=1"] {
            assert!(one("ulimit", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn logging() {
        assert!(one("log-driver", "json-file").is_ok());
        assert!(one("log-driver", "local").is_ok());
        assert!(one("log-driver", "syslog").is_err());
        assert!(one("log-driver", "none").is_err());
        assert!(one("log-opt", "max-size=10m").is_ok());
        assert!(one("log-opt", "max-file=3").is_ok());
        assert!(one("log-opt", "max-file=0").is_err());
        assert!(one("log-opt", "syslog-address=tcp://x").is_err());
        assert!(one("log-opt", "max-size").is_err());
    }

    #[test]
    fn networking_helpers() {
        assert_eq!(
            one("add-host", "db:10.0.0.5").unwrap(),
            DockerOption::AddHost { host: "db".into(), ip: "10.0.0.5".into() }
        );
        assert!(one("add-host", "db:::1").is_ok());
        assert!(one("add-host", "gw:host-gateway").is_ok());
        assert!(one("add-host", "db").is_err());
        assert!(one("add-host", "db:nope").is_err());
        assert!(one("dns", "10.0.0.2").is_ok());
        assert!(one("dns", "dns.example").is_err());
        assert!(one("dns-search", "svc.example.com").is_ok());
        assert!(one("dns-search", "bad domain").is_err());
        assert!(one("dns-option", "ndots:2").is_ok());
        assert!(one("dns-option", "a b").is_err());
    }

    #[test]
    fn tmpfs() {
        assert_eq!(
            one("tmpfs", "/run:size=64m,noexec,mode=1777").unwrap(),
            DockerOption::Tmpfs { path: "/run".into(), options: "size=64m,noexec,mode=1777".into() }
        );
        assert_eq!(
            one("tmpfs", "/scratch").unwrap(),
            DockerOption::Tmpfs { path: "/scratch".into(), options: "".into() }
        );
        for bad in ["scratch", "/", "/a/../b", "/x:suid", "/x:size=lots", "/x:mode=999", "/x:uid=0"] {
            assert!(one("tmpfs", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_binds() {
        assert!(check_host_bind("/data", "/srv/data").is_ok());
        assert!(check_host_bind("/data", "/var/lib/app").is_ok());
        assert!(check_host_bind("/data", "/runner").is_ok());
        let bad = [
            ("/data", "srv/data"),
            ("data", "/srv/data"),
            ("/data", "/srv/../etc"),
            ("/data/..", "/srv"),
            ("/data", "/"),
            ("/data", "//"),
            ("/data", "/./"),
            ("/", "/srv"),
            ("/sock", "/var/run/docker.sock"),
            ("/sock", "/run/docker.sock"),
            ("/sock", "//run//docker.sock/"),
            ("/sock", "/run/./docker.sock"),
            ("/run", "/run"),
            ("/run", "/var/run"),
            ("/var", "/var"),
            ("/a", "/srv/a:b"),
            ("/a", "/srv/a\n"),
        ];
        for (c, h) in bad {
            assert!(check_host_bind(c, h).is_err(), "{c} <- {h}");
        }
    }

    #[test]
    fn volumes() {
        let vol = |c: &str, h: Option<&str>, mode: Option<VolumeMode>| Volume {
            container_path: c.into(),
            host_path: h.map(String::from),
            mode,
            persistent: None,
            external: None,
            secret: None,
        };
        let ok =
            [vol("/data", Some("/srv/data"), Some(VolumeMode::RO)), vol("/w", Some("/tmp/w"), Some(VolumeMode::RW))];
        assert!(validate_volumes(&ok).is_ok());
        let bad = [
            vol("/data", Some("/srv/data"), Some(VolumeMode::RW)),
            vol("/sock", Some("/var/run/docker.sock"), Some(VolumeMode::RO)),
            vol("/data", Some("/srv/data"), None),
            vol("relative", None, Some(VolumeMode::RW)),
        ];
        let errs = validate_volumes(&bad).unwrap_err();
        assert_eq!(errs.iter().map(|e| e.0).collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn images() {
        assert_eq!(pull_reference("busybox"), "busybox:latest");
        assert_eq!(pull_reference("busybox:1.36"), "busybox:1.36");
        assert_eq!(pull_reference("registry:5000/team/app"), "registry:5000/team/app:latest");
        assert_eq!(pull_reference("registry:5000/team/app:2"), "registry:5000/team/app:2");
        assert_eq!(pull_reference("app@sha256:abcd"), "app@sha256:abcd");
        assert!(check_image("busybox:1").is_ok());
        assert!(check_image("").is_err());
        assert!(check_image("-rm").is_err());
        assert!(check_image("a b").is_err());
    }
}
