//! Allocation between roles: weighted Dominant Resource Fairness with quotas.
//!
//! A role's dominant share is the largest fraction of any cluster resource its tasks use
//! (cpus, mem, disk, gpus), divided by its weight. When several roles wait for launches,
//! the one with the lowest share places its next task, then the shares are updated: the
//! progressive filling of Ghodsi et al., "Dominant Resource Fairness" (NSDI 2011), which
//! Mesos's allocator used between frameworks and we use between roles. A quota caps what
//! a role may use in the whole cluster. Pure and synchronous: [`super::placement::place`]
//! asks it whose turn it is.

use super::placement::LaunchRequest;
use crate::domain::{Quota, Resources};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};

/// Operator settings for roles (`--role-weight`, `--role-quota`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RolePolicy {
    /// Relative weights; roles not named weigh 1.
    pub weights: BTreeMap<String, f64>,
    /// Upper limits on what a role's tasks use in the cluster.
    pub quotas: BTreeMap<String, Quota>,
}

/// The fairness state of one allocation pass: cluster size and what each role uses.
#[derive(Debug, Clone)]
pub struct Fairness<'p> {
    total: Resources,
    usage: HashMap<String, Resources>,
    policy: &'p RolePolicy,
}

impl<'p> Fairness<'p> {
    /// `total` is what all usable agents offer; `usage` what each role's tasks use now.
    pub fn new(total: Resources, usage: HashMap<String, Resources>, policy: &'p RolePolicy) -> Self {
        Fairness { total, usage, policy }
    }

    /// The role's weighted dominant share.
    pub fn share(&self, role: &str) -> f64 {
        let used = self.usage.get(role).copied().unwrap_or_default();
        let w = self.policy.weights.get(role).copied().filter(|w| *w > 0.0).unwrap_or(1.0);
        used.dominant_share(&self.total) / w
    }

    /// Whether one more task needing `need` keeps the role within its quota.
    pub fn allows(&self, role: &str, need: &Resources) -> bool {
        match self.policy.quotas.get(role) {
            None => true,
            Some(q) => {
                let mut after = self.usage.get(role).copied().unwrap_or_default();
                after.add(need);
                after.within(q)
            }
        }
    }

    pub fn charge(&mut self, role: &str, need: &Resources) {
        self.usage.entry(role.to_string()).or_default().add(need);
    }

    pub fn usage(&self, role: &str) -> Resources {
        self.usage.get(role).copied().unwrap_or_default()
    }

    /// The order in which `requests` get their turns.
    pub fn turns(&self, requests: &[LaunchRequest]) -> Turns {
        let mut roles: Vec<&str> = requests.iter().map(|r| r.app.role()).collect();
        roles.sort_unstable();
        roles.dedup();
        let mut queues = vec![VecDeque::new(); roles.len()];
        for (i, r) in requests.iter().enumerate() {
            if r.count > 0 {
                // `roles` holds every request's role: the search cannot fail.
                let ri = roles.binary_search(&r.app.role()).unwrap_or(0);
                queues[ri].push_back(i);
            }
        }
        let mut heap = BinaryHeap::new();
        for (ri, q) in queues.iter().enumerate() {
            if !q.is_empty() {
                heap.push(Turn { share: self.share(roles[ri]), role: ri });
            }
        }
        Turns {
            roles: roles.into_iter().map(str::to_string).collect(),
            queues,
            heap,
            current: None,
            placed: vec![0; requests.len()],
            counts: requests.iter().map(|r| r.count).collect(),
        }
    }
}

/// A role waiting for its turn. The heap pops the lowest share first, ties by role name.
#[derive(Debug, Clone, Copy)]
struct Turn {
    share: f64,
    role: usize,
}

impl PartialEq for Turn {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Turn {}
impl PartialOrd for Turn {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Turn {
    fn cmp(&self, o: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap and we want the smallest share.
        o.share.total_cmp(&self.share).then_with(|| o.role.cmp(&self.role))
    }
}

/// Whose turn it is, task by task.
#[derive(Debug)]
pub struct Turns {
    roles: Vec<String>,
    /// Per role, its requests with tasks still to place, in order.
    queues: Vec<VecDeque<usize>>,
    heap: BinaryHeap<Turn>,
    current: Option<usize>,
    placed: Vec<u32>,
    counts: Vec<u32>,
}

impl Turns {
    /// The request whose next task should be placed now, if any task is left.
    pub fn next_request(&mut self) -> Option<usize> {
        let turn = self.heap.pop()?;
        self.current = Some(turn.role);
        self.queues[turn.role].front().copied()
    }

    pub fn placed_of(&self, request: usize) -> u32 {
        self.placed[request]
    }

    /// One task of `request` was placed.
    pub fn placed(&mut self, request: usize, fairness: &Fairness) {
        self.placed[request] += 1;
        if self.placed[request] >= self.counts[request] {
            self.finish(request, fairness);
        } else {
            self.requeue(fairness);
        }
    }

    /// `request` is done (fully placed, or nothing more of it fits).
    pub fn finish(&mut self, request: usize, fairness: &Fairness) {
        if let Some(role) = self.current {
            if self.queues[role].front() == Some(&request) {
                self.queues[role].pop_front();
            }
        }
        self.requeue(fairness);
    }

    fn requeue(&mut self, fairness: &Fairness) {
        if let Some(role) = self.current.take() {
            if !self.queues[role].is_empty() {
                self.heap.push(Turn { share: fairness.share(&self.roles[role]), role });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::agent::Containerizer;
    use crate::domain::{AgentId, AgentInfo, AgentResources, AppSpec};
    use crate::scheduler::placement::{place, AgentCapacity, Rejection};
    use crate::scheduler::reconcile::tests::spec;

    fn agent(i: usize, cpus: f64, mem: f64) -> AgentCapacity {
        AgentCapacity::new(&AgentInfo {
            id: AgentId(format!("a{i}")),
            hostname: format!("h{i}"),
            resources: AgentResources::unreserved(Resources::new(cpus, mem, 0.0, 0.0), vec![]),
            attributes: Default::default(),
            containerizers: vec![Containerizer::Process],
        })
    }

    fn app(id: &str, role: &str, cpus: f64, mem: f64, n: u32) -> AppSpec {
        let mut s = spec(id, n);
        s.role = Some(role.into());
        s.cpus = cpus;
        s.mem = mem;
        s.port_definitions.clear();
        s
    }

    fn run(agents: &mut [AgentCapacity], apps: &[AppSpec], policy: &RolePolicy) -> Vec<usize> {
        let mut total = Resources::default();
        for a in agents.iter() {
            for p in &a.pools {
                total.add(&p.free);
            }
        }
        let requests: Vec<LaunchRequest> = apps.iter().map(|a| LaunchRequest::new(a, a.instances)).collect();
        let mut f = Fairness::new(total, HashMap::new(), policy);
        let r = place(agents, &requests, &mut 0, &mut f);
        (0..apps.len()).map(|i| r.placed.iter().filter(|p| p.request == i).count()).collect()
    }

    /// The paper's example: 9 CPUs and 18 GB; A's tasks need <1 CPU, 4 GB>, B's
    /// <3 CPUs, 1 GB>. DRF gives A three tasks and B two (both dominant shares 2/3).
    #[test]
    fn textbook_example() {
        let mut agents = vec![agent(0, 9.0, 18.0)];
        let apps = [app("/a", "a", 1.0, 4.0, 100), app("/b", "b", 3.0, 1.0, 100)];
        assert_eq!(run(&mut agents, &apps, &RolePolicy::default()), vec![3, 2]);
    }

    /// Equal tasks, equal weights: an even split; with weight 3:1 a 3:1 split.
    #[test]
    fn weights_scale_the_shares() {
        let apps = [app("/a", "a", 1.0, 1.0, 100), app("/b", "b", 1.0, 1.0, 100)];
        let mut agents = vec![agent(0, 8.0, 8.0)];
        assert_eq!(run(&mut agents, &apps, &RolePolicy::default()), vec![4, 4]);
        let mut policy = RolePolicy::default();
        policy.weights.insert("a".into(), 3.0);
        let mut agents = vec![agent(0, 8.0, 8.0)];
        assert_eq!(run(&mut agents, &apps, &policy), vec![6, 2]);
    }

    /// A role that is alone takes everything; a small demand is met in full before the
    /// rest goes to the big one (max-min fairness).
    #[test]
    fn unused_share_goes_to_others() {
        let apps = [app("/a", "a", 1.0, 1.0, 2), app("/b", "b", 1.0, 1.0, 100)];
        let mut agents = vec![agent(0, 10.0, 10.0)];
        assert_eq!(run(&mut agents, &apps, &RolePolicy::default()), vec![2, 8]);
    }

    /// A role already using its fair share waits while the other catches up.
    #[test]
    fn existing_usage_counts() {
        let apps = [app("/a", "a", 1.0, 1.0, 10), app("/b", "b", 1.0, 1.0, 10)];
        let mut agents = vec![agent(0, 6.0, 6.0)];
        let requests: Vec<LaunchRequest> = apps.iter().map(|a| LaunchRequest::new(a, 10)).collect();
        let policy = RolePolicy::default();
        let usage = HashMap::from([("a".to_string(), Resources::new(4.0, 4.0, 0.0, 0.0))]);
        let mut f = Fairness::new(Resources::new(10.0, 10.0, 0.0, 0.0), usage, &policy);
        let r = place(&mut agents, &requests, &mut 0, &mut f);
        let b = r.placed.iter().filter(|p| p.request == 1).count();
        assert_eq!(b, 5, "b first catches up to a's 4, then they alternate: 4+1 vs 1");
    }

    #[test]
    fn quotas_cap_a_role() {
        let apps = [app("/a", "a", 1.0, 1.0, 10)];
        let mut policy = RolePolicy::default();
        policy.quotas.insert("a".into(), Quota { cpus: Some(3.0), ..Default::default() });
        let mut agents = vec![agent(0, 10.0, 10.0)];
        let requests = [LaunchRequest::new(&apps[0], 10)];
        let mut f = Fairness::new(Resources::new(10.0, 10.0, 0.0, 0.0), HashMap::new(), &policy);
        let r = place(&mut agents, &requests, &mut 0, &mut f);
        assert_eq!(r.placed.len(), 3);
        assert_eq!(r.unplaced[&0].0, 7);
        assert!(r.unplaced[&0].1.contains_key(&Rejection::RoleQuotaExceeded));
    }
}
