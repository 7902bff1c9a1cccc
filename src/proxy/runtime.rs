//! What it takes to bring a running HAProxy from what it has to a new render: nothing,
//! a list of runtime API operations (servers only), or a reload. Pure: the sidecar
//! executes the plan (`super::haproxy`) and records the outcome in [`Live`].
//!
//! A server that goes away is *parked* first (`set server state maint`: no new
//! requests, the ones in flight finish) and deleted once HAProxy lets it go (`del server`
//! refuses while connections are attached). A parked server that comes back with the
//! same line is made ready again instead of being added twice.

use super::render::{Rendered, ServerLine};
use std::collections::BTreeMap;

/// What the running HAProxy has, as far as the sidecar knows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Live {
    /// The skeleton of the config it loaded (the text without server lines).
    pub skeleton: String,
    /// Backend name to whether it takes servers at runtime.
    pub dynamic: BTreeMap<String, bool>,
    /// Serving servers, by backend then name.
    pub servers: BTreeMap<String, BTreeMap<String, ServerLine>>,
    /// Servers in maintenance waiting to be deleted, with their lines.
    pub parked: BTreeMap<(String, String), ServerLine>,
}

impl Live {
    /// What HAProxy has right after loading `r` from a file.
    pub fn loaded(r: &Rendered) -> Live {
        Live {
            skeleton: r.skeleton.clone(),
            dynamic: r.backends.iter().map(|(n, b)| (n.clone(), b.dynamic)).collect(),
            servers: r.backends.iter().map(|(n, b)| (n.clone(), b.servers.clone())).collect(),
            parked: BTreeMap::new(),
        }
    }

    /// Records that `op` succeeded.
    pub fn applied(&mut self, op: &Op) {
        match op {
            Op::Add { backend, server, line } | Op::Ready { backend, server, line } => {
                self.parked.remove(&(backend.clone(), server.clone()));
                self.servers.entry(backend.clone()).or_default().insert(server.clone(), line.clone());
            }
            Op::Park { backend, server } => {
                if let Some(line) = self.servers.get_mut(backend).and_then(|s| s.remove(server)) {
                    self.parked.insert((backend.clone(), server.clone()), line);
                }
            }
            Op::Delete { backend, server } => {
                self.parked.remove(&(backend.clone(), server.clone()));
            }
        }
    }
}

/// One runtime API step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A new server: added in maintenance, then its checks and itself enabled.
    Add { backend: String, server: String, line: ServerLine },
    /// A parked server back in service.
    Ready { backend: String, server: String, line: ServerLine },
    /// A server out of service (kept until its connections end).
    Park { backend: String, server: String },
    /// A parked server removed for good.
    Delete { backend: String, server: String },
}

impl Op {
    /// The runtime API commands, in order; each must answer as [`accepted`] says.
    pub fn commands(&self) -> Vec<String> {
        match self {
            Op::Add { backend, server, line } => {
                let mut c = vec![format!("add server {backend}/{server} {} {}", line.addr, line.options)];
                if has_check(&line.options) {
                    c.push(format!("enable health {backend}/{server}"));
                }
                c.push(format!("enable server {backend}/{server}"));
                c
            }
            Op::Ready { backend, server, .. } => vec![format!("set server {backend}/{server} state ready")],
            Op::Park { backend, server } => vec![format!("set server {backend}/{server} state maint")],
            Op::Delete { backend, server } => vec![format!("del server {backend}/{server}")],
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Op::Add { .. } => "add",
            Op::Ready { .. } => "ready",
            Op::Park { .. } => "park",
            Op::Delete { .. } => "delete",
        }
    }
}

fn has_check(options: &str) -> bool {
    options.split(' ').any(|w| w == "check")
}

/// Whether HAProxy's answer to a runtime command means it was done: an empty answer,
/// or the confirmations of `add server` and `del server`.
pub fn accepted(answer: &str) -> bool {
    let a = answer.trim();
    a.is_empty() || a == "New server registered." || a == "Server deleted."
}

/// Whether HAProxy's answer says the server is not there (deleted already).
pub fn gone(answer: &str) -> bool {
    answer.trim() == "No such server."
}

/// The way from `live` to `new`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Nothing to do.
    Nothing,
    /// Runtime operations only (additions and re-enables first, so capacity never dips).
    Runtime(Vec<Op>),
    /// Frontends, backends or rules changed, or servers of a backend that cannot take
    /// them at runtime: write the file and reload.
    Reload(String),
}

/// Plans the change from `live` to `new`.
pub fn plan(live: &Live, new: &Rendered) -> Plan {
    if live.skeleton != new.skeleton {
        return Plan::Reload("frontends, backends or rules changed".into());
    }
    let mut up = Vec::new();
    let mut down = Vec::new();
    let empty = BTreeMap::new();
    for (name, backend) in &new.backends {
        let have = live.servers.get(name).unwrap_or(&empty);
        if have == &backend.servers {
            continue;
        }
        if !live.dynamic.get(name).copied().unwrap_or(false) || !backend.dynamic {
            return Plan::Reload(format!("servers of {name}, which cannot change them at runtime, changed"));
        }
        for (server, line) in &backend.servers {
            let key = (name.clone(), server.clone());
            match have.get(server) {
                Some(l) if l == line => {}
                Some(_) => {
                    return Plan::Reload(format!("server {name}/{server} changed its settings"));
                }
                None => {
                    let (backend, server, line) = (name.clone(), server.clone(), line.clone());
                    match live.parked.get(&key) {
                        Some(l) if *l == line => up.push(Op::Ready { backend, server, line }),
                        Some(_) => return Plan::Reload(format!("parked server {name}/{server} came back changed")),
                        None => up.push(Op::Add { backend, server, line }),
                    }
                }
            }
        }
        for server in have.keys().filter(|s| !backend.servers.contains_key(*s)) {
            down.push(Op::Park { backend: name.clone(), server: server.clone() });
        }
    }
    if up.is_empty() && down.is_empty() {
        return Plan::Nothing;
    }
    up.extend(down);
    Plan::Runtime(up)
}

/// The parked servers to try deleting now.
pub fn deletions(live: &Live) -> Vec<Op> {
    live.parked.keys().map(|(b, s)| Op::Delete { backend: b.clone(), server: s.clone() }).collect()
}

#[cfg(test)]
mod tests {
    use super::super::render::Backend;
    use super::*;
    use std::collections::BTreeSet;

    /// Names of the servers a backend has in `live`, parked ones included.
    fn names(live: &Live, backend: &str) -> BTreeSet<String> {
        let serving = live.servers.get(backend).into_iter().flat_map(|s| s.keys().cloned());
        let parked = live.parked.keys().filter(|(b, _)| b == backend).map(|(_, s)| s.clone());
        serving.chain(parked).collect()
    }

    fn line(addr: &str) -> ServerLine {
        ServerLine { addr: addr.parse().expect("a test address"), options: "id 1 check inter 2s fall 3".into() }
    }

    /// (backend, dynamic, [(server, address)]).
    type Spec<'a> = (&'a str, bool, &'a [(&'a str, &'a str)]);

    fn rendered(skeleton: &str, backends: &[Spec]) -> Rendered {
        Rendered {
            skeleton: skeleton.into(),
            backends: backends
                .iter()
                .map(|(n, d, servers)| {
                    let servers = servers.iter().map(|(s, a)| (s.to_string(), line(a))).collect();
                    (n.to_string(), Backend { dynamic: *d, servers })
                })
                .collect(),
            ..Rendered::default()
        }
    }

    #[test]
    fn membership_changes_are_runtime_ops_with_additions_first() {
        let old = rendered("S", &[("web", true, &[("a", "10.0.0.1:1"), ("b", "10.0.0.2:1")])]);
        let mut live = Live::loaded(&old);
        assert_eq!(plan(&live, &old), Plan::Nothing);
        let new = rendered("S", &[("web", true, &[("b", "10.0.0.2:1"), ("c", "10.0.0.3:1")])]);
        let Plan::Runtime(ops) = plan(&live, &new) else { panic!("expected runtime ops") };
        assert_eq!(
            ops,
            [
                Op::Add { backend: "web".into(), server: "c".into(), line: line("10.0.0.3:1") },
                Op::Park { backend: "web".into(), server: "a".into() },
            ]
        );
        assert_eq!(
            ops[0].commands(),
            ["add server web/c 10.0.0.3:1 id 1 check inter 2s fall 3", "enable health web/c", "enable server web/c"]
        );
        for op in &ops {
            live.applied(op);
        }
        assert_eq!(plan(&live, &new), Plan::Nothing, "applied ops reach the new render");
        assert_eq!(names(&live, "web"), ["a", "b", "c"].map(String::from).into(), "a is parked, not gone");
        assert_eq!(deletions(&live), [Op::Delete { backend: "web".into(), server: "a".into() }]);

        // `a` comes back before it could be deleted: made ready, not added again.
        let back = rendered("S", &[("web", true, &[("a", "10.0.0.1:1"), ("b", "10.0.0.2:1"), ("c", "10.0.0.3:1")])]);
        let Plan::Runtime(ops) = plan(&live, &back) else { panic!("expected runtime ops") };
        assert_eq!(ops, [Op::Ready { backend: "web".into(), server: "a".into(), line: line("10.0.0.1:1") }]);
        live.applied(&ops[0]);
        assert!(deletions(&live).is_empty());
        live.applied(&Op::Park { backend: "web".into(), server: "a".into() });
        live.applied(&Op::Delete { backend: "web".into(), server: "a".into() });
        assert_eq!(names(&live, "web"), ["b", "c"].map(String::from).into());
    }

    #[test]
    fn structure_static_backends_and_changed_servers_need_a_reload() {
        let old = rendered("S", &[("web", true, &[("a", "10.0.0.1:1")]), ("db", false, &[("x", "10.0.0.9:1")])]);
        let live = Live::loaded(&old);
        let other = rendered("T", &[("web", true, &[("a", "10.0.0.1:1")]), ("db", false, &[("x", "10.0.0.9:1")])]);
        assert!(matches!(plan(&live, &other), Plan::Reload(_)));
        let db = rendered("S", &[("web", true, &[("a", "10.0.0.1:1")]), ("db", false, &[])]);
        assert!(matches!(plan(&live, &db), Plan::Reload(r) if r.contains("db")));
        let mut changed = old.clone();
        if let Some(s) = changed.backends.get_mut("web").and_then(|b| b.servers.get_mut("a")) {
            s.options = "id 2".into();
        }
        assert!(matches!(plan(&live, &changed), Plan::Reload(r) if r.contains("web/a")));
    }

    #[test]
    fn answers() {
        assert!(accepted("New server registered.\n\n"));
        assert!(accepted("\n"));
        assert!(accepted("Server deleted.\n"));
        assert!(!accepted("No such server.\n"));
        assert!(gone("No such server.\n") && !gone("\n"));
        assert!(!accepted("Server still has connections attached to it, cannot remove it.\n"));
    }
}
