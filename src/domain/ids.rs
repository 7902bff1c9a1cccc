//! Identifiers. Every id that can reach a file name, a process argument, an environment
//! variable or (later) a Docker name or HAProxy line is parsed here first, so the rest of
//! the code only ever sees safe values.
//!
//! - [`PathId`]: Marathon's hierarchical app/group ids (`/shop/web`).
//! - [`InstanceId`] / [`TaskId`]: Marathon 1.8+ forms `<safeAppId>.instance-<uuid>` and
//!   `<instanceId>._app.<incarnation>`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IdError {
    #[error("path contains invalid characters (allowed: lowercase letters, digits, hyphens, \".\", \"..\")")]
    InvalidSegment(String),
    #[error("must not be empty")]
    Empty,
    #[error("relative path climbs above the root group")]
    AboveRoot,
    #[error("the name '{0}' is reserved and cannot be used as the last part of an id")]
    Reserved(String),
    #[error("is not a valid task id")]
    InvalidTaskId,
    #[error("id is too long (at most {0} characters)")]
    TooLong(usize),
}

/// Longest id we accept: keeps file names (sandbox dirs are named after task ids) well
/// under the 255-byte limit of common file systems.
pub const MAX_PATH_ID_LEN: usize = 180;

/// A canonical absolute path id, e.g. `/shop/web`. The root group is the empty path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PathId(Vec<String>);

/// Last segments that collide with sub-routes of `/v2/apps/{id}` (Marathon 1.8+).
const RESERVED: [&str; 3] = ["restart", "tasks", "versions"];

/// One segment: dot-separated labels of `[a-z0-9]` with inner hyphens.
fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

impl PathId {
    pub fn root() -> Self {
        PathId(Vec::new())
    }

    /// Parses `s` as absolute, or relative to `base` (`app`, `./app`, `../db`), and
    /// canonicalises it.
    pub fn parse_relative(s: &str, base: &PathId) -> Result<Self, IdError> {
        let s = s.trim();
        let mut parts = if s.starts_with('/') { Vec::new() } else { base.0.clone() };
        for seg in s.split('/').filter(|seg| !seg.is_empty()) {
            match seg {
                "." => {}
                ".." => {
                    if parts.pop().is_none() {
                        return Err(IdError::AboveRoot);
                    }
                }
                seg if valid_segment(seg) => parts.push(seg.to_string()),
                seg => return Err(IdError::InvalidSegment(seg.to_string())),
            }
        }
        let id = PathId(parts);
        if id.to_string().len() > MAX_PATH_ID_LEN {
            return Err(IdError::TooLong(MAX_PATH_ID_LEN));
        }
        Ok(id)
    }

    /// Parses an app id: like a path, but non-root and not ending in a reserved word.
    pub fn parse_app(s: &str) -> Result<Self, IdError> {
        let id = PathId::parse_relative(s, &PathId::root())?;
        match id.0.last() {
            None => Err(IdError::Empty),
            Some(last) if RESERVED.contains(&last.as_str()) => Err(IdError::Reserved(last.clone())),
            Some(_) => Ok(id),
        }
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub fn segments(&self) -> &[String] {
        &self.0
    }

    /// The enclosing group (`/a/b` -> `/a`).
    pub fn parent(&self) -> PathId {
        let mut p = self.0.clone();
        p.pop();
        PathId(p)
    }

    /// True when `self` is `group` itself or lies beneath it.
    pub fn is_within(&self, group: &PathId) -> bool {
        self.0.len() >= group.0.len() && self.0[..group.0.len()] == group.0[..]
    }

    /// Marathon's "safe" form used inside task ids and names: segments joined by `_`
    /// (`/tools/docker/registry` -> `tools_docker_registry`). Only `[a-z0-9.-_]`.
    pub fn safe_id(&self) -> String {
        self.0.join("_")
    }
}

impl fmt::Display for PathId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("/");
        }
        for seg in &self.0 {
            write!(f, "/{seg}")?;
        }
        Ok(())
    }
}

impl Serialize for PathId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PathId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PathId::parse_relative(&s, &PathId::root()).map_err(serde::de::Error::custom)
    }
}

/// `<safeAppId>.instance-<uuid>`: one logical instance of an app; its tasks are the
/// incarnations launched for it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstanceId(String);

/// `<instanceId>._app.<incarnation>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId(String);

/// Only these bytes may appear in instance and task ids: they become directory names.
fn safe_id_chars(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_PATH_ID_LEN + 64
        && s.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'.' | b'_'))
        && !s.starts_with('.')
        && !s.contains("..")
}

impl InstanceId {
    /// A new instance id for `app`; `uuid` is supplied by the caller (pure code takes no
    /// randomness of its own).
    pub fn new(app: &PathId, uuid: &str) -> Self {
        InstanceId(format!("{}.instance-{}", app.safe_id(), uuid))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The task id of the given incarnation of this instance.
    pub fn task_id(&self, incarnation: u32) -> TaskId {
        TaskId(format!("{}._app.{}", self.0, incarnation))
    }
}

impl TaskId {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The instance this task belongs to (all accepted forms end in `._app.<n>` or are
    /// legacy `<app>.<uuid>` ids whose instance is the task itself).
    pub fn instance_id(&self) -> InstanceId {
        match self.0.rsplit_once("._app.") {
            Some((inst, _)) => InstanceId(inst.to_string()),
            None => InstanceId(self.0.clone()),
        }
    }

    /// Whether this is a task of `app`: its id names the app's safe id before
    /// `.instance-<uuid>` (or before `.<uuid>` in the legacy form). Not a prefix test:
    /// app ids may contain dots, so `a.b.instance-...` is a task of `/a.b`, not of `/a`.
    pub fn belongs_to(&self, app: &PathId) -> bool {
        let inst = self.0.rsplit_once("._app.").map_or(self.0.as_str(), |(i, _)| i);
        let owner = inst.rsplit_once(".instance-").or_else(|| inst.rsplit_once('.')).map_or(inst, |(a, _)| a);
        owner == app.safe_id()
    }

    /// The incarnation number (1 for legacy ids).
    pub fn incarnation(&self) -> u32 {
        self.0.rsplit_once("._app.").and_then(|(_, n)| n.parse().ok()).unwrap_or(1)
    }
}

impl FromStr for TaskId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        // Accept the 1.8+ form and the legacy `<safeAppId>.<uuid>` form; both must stay
        // within the safe alphabet because they name sandbox directories.
        if safe_id_chars(s) && s.contains('.') {
            Ok(TaskId(s.to_string()))
        } else {
            Err(IdError::InvalidTaskId)
        }
    }
}

impl FromStr for InstanceId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        if safe_id_chars(s) && s.contains(".instance-") {
            Ok(InstanceId(s.to_string()))
        } else {
            Err(IdError::InvalidTaskId)
        }
    }
}

macro_rules! string_id_serde {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
string_id_serde!(TaskId);
string_id_serde!(InstanceId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_belong_to_exactly_their_app() {
        let app = |s: &str| PathId::parse_app(s).unwrap();
        let task = |s: &str| s.parse::<TaskId>().unwrap();
        let t = task("a.b.instance-6f7e2a90-0c4e-4d5a-9d1e-2b8f0a1c3d4e._app.2");
        assert!(t.belongs_to(&app("/a.b")));
        assert!(!t.belongs_to(&app("/a")), "a dot in an app id is not a separator");
        assert!(task("shop_web.instance-1._app.1").belongs_to(&app("/shop/web")));
        assert!(!task("shop_web.instance-1._app.1").belongs_to(&app("/shop")));
        // A segment may itself read "instance-...": the last one is the task's.
        assert!(task("x.instance-y.instance-1._app.1").belongs_to(&app("/x.instance-y")));
        // Legacy `<app>.<uuid>` ids.
        assert!(task("a.b.6f7e2a90-0c4e").belongs_to(&app("/a.b")));
        assert!(!task("a.b.6f7e2a90-0c4e").belongs_to(&app("/a")));
    }

    #[test]
    fn canonicalises_relative_ids() {
        let base = PathId::parse_app("/shop/web").unwrap().parent();
        assert_eq!(PathId::parse_relative("../db", &base).unwrap().to_string(), "/db");
        assert_eq!(PathId::parse_relative("./cache", &base).unwrap().to_string(), "/shop/cache");
        assert_eq!(PathId::parse_app("web").unwrap().to_string(), "/web");
        assert_eq!(PathId::parse_app("/a//b/").unwrap().to_string(), "/a/b");
    }

    #[test]
    fn rejects_bad_ids() {
        for bad in ["../x", "/UPPER", "/a_b", "/-a", "/a-", "/ümlaut", "/a b", "/a..b", "/x/restart", "/tasks", "/", ""]
        {
            assert!(PathId::parse_app(bad).is_err(), "{bad} should be rejected");
        }
        assert!(PathId::parse_app(&format!("/{}", "a".repeat(200))).is_err());
    }

    #[test]
    fn accepts_dotted_segments() {
        assert_eq!(PathId::parse_app("/my.app-1/v2.0").unwrap().safe_id(), "my.app-1_v2.0");
    }

    #[test]
    fn task_ids_round_trip() {
        let app = PathId::parse_app("/tools/registry").unwrap();
        let inst = InstanceId::new(&app, "083be411-5d1f-11e5-88f7-56b91e7a505b");
        let t = inst.task_id(3);
        assert_eq!(t.as_str(), "tools_registry.instance-083be411-5d1f-11e5-88f7-56b91e7a505b._app.3");
        assert_eq!(t.instance_id(), inst);
        assert_eq!(t.incarnation(), 3);
        let parsed: TaskId = t.as_str().parse().unwrap();
        assert_eq!(parsed, t);
    }

    #[test]
    fn task_ids_cannot_escape_a_directory() {
        for bad in ["../../etc", "a/b.c", ".hidden.x", "a..b", "A.b", "x"] {
            assert!(bad.parse::<TaskId>().is_err(), "{bad}");
        }
        assert!("my-app.3f80d17a-37e6-11e4-b05e-56847afe9799".parse::<TaskId>().is_ok());
    }

    #[test]
    fn within_group() {
        let a = PathId::parse_app("/a/b/c").unwrap();
        assert!(a.is_within(&PathId::parse_relative("/a", &PathId::root()).unwrap()));
        assert!(a.is_within(&PathId::root()));
        assert!(!a.is_within(&PathId::parse_relative("/b", &PathId::root()).unwrap()));
    }
}
