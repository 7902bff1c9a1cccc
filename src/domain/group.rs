//! Groups: the folders of the app id tree (`/shop` holds `/shop/db` and `/shop/web`).
//!
//! Every ancestor of an app id is a group, whether or not anyone created it. A group
//! that was created or changed through `/v2/groups` is *explicit*: it has a stored
//! [`GroupSpec`] (its dependencies, `enforceRole`, its version) and a history of
//! [`GroupVersion`]s, and it exists even when empty.
//!
//! Dependencies (on apps or groups, from apps or groups) resolve to app-to-app edges
//! ([`dependency_edges`]): an app depends on what it names and on what every group
//! around it names; naming a group means every app beneath it. The deployment planner
//! orders its steps along these edges, and a cycle is a validation error.

use super::ids::PathId;
use super::time::Timestamp;
use super::{AppSpec, AppVersion, Violation};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// An explicit group's own settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupSpec {
    pub id: PathId,
    #[serde(default)]
    pub dependencies: Vec<PathId>,
    #[serde(default)]
    pub enforce_role: bool,
    /// When the group was last changed through the group API.
    pub version: Timestamp,
}

/// A group as it was at one change made through the group API: its explicit groups and
/// the full definition of every app beneath it. `PUT /v2/groups/{id}` with
/// `{"version": ...}` deploys it again. Whole definitions are kept (not references to
/// app versions) so that apps the change removed can come back; one row per version in
/// SQL has no node-size ceiling (Marathon's ZooKeeper had 1 MB), and the history is
/// capped at [`MAX_GROUP_VERSIONS`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupVersion {
    pub id: PathId,
    pub version: Timestamp,
    pub groups: Vec<GroupSpec>,
    pub apps: Vec<AppVersion>,
}

/// Group versions kept per group.
pub const MAX_GROUP_VERSIONS: usize = 20;

/// The app tree a deployment goes from or to: apps by id and explicit groups by id.
#[derive(Debug, Clone, Default)]
pub struct Tree<'a> {
    pub apps: BTreeMap<PathId, &'a AppVersion>,
    pub groups: BTreeMap<PathId, &'a GroupSpec>,
}

impl<'a> Tree<'a> {
    /// Every group of the tree: the explicit ones and each ancestor of an app, root included.
    pub fn all_groups(&self) -> BTreeSet<PathId> {
        let mut out: BTreeSet<PathId> = self.groups.keys().cloned().collect();
        for id in self.apps.keys() {
            let mut g = id.parent();
            while out.insert(g.clone()) && !g.is_root() {
                g = g.parent();
            }
        }
        out.insert(PathId::root());
        out
    }

    /// Whether `id` names a group of this tree.
    pub fn has_group(&self, id: &PathId) -> bool {
        id.is_root() || self.groups.contains_key(id) || self.apps.keys().any(|a| a.is_within(id) && a != id)
    }
}

/// The app-to-app dependency edges of `tree`: for each app, the apps it waits for. A
/// dependency that names nothing in the tree is ignored (Marathon did not insist either).
pub fn dependency_edges(tree: &Tree) -> BTreeMap<PathId, BTreeSet<PathId>> {
    let targets = |dep: &PathId| -> Vec<PathId> {
        if tree.apps.contains_key(dep) {
            return vec![dep.clone()];
        }
        tree.apps.keys().filter(|a| a.is_within(dep)).cloned().collect()
    };
    let mut edges: BTreeMap<PathId, BTreeSet<PathId>> = BTreeMap::new();
    for (id, app) in &tree.apps {
        let mut named: Vec<&PathId> = app.spec.dependencies.iter().collect();
        let mut g = id.parent();
        loop {
            if let Some(spec) = tree.groups.get(&g) {
                named.extend(spec.dependencies.iter());
            }
            if g.is_root() {
                break;
            }
            g = g.parent();
        }
        let set = edges.entry(id.clone()).or_default();
        for dep in named {
            set.extend(targets(dep).into_iter().filter(|t| t != id));
        }
    }
    edges
}

/// A dependency cycle, as the ids along it (first = last), if there is one. Generic:
/// apps and groups by path, jobs by name.
pub fn find_cycle<T: Ord + Clone>(edges: &BTreeMap<T, BTreeSet<T>>) -> Option<Vec<T>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    let mut marks: BTreeMap<&T, Mark> = BTreeMap::new();
    for start in edges.keys() {
        if marks.contains_key(start) {
            continue;
        }
        // Iterative depth-first search; `path` is the chain of open nodes.
        let mut path: Vec<&T> = vec![start];
        let mut iters = vec![edges[start].iter()];
        marks.insert(start, Mark::Open);
        while let Some(it) = iters.last_mut() {
            match it.next() {
                Some(next) => match marks.get(next) {
                    Some(Mark::Open) => {
                        let from = path.iter().position(|p| *p == next).unwrap_or(0);
                        let mut cycle: Vec<T> = path[from..].iter().map(|p| (*p).clone()).collect();
                        cycle.push(next.clone());
                        return Some(cycle);
                    }
                    Some(Mark::Done) => {}
                    None => {
                        marks.insert(next, Mark::Open);
                        path.push(next);
                        iters.push(edges.get(next).map(|s| s.iter()).unwrap_or_default());
                    }
                },
                None => {
                    iters.pop();
                    if let Some(done) = path.pop() {
                        marks.insert(done, Mark::Done);
                    }
                }
            }
        }
    }
    None
}

/// The length of the longest dependency chain below each app (0: depends on nothing).
/// `edges` must be acyclic.
pub fn dependency_depths(edges: &BTreeMap<PathId, BTreeSet<PathId>>) -> BTreeMap<PathId, usize> {
    fn depth<'a>(
        id: &'a PathId,
        edges: &'a BTreeMap<PathId, BTreeSet<PathId>>,
        memo: &mut BTreeMap<&'a PathId, usize>,
        guard: usize,
    ) -> usize {
        if let Some(d) = memo.get(id) {
            return *d;
        }
        // The guard bounds the recursion should a cycle slip through.
        let d = match (edges.get(id), guard) {
            (Some(deps), g) if g > 0 => deps.iter().map(|x| depth(x, edges, memo, g - 1) + 1).max().unwrap_or(0),
            _ => 0,
        };
        memo.insert(id, d);
        d
    }
    let mut memo = BTreeMap::new();
    for id in edges.keys() {
        depth(id, edges, &mut memo, edges.len());
    }
    memo.into_iter().map(|(k, v)| (k.clone(), v)).collect()
}

/// Rules a whole tree must follow besides each app's own: no app id is a group of
/// another app or an explicit group, and dependencies have no cycle.
pub fn validate_tree(tree: &Tree) -> Vec<Violation> {
    let mut v = Vec::new();
    for id in tree.apps.keys() {
        if tree.groups.contains_key(id) {
            v.push(Violation::new("/id", format!("{id} is a group and cannot also be an app")));
        } else if tree.apps.range(id.clone()..).nth(1).is_some_and(|(next, _)| next.is_within(id)) {
            v.push(Violation::new("/id", format!("{id} is an app and cannot also be a group of other apps")));
        }
    }
    if let Some(cycle) = find_cycle(&dependency_edges(tree)) {
        let chain: Vec<String> = cycle.iter().map(|c| c.to_string()).collect();
        v.push(Violation::new("/dependencies", format!("dependency cycle: {}", chain.join(" -> "))));
    }
    v
}

/// Multiplies an app's instances by `factor`, rounding up (Marathon's `scaleBy`).
pub fn scaled(spec: &AppSpec, factor: f64) -> u32 {
    let n = (spec.instances as f64 * factor).ceil();
    if n.is_finite() && n > 0.0 {
        n.min(u32::MAX as f64) as u32
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::reconcile::tests::{spec, version};

    fn p(s: &str) -> PathId {
        PathId::parse_app(s).expect("test id")
    }

    fn app(id: &str, deps: &[&str]) -> AppVersion {
        let mut s = spec(id, 1);
        s.dependencies = deps.iter().map(|d| p(d)).collect();
        version(s, 0)
    }

    fn tree<'a>(apps: &'a [AppVersion], groups: &'a [GroupSpec]) -> Tree<'a> {
        Tree {
            apps: apps.iter().map(|a| (a.spec.id.clone(), a)).collect(),
            groups: groups.iter().map(|g| (g.id.clone(), g)).collect(),
        }
    }

    #[test]
    fn dependencies_on_groups_and_from_groups_become_app_edges() {
        let apps = [app("/shop/db", &[]), app("/shop/web", &["/shop/db"]), app("/mon/agent", &[])];
        let groups = [GroupSpec {
            id: p("/mon"),
            dependencies: vec![p("/shop")],
            enforce_role: false,
            version: Timestamp::from_millis(0),
        }];
        let e = dependency_edges(&tree(&apps, &groups));
        assert_eq!(e[&p("/shop/web")], [p("/shop/db")].into_iter().collect());
        assert_eq!(e[&p("/mon/agent")], [p("/shop/db"), p("/shop/web")].into_iter().collect());
        assert!(e[&p("/shop/db")].is_empty());
        let depths = dependency_depths(&e);
        assert_eq!((depths[&p("/shop/db")], depths[&p("/shop/web")], depths[&p("/mon/agent")]), (0, 1, 2));
    }

    #[test]
    fn cycles_are_found_and_named() {
        let apps = [app("/a", &["/b"]), app("/b", &["/c"]), app("/c", &["/a"]), app("/d", &["/a"])];
        let cycle = find_cycle(&dependency_edges(&tree(&apps, &[]))).expect("a cycle");
        assert_eq!(cycle.first(), cycle.last());
        assert_eq!(cycle.len(), 4);
        let v = validate_tree(&tree(&apps, &[]));
        assert_eq!(v.len(), 1);
        assert!(v[0].message.contains("/a -> /b -> /c -> /a"), "{}", v[0].message);
        let fine = [app("/a", &["/b"]), app("/b", &[])];
        assert!(validate_tree(&tree(&fine, &[])).is_empty());
    }

    #[test]
    fn an_app_cannot_be_a_group() {
        let apps = [app("/shop", &[]), app("/shop/web", &[])];
        let v = validate_tree(&tree(&apps, &[]));
        assert_eq!(v.len(), 1, "{v:?}");
        let apps = [app("/shop", &[])];
        let groups = [GroupSpec {
            id: p("/shop"),
            dependencies: vec![],
            enforce_role: false,
            version: Timestamp::from_millis(0),
        }];
        assert_eq!(validate_tree(&tree(&apps, &groups)).len(), 1);
    }

    #[test]
    fn all_groups_include_ancestors_and_root() {
        let apps = [app("/a/b/c", &[])];
        let t = tree(&apps, &[]);
        let gs: Vec<String> = t.all_groups().iter().map(|g| g.to_string()).collect();
        assert_eq!(gs, vec!["/", "/a", "/a/b"]);
        assert!(t.has_group(&p("/a/b")) && !t.has_group(&p("/a/b/c")));
    }

    #[test]
    fn scale_by_rounds_up() {
        let mut s = spec("/a", 3);
        assert_eq!(scaled(&s, 1.5), 5);
        s.instances = 0;
        assert_eq!(scaled(&s, 2.0), 0);
        s.instances = 4;
        assert_eq!(scaled(&s, 0.5), 2);
    }
}
