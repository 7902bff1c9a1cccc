//! Placement: fit launch requests into agents' free resources and host ports.
//!
//! Agents are visited round-robin from a moving cursor, so instances spread over the
//! cluster and a placement costs O(1) when most agents have room (the benchmark places
//! 100,000 tasks on 10,000 agents). Each agent offers one pool per role; a task draws
//! from the pools of its accepted roles, its own role's reservation first. Which role
//! places next is decided by [`super::drf`]. An agent with room must also satisfy the
//! app's placement constraints ([`super::constraints`]), given where its instances run,
//! including those placed earlier in the same pass.

use super::constraints::{AgentFields, ConstraintTracker};
use super::drf::Fairness;
use crate::domain::agent::Containerizer;
use crate::domain::resources::EPS;
use crate::domain::{AgentId, AgentInfo, AppSpec, PortRange, Resources, UNRESERVED};
use std::collections::BTreeMap;

/// Free host ports of one agent: a bitmap over its port ranges.
#[derive(Debug, Clone)]
pub struct PortPool {
    ranges: Vec<PortRange>,
    /// One bit per port across all ranges, in order; set = used.
    used: Vec<u64>,
    total: usize,
    free: usize,
    /// Where the next dynamic search starts, so freed ports are not reused at once.
    cursor: usize,
}

impl PortPool {
    pub fn new(ranges: &[PortRange]) -> PortPool {
        let total: usize = ranges.iter().map(|r| r.len()).sum();
        PortPool { ranges: ranges.to_vec(), used: vec![0; total.div_ceil(64)], total, free: total, cursor: 0 }
    }

    fn index_of(&self, port: u16) -> Option<usize> {
        let mut base = 0;
        for r in &self.ranges {
            if r.contains(port) {
                return Some(base + (port - r.begin) as usize);
            }
            base += r.len();
        }
        None
    }

    fn port_at(&self, mut idx: usize) -> u16 {
        for r in &self.ranges {
            if idx < r.len() {
                return r.begin + idx as u16;
            }
            idx -= r.len();
        }
        unreachable!("index within total by construction")
    }

    fn is_used(&self, idx: usize) -> bool {
        self.used[idx / 64] & (1 << (idx % 64)) != 0
    }

    fn set(&mut self, idx: usize, used: bool) {
        let was = self.is_used(idx);
        if used {
            self.used[idx / 64] |= 1 << (idx % 64);
        } else {
            self.used[idx / 64] &= !(1 << (idx % 64));
        }
        match (was, used) {
            (false, true) => self.free -= 1,
            (true, false) => self.free += 1,
            _ => {}
        }
    }

    pub fn free(&self) -> usize {
        self.free
    }

    /// Marks a port as used (a running task holds it). Ports outside the ranges are
    /// ignored: they are not ours to hand out.
    pub fn mark_used(&mut self, port: u16) {
        if let Some(i) = self.index_of(port) {
            self.set(i, true);
        }
    }

    pub fn release(&mut self, port: u16) {
        if let Some(i) = self.index_of(port) {
            self.set(i, false);
        }
    }

    pub fn is_free(&self, port: u16) -> bool {
        self.index_of(port).is_some_and(|i| !self.is_used(i))
    }

    /// Takes a free port, searching on from the last one handed out, so a port just
    /// released is reused last.
    pub fn next_free(&mut self) -> Option<u16> {
        if self.free == 0 {
            return None;
        }
        let mut i = self.cursor % self.total;
        loop {
            let word = self.used[i / 64];
            if word == u64::MAX && i % 64 == 0 {
                i = (i + 64) % self.total.max(1);
                continue;
            }
            if !self.is_used(i) {
                self.set(i, true);
                self.cursor = (i + 1) % self.total;
                return Some(self.port_at(i));
            }
            i = (i + 1) % self.total;
        }
    }
}

/// What one role's pool on an agent has left.
#[derive(Debug, Clone)]
pub struct PoolCapacity {
    pub role: String,
    pub free: Resources,
    pub ports: PortPool,
}

/// What an agent has left, as the placement sees it: one pool per role it offers
/// resources to (`*` for unreserved).
#[derive(Debug, Clone)]
pub struct AgentCapacity {
    pub id: AgentId,
    /// Hostname and attributes, as constraints read them (shared: the placement scans
    /// agents a lot, so they stay small).
    pub fields: std::sync::Arc<AgentFields>,
    pub pools: Vec<PoolCapacity>,
    pub containerizers: Vec<Containerizer>,
}

/// Why an agent could not take a task: the per-reason counts become the queue's
/// summary of why an app waits (Marathon's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rejection {
    NoContainerizer,
    UnfulfilledRole,
    InsufficientCpus,
    InsufficientMemory,
    InsufficientDisk,
    InsufficientGpus,
    InsufficientPorts,
    /// The role's quota would be exceeded (counted once per request, not per agent).
    RoleQuotaExceeded,
    /// The agent does not satisfy the app's constraint with this index.
    Constraint(u16),
}

impl Rejection {
    pub fn name(self) -> &'static str {
        match self {
            Rejection::NoContainerizer => "NoCorrespondingContainerizer",
            Rejection::UnfulfilledRole => "UnfulfilledRole",
            Rejection::InsufficientCpus => "InsufficientCpus",
            Rejection::InsufficientMemory => "InsufficientMemory",
            Rejection::InsufficientDisk => "InsufficientDisk",
            Rejection::InsufficientGpus => "InsufficientGpus",
            Rejection::InsufficientPorts => "InsufficientPorts",
            Rejection::RoleQuotaExceeded => "RoleQuotaExceeded",
            Rejection::Constraint(_) => "UnfulfilledConstraint",
        }
    }
}

/// The roles a task may draw from, its own reserved role before unreserved resources.
fn ordered_roles<'a>(accepted: &[&'a str]) -> Vec<&'a str> {
    let mut r: Vec<&str> = accepted.to_vec();
    r.sort_by_key(|x| *x == UNRESERVED);
    r.dedup();
    r
}

impl AgentCapacity {
    pub fn hostname(&self) -> &str {
        &self.fields.hostname
    }

    /// The full capacity of an agent, before any task.
    pub fn new(info: &AgentInfo) -> AgentCapacity {
        AgentCapacity {
            id: info.id.clone(),
            fields: std::sync::Arc::new(AgentFields::new(info)),
            pools: info
                .resources
                .pools
                .iter()
                .map(|(role, p)| PoolCapacity { role: role.clone(), free: p.scalars, ports: PortPool::new(&p.ports) })
                .collect(),
            containerizers: info.containerizers.clone(),
        }
    }

    fn accepted_pools<'s>(&'s self, roles: &'s [&'s str]) -> impl Iterator<Item = &'s PoolCapacity> + 's {
        roles.iter().filter_map(move |r| self.pools.iter().find(|p| p.role == *r))
    }

    /// Takes what a running task uses out of the pools (its role's first), without
    /// checking that it fits: the task exists whatever the numbers say.
    pub fn consume(&mut self, need: &Resources, accepted: &[&str], ports: &[u16]) {
        let roles = ordered_roles(accepted);
        let mut left = *need;
        for r in &roles {
            if let Some(p) = self.pools.iter_mut().find(|p| p.role == *r) {
                left.take_from(&mut p.free);
            }
        }
        if let Some(p) = roles.first().and_then(|r| self.pools.iter_mut().find(|p| p.role == *r)) {
            p.free.sub(&left);
        }
        for port in ports {
            for p in &mut self.pools {
                p.ports.mark_used(*port);
            }
        }
    }

    /// The first reason this agent cannot run one more task of `app`, if any.
    /// `roles` are the app's accepted roles in [`ordered_roles`] order.
    pub fn rejects(&self, app: &AppSpec, need: &Resources, roles: &[&str], ports: usize) -> Option<Rejection> {
        let kind = if app.docker_image().is_some() { Containerizer::Docker } else { Containerizer::Process };
        if !self.containerizers.contains(&kind) {
            return Some(Rejection::NoContainerizer);
        }
        let mut free = Resources::default();
        let mut free_ports = 0;
        let mut any = false;
        for p in self.accepted_pools(roles) {
            free.add(&p.free);
            free_ports += p.ports.free();
            any = true;
        }
        if !any {
            return Some(Rejection::UnfulfilledRole);
        }
        if need.cpus > free.cpus + EPS {
            Some(Rejection::InsufficientCpus)
        } else if need.mem > free.mem + EPS {
            Some(Rejection::InsufficientMemory)
        } else if need.disk > free.disk + EPS {
            Some(Rejection::InsufficientDisk)
        } else if need.gpus > free.gpus + EPS {
            Some(Rejection::InsufficientGpus)
        } else if ports > free_ports {
            Some(Rejection::InsufficientPorts)
        } else {
            None
        }
    }

    /// Allocates `need` and one port per `wanted` entry (`Some(p)` exactly `p`, `None`
    /// any) from the accepted pools. All or nothing; resources must already fit.
    fn take(&mut self, need: &Resources, roles: &[&str], wanted: &[Option<u16>]) -> Option<Vec<u16>> {
        let in_pools: Vec<usize> = roles.iter().filter_map(|r| self.pools.iter().position(|p| p.role == *r)).collect();
        // Ports first: check everything, then change anything.
        let mut fixed: Vec<u16> = wanted.iter().flatten().copied().collect();
        fixed.sort_unstable();
        if fixed.windows(2).any(|w| w[0] == w[1]) {
            return None;
        }
        let mut owners = Vec::with_capacity(fixed.len());
        for p in &fixed {
            owners.push(in_pools.iter().copied().find(|&i| self.pools[i].ports.is_free(*p))?);
        }
        let free_total: usize = in_pools.iter().map(|&i| self.pools[i].ports.free()).sum();
        if free_total < wanted.len() {
            return None;
        }
        for (p, i) in fixed.iter().zip(owners) {
            self.pools[i].ports.mark_used(*p);
        }
        let mut ports = Vec::with_capacity(wanted.len());
        for w in wanted {
            match w {
                Some(p) => ports.push(*p),
                None => {
                    let p = in_pools.iter().find_map(|&i| self.pools[i].ports.next_free())?;
                    ports.push(p);
                }
            }
        }
        let mut left = *need;
        for &i in &in_pools {
            left.take_from(&mut self.pools[i].free);
        }
        Some(ports)
    }
}

/// `count` more tasks of `app` are wanted.
#[derive(Debug, Clone)]
pub struct LaunchRequest<'a> {
    pub app: &'a AppSpec,
    pub count: u32,
    /// The app's constraints, with where its instances already run.
    pub constraints: ConstraintTracker,
}

impl<'a> LaunchRequest<'a> {
    /// A request for an app without constraints, or whose instances run nowhere yet.
    pub fn new(app: &'a AppSpec, count: u32) -> LaunchRequest<'a> {
        LaunchRequest { app, count, constraints: ConstraintTracker::new(&app.constraints, []) }
    }
}

/// One placed task: request index, agent index, assigned host ports.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    pub request: usize,
    pub agent: usize,
    pub ports: Vec<u16>,
}

#[derive(Debug, Clone, Default)]
pub struct PlacementResult {
    pub placed: Vec<Placement>,
    /// Per request that could not be fully placed: how many are left and why agents
    /// turned them down.
    pub unplaced: BTreeMap<usize, (u32, BTreeMap<Rejection, u32>)>,
}

/// Places as many requested tasks as fit, updating `agents`' free capacity in place,
/// taking turns between roles by weighted Dominant Resource Fairness ([`Fairness`]).
/// `cursor` carries the round-robin position over agents between calls.
pub fn place(
    agents: &mut [AgentCapacity],
    requests: &[LaunchRequest],
    cursor: &mut usize,
    fairness: &mut Fairness,
) -> PlacementResult {
    let mut out = PlacementResult::default();
    // What each task of a request needs, worked out once per request.
    let shapes: Vec<TaskShape> = requests
        .iter()
        .map(|r| TaskShape {
            need: r.app.task_resources(),
            roles: ordered_roles(&r.app.accepted_roles()),
            ports: r.app.requested_host_ports(),
        })
        .collect();
    let mut trackers: Vec<ConstraintTracker> = requests.iter().map(|r| r.constraints.clone()).collect();
    let mut turns = fairness.turns(requests);
    while let Some(ri) = turns.next_request() {
        let req = &requests[ri];
        let role = req.app.role();
        let shape = &shapes[ri];
        let need = shape.need;
        let remaining = req.count - turns.placed_of(ri);
        if !fairness.allows(role, &need) {
            let why = BTreeMap::from([(Rejection::RoleQuotaExceeded, 1)]);
            out.unplaced.insert(ri, (remaining, why));
            turns.finish(ri, fairness);
            continue;
        }
        match place_one(agents, req.app, shape, &trackers[ri], cursor) {
            Ok((agent, ports)) => {
                if !trackers[ri].is_empty() {
                    trackers[ri].record(&agents[agent].fields);
                }
                out.placed.push(Placement { request: ri, agent, ports });
                fairness.charge(role, &need);
                turns.placed(ri, fairness);
            }
            Err(reasons) => {
                // No agent fits this task, so none fits the identical rest of the request.
                out.unplaced.insert(ri, (remaining, reasons));
                turns.finish(ri, fairness);
            }
        }
    }
    out
}

/// What one task of a request needs from an agent.
struct TaskShape<'a> {
    need: Resources,
    /// Accepted roles, the app's own reservation first.
    roles: Vec<&'a str>,
    /// One entry per host port: `Some(p)` exactly `p`, `None` any.
    ports: Vec<Option<u16>>,
}

/// Counts of rejection reasons. Only a handful of distinct reasons occur, so a short
/// list beats a map in the placement's hottest loop (one entry per agent looked at).
#[derive(Default)]
struct Tally(Vec<(Rejection, u32)>);

impl Tally {
    fn add(&mut self, r: Rejection) {
        match self.0.iter_mut().find(|(x, _)| *x == r) {
            Some((_, n)) => *n += 1,
            None => self.0.push((r, 1)),
        }
    }
}

/// Finds an agent for one task of `app`, round-robin from `cursor`.
fn place_one(
    agents: &mut [AgentCapacity],
    app: &AppSpec,
    shape: &TaskShape,
    constraints: &ConstraintTracker,
    cursor: &mut usize,
) -> Result<(usize, Vec<u16>), BTreeMap<Rejection, u32>> {
    let mut reasons = Tally::default();
    let n = agents.len();
    for step in 0..n {
        let ai = (*cursor + step) % n;
        let agent = &mut agents[ai];
        // Constraints before resources, as Marathon checked offers (the queue's summary
        // of "processed" counts follows that order).
        if !constraints.is_empty() {
            if let Some(c) = constraints.violated(&agent.fields) {
                reasons.add(Rejection::Constraint(u16::try_from(c).unwrap_or(u16::MAX)));
                continue;
            }
        }
        if let Some(r) = agent.rejects(app, &shape.need, &shape.roles, shape.ports.len()) {
            reasons.add(r);
            continue;
        }
        match agent.take(&shape.need, &shape.roles, &shape.ports) {
            Some(ports) => {
                *cursor = (ai + 1) % n;
                return Ok((ai, ports));
            }
            None => reasons.add(Rejection::InsufficientPorts),
        }
    }
    Err(reasons.0.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AgentResources, PathId};
    use crate::scheduler::reconcile::tests::spec;
    use crate::scheduler::RolePolicy;

    fn agent(i: usize, cpus: f64, mem: f64, ports: PortRange) -> AgentCapacity {
        AgentCapacity::new(&AgentInfo {
            id: AgentId(format!("a{i}")),
            hostname: format!("h{i}"),
            resources: AgentResources::unreserved(Resources::new(cpus, mem, 1000.0, 0.0), vec![ports]),
            attributes: Default::default(),
            containerizers: vec![Containerizer::Process],
        })
    }

    fn place(agents: &mut [AgentCapacity], requests: &[LaunchRequest], cursor: &mut usize) -> PlacementResult {
        let policy = RolePolicy::default();
        let mut f = Fairness::new(Resources::default(), Default::default(), &policy);
        super::place(agents, requests, cursor, &mut f)
    }

    #[test]
    fn spreads_round_robin_and_assigns_distinct_ports() {
        let mut agents: Vec<_> = (0..3).map(|i| agent(i, 1.0, 1024.0, PortRange::new(31000, 31010))).collect();
        let mut app = spec("/web", 6);
        app.cpus = 0.1;
        app.mem = 64.0;
        let mut cur = 0;
        let r = place(&mut agents, &[LaunchRequest::new(&app, 6)], &mut cur);
        assert_eq!(r.placed.len(), 6);
        assert!(r.unplaced.is_empty());
        for a in 0..3 {
            let on: Vec<_> = r.placed.iter().filter(|p| p.agent == a).collect();
            assert_eq!(on.len(), 2);
            assert_ne!(on[0].ports, on[1].ports);
        }
        assert!((agents[0].pools[0].free.cpus - 0.8).abs() < 1e-9);
    }

    #[test]
    fn constraints_hold_within_one_pass_and_name_the_blocking_constraint() {
        // Six agents in three racks; UNIQUE hostname and GROUP_BY rack with three racks.
        let mut agents: Vec<_> = (0..6).map(|i| agent(i, 4.0, 4096.0, PortRange::new(31000, 31010))).collect();
        for (i, a) in agents.iter_mut().enumerate() {
            std::sync::Arc::make_mut(&mut a.fields).attributes.insert("rack".into(), format!("r{}", i / 2));
        }
        let mut app = spec("/web", 8);
        app.cpus = 0.1;
        app.constraints = vec![
            crate::domain::app::Constraint::parse(&["hostname".into(), "UNIQUE".into()]).unwrap(),
            crate::domain::app::Constraint::parse(&["rack".into(), "GROUP_BY".into(), "3".into()]).unwrap(),
        ];
        let mut cur = 0;
        let r = place(&mut agents, &[LaunchRequest::new(&app, 8)], &mut cur);
        // One per host, and the racks stay even: 2, 2, 2.
        let hosts: std::collections::BTreeSet<usize> = r.placed.iter().map(|p| p.agent).collect();
        assert_eq!((r.placed.len(), hosts.len()), (6, 6));
        let (left, why) = &r.unplaced[&0];
        assert_eq!(*left, 2);
        assert_eq!(why[&Rejection::Constraint(0)], 6, "every host is taken: the UNIQUE constraint says so");
        assert_eq!(Rejection::Constraint(0).name(), "UnfulfilledConstraint");

        // Instances placed earlier count: with two already in rack r0, GROUP_BY sends the
        // next ones to r1 and r2 first.
        let mut agents: Vec<_> = (0..6).map(|i| agent(i, 4.0, 4096.0, PortRange::new(31000, 31010))).collect();
        for (i, a) in agents.iter_mut().enumerate() {
            std::sync::Arc::make_mut(&mut a.fields).attributes.insert("rack".into(), format!("r{}", i / 2));
        }
        app.constraints.truncate(0);
        app.constraints.push(crate::domain::app::Constraint::parse(&["rack".into(), "GROUP_BY".into()]).unwrap());
        let placed = [(*agents[0].fields).clone(), (*agents[1].fields).clone()];
        let req = LaunchRequest { app: &app, count: 2, constraints: ConstraintTracker::new(&app.constraints, &placed) };
        let r = place(&mut agents, &[req], &mut cur);
        let racks: Vec<String> = r.placed.iter().map(|p| agents[p.agent].fields.attributes["rack"].clone()).collect();
        assert_eq!(racks.len(), 2);
        assert!(!racks.contains(&"r0".to_string()), "{racks:?}");
    }

    #[test]
    fn stops_when_resources_run_out_and_says_why() {
        let mut agents = vec![agent(0, 0.25, 1024.0, PortRange::new(31000, 31010))];
        let mut app = spec("/web", 5);
        app.cpus = 0.1;
        let mut cur = 0;
        let r = place(&mut agents, &[LaunchRequest::new(&app, 5)], &mut cur);
        assert_eq!(r.placed.len(), 2);
        let (left, why) = &r.unplaced[&0];
        assert_eq!(*left, 3);
        assert_eq!(why[&Rejection::InsufficientCpus], 1);
    }

    #[test]
    fn ports_run_out() {
        let mut agents = vec![agent(0, 10.0, 10_000.0, PortRange::new(31000, 31002))];
        let mut app = spec("/web", 3);
        app.cpus = 0.1;
        app.mem = 1.0;
        app.port_definitions.push(app.port_definitions[0].clone());
        let mut cur = 0;
        let r = place(&mut agents, &[LaunchRequest::new(&app, 3)], &mut cur);
        assert_eq!(r.placed.len(), 1);
        assert_eq!(r.unplaced[&0].1[&Rejection::InsufficientPorts], 1);
    }

    #[test]
    fn required_ports_are_exact_and_exclusive() {
        let mut agents: Vec<_> = (0..2).map(|i| agent(i, 10.0, 10_000.0, PortRange::new(31000, 31010))).collect();
        let mut app = spec("/fixed", 3);
        app.cpus = 0.1;
        app.mem = 1.0;
        app.require_ports = true;
        app.port_definitions[0].port = 31005;
        let mut cur = 0;
        let r = place(&mut agents, &[LaunchRequest::new(&app, 3)], &mut cur);
        assert_eq!(r.placed.len(), 2, "one per agent: the port is taken after that");
        assert!(r.placed.iter().all(|p| p.ports == vec![31005]));
    }

    #[test]
    fn docker_apps_need_a_docker_agent() {
        let mut agents = vec![agent(0, 10.0, 10_000.0, PortRange::new(31000, 31010))];
        let mut app = spec("/img", 1);
        app.container =
            Some(serde_json::from_value(serde_json::json!({"type":"DOCKER","docker":{"image":"busybox"}})).unwrap());
        let mut cur = 0;
        let r = place(&mut agents, &[LaunchRequest::new(&app, 1)], &mut cur);
        assert!(r.placed.is_empty());
        assert_eq!(r.unplaced[&0].1[&Rejection::NoContainerizer], 1);
    }

    #[test]
    fn reserved_resources_go_to_their_role_first() {
        let info = AgentInfo {
            id: AgentId("a".into()),
            hostname: "h".into(),
            resources: crate::domain::resources::parse_resources("cpus:1;mem:1000;cpus(batch):2;mem(batch):1000")
                .unwrap(),
            attributes: Default::default(),
            containerizers: vec![Containerizer::Process],
        };
        let mut agents = vec![AgentCapacity::new(&info)];
        let mut web = spec("/web", 3);
        web.port_definitions.clear();
        web.mem = 10.0;
        let mut batch = web.clone();
        batch.id = PathId::parse_app("/batch").unwrap();
        batch.role = Some("batch".into());
        // web (role *) gets only the unreserved cpu; batch its 2 reserved cpus first,
        // then nothing more: the unreserved one is gone.
        let mut cur = 0;
        let r = place(&mut agents, &[LaunchRequest::new(&web, 3), LaunchRequest::new(&batch, 3)], &mut cur);
        let count = |i| r.placed.iter().filter(|p| p.request == i).count();
        assert_eq!((count(0), count(1)), (1, 2));
        // Only-reserved: an app that accepts just `*` never sees the batch pool.
        let mut agents = vec![AgentCapacity::new(&info)];
        let mut only_star = batch.clone();
        only_star.accepted_resource_roles = Some(vec!["*".into()]);
        let r = place(&mut agents, &[LaunchRequest::new(&only_star, 3)], &mut cur);
        assert_eq!(r.placed.len(), 1);
        let mut only_gpu_role = web.clone();
        only_gpu_role.role = Some("gpu".into());
        only_gpu_role.accepted_resource_roles = Some(vec!["gpu".into()]);
        let r = place(&mut agents, &[LaunchRequest::new(&only_gpu_role, 1)], &mut cur);
        assert_eq!(r.unplaced[&0].1[&Rejection::UnfulfilledRole], 1);
    }

    #[test]
    fn port_pool_reuses_released_ports_last() {
        let mut p = PortPool::new(&[PortRange::new(100, 102), PortRange::new(200, 200)]);
        assert_eq!([p.next_free(), p.next_free()], [Some(100), Some(101)]);
        p.release(100);
        assert_eq!(p.next_free(), Some(102));
        assert_eq!(p.next_free(), Some(200));
        assert_eq!(p.next_free(), Some(100));
        assert_eq!(p.next_free(), None);
        assert_eq!(p.free(), 0);
    }
}
