//! Resources an agent offers and a task needs, and the attributes that describe an agent.
//!
//! An agent's resources are Mesos-style named values: scalars (`cpus`, `mem`, `disk`,
//! `gpus` and any custom name), ranges (`ports`) and sets, each either unreserved (role
//! `*`) or statically reserved for one role: `cpus:8;mem:16384;ports:[31000-32000];cpus(batch):2`.
//! Tasks need the four standard scalars ([`Resources`]) and host ports.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The role of resources that are not reserved for anyone.
pub const UNRESERVED: &str = "*";

/// The standard scalar resources. Memory and disk in MB, as in Marathon's app JSON.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Resources {
    pub cpus: f64,
    pub mem: f64,
    pub disk: f64,
    pub gpus: f64,
}

/// Small epsilon so that 10 × 0.1 cpus fit into 1.0 cpus despite float rounding.
pub const EPS: f64 = 1e-9;

impl Resources {
    pub fn new(cpus: f64, mem: f64, disk: f64, gpus: f64) -> Self {
        Resources { cpus, mem, disk, gpus }
    }

    fn amounts(&self) -> [f64; 4] {
        [self.cpus, self.mem, self.disk, self.gpus]
    }

    pub fn fits_in(&self, free: &Resources) -> bool {
        self.amounts().iter().zip(free.amounts()).all(|(n, f)| *n <= f + EPS)
    }

    pub fn add(&mut self, o: &Resources) {
        self.cpus += o.cpus;
        self.mem += o.mem;
        self.disk += o.disk;
        self.gpus += o.gpus;
    }

    pub fn sub(&mut self, o: &Resources) {
        self.cpus -= o.cpus;
        self.mem -= o.mem;
        self.disk -= o.disk;
        self.gpus -= o.gpus;
    }

    /// The part of `self` that `pool` can give, taken out of both (per resource).
    pub fn take_from(&mut self, pool: &mut Resources) {
        for (need, free) in [
            (&mut self.cpus, &mut pool.cpus),
            (&mut self.mem, &mut pool.mem),
            (&mut self.disk, &mut pool.disk),
            (&mut self.gpus, &mut pool.gpus),
        ] {
            let t = need.min(free.max(0.0));
            *need -= t;
            *free -= t;
        }
    }

    /// The largest share of `total` this amount is (Dominant Resource Fairness).
    /// Resources the cluster has none of do not count.
    pub fn dominant_share(&self, total: &Resources) -> f64 {
        self.amounts().iter().zip(total.amounts()).filter(|(_, t)| *t > EPS).map(|(u, t)| u / t).fold(0.0, f64::max)
    }

    /// Whether `self` (e.g. usage plus one more task) stays within `limit`, on the
    /// resources `limit` names (quota fields left out are unlimited).
    pub fn within(&self, limit: &Quota) -> bool {
        let mine = self.amounts();
        [limit.cpus, limit.mem, limit.disk, limit.gpus].iter().zip(mine).all(|(l, m)| l.is_none_or(|l| m <= l + EPS))
    }
}

/// A role's quota: an upper limit on what its tasks may use in the whole cluster.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Quota {
    pub cpus: Option<f64>,
    pub mem: Option<f64>,
    pub disk: Option<f64>,
    pub gpus: Option<f64>,
}

/// An inclusive range of host ports (`[31000-32000]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRange {
    pub begin: u16,
    pub end: u16,
}

impl PortRange {
    pub fn new(begin: u16, end: u16) -> Self {
        PortRange { begin, end }
    }

    pub fn contains(&self, p: u16) -> bool {
        self.begin <= p && p <= self.end
    }

    pub fn len(&self) -> usize {
        if self.end < self.begin {
            0
        } else {
            (self.end - self.begin) as usize + 1
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Port ranges as Mesos prints them: `[31000-32000,33000-33100]`.
pub fn ports_text(ranges: &[PortRange]) -> String {
    let parts: Vec<String> = ranges.iter().map(|r| format!("{}-{}", r.begin, r.end)).collect();
    format!("[{}]", parts.join(","))
}

/// A general range (custom range resources and range attributes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    pub begin: u64,
    pub end: u64,
}

/// The value of a custom resource or of an attribute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Value {
    Scalar(f64),
    Ranges(Vec<Range>),
    Set(BTreeSet<String>),
    Text(String),
}

impl fmt::Display for Value {
    /// Marathon's formatting of attribute values for constraints: scalars with at most
    /// three decimals, ranges as `[b-e,...]`, sets as `{a,b}` (sorted).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Scalar(x) => f.write_str(&format_scalar(*x)),
            Value::Text(t) => f.write_str(t),
            Value::Ranges(rs) => {
                let parts: Vec<String> = rs.iter().map(|r| format!("{}-{}", r.begin, r.end)).collect();
                write!(f, "[{}]", parts.join(","))
            }
            Value::Set(items) => write!(f, "{{{}}}", items.iter().cloned().collect::<Vec<_>>().join(",")),
        }
    }
}

/// A scalar as Marathon prints it (`DecimalFormat("0.###")`, half-even rounding).
pub fn format_scalar(x: f64) -> String {
    let scaled = x * 1000.0;
    let floor = scaled.floor();
    let diff = scaled - floor;
    let rounded = if (diff - 0.5).abs() < 1e-9 {
        if floor % 2.0 == 0.0 {
            floor
        } else {
            floor + 1.0
        }
    } else {
        scaled.round()
    };
    let v = rounded / 1000.0;
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

/// What an agent offers to one role (`*` = unreserved).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pool {
    pub scalars: Resources,
    #[serde(default)]
    pub ports: Vec<PortRange>,
    /// Custom resources (any other name), shown to operators; apps cannot ask for them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub other: BTreeMap<String, Value>,
}

/// Everything an agent offers, by role.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AgentResources {
    pub pools: BTreeMap<String, Pool>,
}

impl AgentResources {
    /// Only unreserved resources.
    pub fn unreserved(scalars: Resources, ports: Vec<PortRange>) -> AgentResources {
        let mut pools = BTreeMap::new();
        pools.insert(UNRESERVED.to_string(), Pool { scalars, ports, other: BTreeMap::new() });
        AgentResources { pools }
    }

    /// The sum of the standard scalars over all roles.
    pub fn total(&self) -> Resources {
        let mut t = Resources::default();
        for p in self.pools.values() {
            t.add(&p.scalars);
        }
        t
    }

    /// The sum over the roles other than `*`.
    pub fn reserved(&self) -> Resources {
        let mut t = Resources::default();
        for (_, p) in self.pools.iter().filter(|(r, _)| r.as_str() != UNRESERVED) {
            t.add(&p.scalars);
        }
        t
    }

    /// All port ranges, over all roles.
    pub fn all_ports(&self) -> Vec<PortRange> {
        self.pools.values().flat_map(|p| p.ports.iter().copied()).collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} '{item}': {why}")]
pub struct ParseError {
    pub what: &'static str,
    pub item: String,
    pub why: String,
}

fn perr(what: &'static str, item: &str, why: impl Into<String>) -> ParseError {
    ParseError { what, item: item.to_string(), why: why.into() }
}

/// Splits on `;` and `,` that are not inside `[...]` or `{...}`.
fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '[' | '{' => depth += 1,
            ']' | '}' => depth -= 1,
            ';' | ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter().map(str::trim).filter(|p| !p.is_empty()).collect()
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 128
        && n.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
        && !n.starts_with('.')
}

/// Parses a value: a number, `[a-b,c-d]`, `{x,y}`, or (when `text_ok`) plain text.
fn parse_value(what: &'static str, item: &str, v: &str, text_ok: bool) -> Result<Value, ParseError> {
    let v = v.trim();
    if let Some(inner) = v.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        let mut ranges = Vec::new();
        for part in inner.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let (a, b) = match (a.trim().parse::<u64>(), b.trim().parse::<u64>()) {
                (Ok(a), Ok(b)) if a <= b => (a, b),
                _ => return Err(perr(what, item, format!("'{part}' is not a range like 31000-32000"))),
            };
            ranges.push(Range { begin: a, end: b });
        }
        return Ok(Value::Ranges(ranges));
    }
    if let Some(inner) = v.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
        let items: BTreeSet<String> =
            inner.split(',').map(str::trim).filter(|p| !p.is_empty()).map(str::to_string).collect();
        if items.iter().any(|i| i.chars().any(|c| c.is_control())) {
            return Err(perr(what, item, "control characters are not allowed"));
        }
        return Ok(Value::Set(items));
    }
    if let Ok(x) = v.parse::<f64>() {
        if !x.is_finite() {
            return Err(perr(what, item, "not a finite number"));
        }
        return Ok(Value::Scalar(x));
    }
    if text_ok && !v.is_empty() && v.len() <= 256 && !v.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Ok(Value::Text(v.to_string()));
    }
    Err(perr(what, item, "expected a number, [ranges] or {set}"))
}

/// Parses Mesos's resource syntax: `name[(role)]:value` separated by `;` (or `,`).
/// Standard names fill [`Pool::scalars`]; `ports` must be ranges within 1-65535.
pub fn parse_resources(s: &str) -> Result<AgentResources, ParseError> {
    const W: &str = "resource";
    let mut res = AgentResources::default();
    for item in split_top(s) {
        let (key, value) = item.split_once(':').ok_or_else(|| perr(W, item, "expected name:value"))?;
        let key = key.trim();
        let (name, role) = match key.split_once('(') {
            Some((n, r)) => {
                let r = r.strip_suffix(')').ok_or_else(|| perr(W, item, "expected name(role)"))?;
                (n.trim(), r.trim())
            }
            None => (key, UNRESERVED),
        };
        if !valid_name(name) {
            return Err(perr(W, item, "names use letters, digits, '_', '-', '.'"));
        }
        if role != UNRESERVED && !valid_role(role) {
            return Err(perr(W, item, "roles use letters, digits, '_', '-', '.', '/'"));
        }
        let value = parse_value(W, item, value, false)?;
        let pool = res.pools.entry(role.to_string()).or_default();
        match (name, value) {
            ("cpus" | "mem" | "disk" | "gpus", Value::Scalar(x)) => {
                if x < 0.0 {
                    return Err(perr(W, item, "must not be negative"));
                }
                let slot = match name {
                    "cpus" => &mut pool.scalars.cpus,
                    "mem" => &mut pool.scalars.mem,
                    "disk" => &mut pool.scalars.disk,
                    _ => &mut pool.scalars.gpus,
                };
                *slot = x;
            }
            ("cpus" | "mem" | "disk" | "gpus", _) => return Err(perr(W, item, "must be a number")),
            ("ports", Value::Ranges(rs)) => {
                for r in rs {
                    if r.begin == 0 || r.end > u16::MAX as u64 {
                        return Err(perr(W, item, "ports must be within 1-65535"));
                    }
                    pool.ports.push(PortRange::new(r.begin as u16, r.end as u16));
                }
            }
            ("ports", _) => return Err(perr(W, item, "must be ranges like [31000-32000]")),
            (_, v) => {
                pool.other.insert(name.to_string(), v);
            }
        }
    }
    // Reserved port ranges must not overlap each other.
    let mut all = res.all_ports();
    all.sort_by_key(|r| r.begin);
    if all.windows(2).any(|w| w[1].begin <= w[0].end) {
        return Err(perr(W, s, "port ranges overlap"));
    }
    Ok(res)
}

/// Role names: Mesos's rules (no `.`/`..`, no leading `-`, a safe character set).
pub fn valid_role(r: &str) -> bool {
    r == UNRESERVED
        || (valid_name(r) && !r.starts_with('-') && r != ".." && !r.split('/').any(|seg| seg.is_empty() || seg == ".."))
}

/// Parses agent attributes: `rack:r1,zone:a` or `rack:r1;zone:a`; values are text,
/// numbers, `[ranges]` or `{sets}`.
pub fn parse_attributes(s: &str) -> Result<BTreeMap<String, Value>, ParseError> {
    const W: &str = "attribute";
    let mut out = BTreeMap::new();
    for item in split_top(s) {
        let (name, value) = item.split_once(':').ok_or_else(|| perr(W, item, "expected name:value"))?;
        let name = name.trim();
        if !valid_name(name) {
            return Err(perr(W, item, "names use letters, digits, '_', '-', '.'"));
        }
        out.insert(name.to_string(), parse_value(W, item, value, true)?);
    }
    Ok(out)
}

/// Parses a quota: `cpus:10;mem:2048` (standard scalars only).
pub fn parse_quota(s: &str) -> Result<Quota, ParseError> {
    let res = parse_resources(s)?;
    let pool = res.pools.get(UNRESERVED).cloned().unwrap_or_default();
    if res.pools.len() > 1 || !pool.ports.is_empty() || !pool.other.is_empty() {
        return Err(perr("quota", s, "a quota names cpus, mem, disk and gpus only"));
    }
    let named = |n: &str| split_top(s).iter().any(|i| i.split(':').next().map(str::trim) == Some(n));
    let pick = |n: &str, v: f64| named(n).then_some(v);
    Ok(Quota {
        cpus: pick("cpus", pool.scalars.cpus),
        mem: pick("mem", pool.scalars.mem),
        disk: pick("disk", pool.scalars.disk),
        gpus: pick("gpus", pool.scalars.gpus),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mesos_resources_with_roles() {
        let r = parse_resources("cpus:8;mem:16384;ports:[31000-32000];gpus:0;cpus(batch):2;mem(batch):1024;ssd:{a,b}")
            .unwrap();
        let star = &r.pools["*"];
        assert_eq!(star.scalars, Resources::new(8.0, 16384.0, 0.0, 0.0));
        assert_eq!(star.ports, vec![PortRange::new(31000, 32000)]);
        assert_eq!(star.other["ssd"].to_string(), "{a,b}");
        assert_eq!(r.pools["batch"].scalars, Resources::new(2.0, 1024.0, 0.0, 0.0));
        assert_eq!(r.total().cpus, 10.0);
        assert_eq!(r.reserved().cpus, 2.0);
    }

    #[test]
    fn rejects_bad_resources() {
        for bad in [
            "cpus",
            "cpus:x",
            "cpus:-1",
            "ports:31000",
            "ports:[0-10]",
            "ports:[1-70000]",
            "cpus(b:1",
            "cp us:1",
            "ports:[10-20];ports(x):[15-30]",
            "cpus(..):1",
        ] {
            assert!(parse_resources(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_attributes_with_either_separator() {
        let a = parse_attributes("rack:r1,zone:a;level:2.50;slots:[1-3,5-5];disks:{b,a}").unwrap();
        assert_eq!(a["rack"], Value::Text("r1".into()));
        assert_eq!(a["level"].to_string(), "2.5");
        assert_eq!(a["slots"].to_string(), "[1-3,5-5]");
        assert_eq!(a["disks"].to_string(), "{a,b}");
        assert!(parse_attributes("rack").is_err());
        assert!(parse_attributes("rack:a b").is_err());
    }

    #[test]
    fn scalars_format_like_marathon() {
        assert_eq!(format_scalar(0.8), "0.8");
        assert_eq!(format_scalar(0.8001), "0.8");
        assert_eq!(format_scalar(2.0), "2");
        assert_eq!(format_scalar(1.0005), "1"); // half-even
        assert_eq!(format_scalar(1.0015), "1.002");
    }

    #[test]
    fn quotas_name_only_what_they_limit() {
        let q = parse_quota("cpus:10;mem:2048").unwrap();
        assert_eq!(q.cpus, Some(10.0));
        assert_eq!(q.disk, None);
        assert!(Resources::new(10.0, 100.0, 1e9, 0.0).within(&q));
        assert!(!Resources::new(10.5, 100.0, 0.0, 0.0).within(&q));
        assert!(parse_quota("ports:[1-2]").is_err());
    }

    #[test]
    fn dominant_share_ignores_missing_resources() {
        let total = Resources::new(9.0, 18.0, 0.0, 0.0);
        assert!((Resources::new(1.0, 4.0, 0.0, 0.0).dominant_share(&total) - 4.0 / 18.0).abs() < 1e-12);
    }
}
