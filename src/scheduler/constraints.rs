//! Placement constraints with Marathon's semantics (`["field", "OPERATOR", "value"]`).
//!
//! A constraint reads one *field* of an agent: `hostname` (or `@hostname`), `@region`
//! and `@zone` (the agent's `region` and `zone` attributes: its fault domain), or any
//! other attribute, formatted as Marathon compares it (scalars with at most three
//! decimals, ranges `[b-e,...]`, sets `{a,b}`). An agent without the field is accepted
//! only by UNLIKE.
//!
//! Each operator compares the candidate agent's value with the values of the agents the
//! app's instances already run on (placed earlier, or earlier in this pass):
//!
//! | operator | accepts the agent iff |
//! |---|---|
//! | UNIQUE | no instance has its value |
//! | CLUSTER v | its value is v; without v: nothing is placed yet, or its value is the placed instances' value |
//! | GROUP_BY [min] | no instance has its value yet, or at least `min` values are in use and its value has as few instances as the least used one |
//! | LIKE re / UNLIKE re | its value matches / does not match the whole regex |
//! | MAX_PER n | fewer than n instances have its value |
//! | IS v | its value is v (a numeric v compared as a three-decimal scalar) |
//!
//! GROUP_BY also decides which instances go first on scale-down: from the most used
//! values first, so the spread stays even ([`group_by_victims`]).

use crate::domain::app::{whole_match_regex, Constraint, ConstraintOperator};
use crate::domain::resources::format_scalar;
use crate::domain::AgentInfo;
use regex::Regex;
use std::collections::{BTreeMap, HashMap};

/// What constraints read on one agent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentFields {
    pub hostname: String,
    /// Attribute values as Marathon formats them for comparison.
    pub attributes: BTreeMap<String, String>,
}

impl AgentFields {
    pub fn new(info: &AgentInfo) -> AgentFields {
        AgentFields {
            hostname: info.hostname.clone(),
            attributes: info.attributes.iter().map(|(k, v)| (k.clone(), v.to_string())).collect(),
        }
    }

    /// The value of constraint field `field` on this agent, if it has one.
    pub fn get(&self, field: &str) -> Option<&str> {
        match field {
            "hostname" | "@hostname" => Some(&self.hostname),
            "@region" => self.attributes.get("region").map(String::as_str),
            "@zone" => self.attributes.get("zone").map(String::as_str),
            other => self.attributes.get(other).map(String::as_str),
        }
    }
}

/// A constraint ready to evaluate.
#[derive(Debug, Clone)]
enum Rule {
    Unique,
    Cluster(Option<String>),
    GroupBy(u32),
    Like(Regex),
    Unlike(Regex),
    MaxPer(u32),
    Is(String),
    /// A stored constraint that no longer compiles (validation normally prevents it):
    /// it accepts nothing, so the queue shows it as the reason.
    Broken,
}

fn rule(c: &Constraint) -> Rule {
    let value = c.value.as_deref();
    let int = |default: u32| value.map_or(Some(default), |v| v.parse().ok());
    match c.operator {
        ConstraintOperator::Unique => Rule::Unique,
        ConstraintOperator::Cluster => Rule::Cluster(value.filter(|v| !v.is_empty()).map(String::from)),
        ConstraintOperator::GroupBy => int(0).map_or(Rule::Broken, Rule::GroupBy),
        ConstraintOperator::MaxPer => value.and_then(|v| v.parse().ok()).map_or(Rule::Broken, Rule::MaxPer),
        ConstraintOperator::Like => value.and_then(|v| whole_match_regex(v).ok()).map_or(Rule::Broken, Rule::Like),
        ConstraintOperator::Unlike => value.and_then(|v| whole_match_regex(v).ok()).map_or(Rule::Broken, Rule::Unlike),
        ConstraintOperator::Is => value.map_or(Rule::Broken, |v| Rule::Is(normalize_is(v))),
    }
}

/// `IS` compares numbers as Marathon formats scalars, so 0.8, 0.80 and 0.8001 are equal.
fn normalize_is(v: &str) -> String {
    match v.parse::<f64>() {
        Ok(x) if x.is_finite() => format_scalar(x),
        _ => v.to_string(),
    }
}

#[derive(Debug, Clone)]
struct Check {
    field: String,
    rule: Rule,
    /// How many of the app's instances run on agents with each value of `field`.
    counts: HashMap<String, u32>,
}

impl Check {
    fn count(&self, v: &str) -> u32 {
        self.counts.get(v).copied().unwrap_or(0)
    }

    fn accepts(&self, agent: &AgentFields) -> bool {
        let Some(v) = agent.get(&self.field) else {
            return matches!(self.rule, Rule::Unlike(_));
        };
        match &self.rule {
            Rule::Unique => self.count(v) == 0,
            Rule::Cluster(Some(x)) => v == x,
            Rule::Cluster(None) => self.counts.is_empty() || self.count(v) > 0,
            Rule::GroupBy(min) => {
                let here = self.count(v);
                here == 0
                    || (self.counts.len() >= *min as usize
                        && self.counts.values().min().is_some_and(|least| here <= *least))
            }
            Rule::Like(re) => re.is_match(v),
            Rule::Unlike(re) => !re.is_match(v),
            Rule::MaxPer(n) => self.count(v) < *n,
            Rule::Is(x) => v == x,
            Rule::Broken => false,
        }
    }
}

/// One app's constraints during a placement pass, with where its instances are.
#[derive(Debug, Clone, Default)]
pub struct ConstraintTracker {
    checks: Vec<Check>,
}

impl ConstraintTracker {
    /// `placed`: the agents the app's active instances run on (one entry per instance).
    pub fn new<'a>(constraints: &[Constraint], placed: impl IntoIterator<Item = &'a AgentFields>) -> Self {
        let mut t = ConstraintTracker {
            checks: constraints
                .iter()
                .map(|c| Check { field: c.field.clone(), rule: rule(c), counts: HashMap::new() })
                .collect(),
        };
        if !t.checks.is_empty() {
            for a in placed {
                t.record(a);
            }
        }
        t
    }

    pub fn is_empty(&self) -> bool {
        self.checks.is_empty()
    }

    /// The index of the first constraint `agent` does not satisfy, if any.
    pub fn violated(&self, agent: &AgentFields) -> Option<usize> {
        self.checks.iter().position(|c| !c.accepts(agent))
    }

    /// Counts one more instance on `agent`.
    pub fn record(&mut self, agent: &AgentFields) {
        for c in &mut self.checks {
            if let Some(v) = agent.get(&c.field) {
                *c.counts.entry(v.to_string()).or_default() += 1;
            }
        }
    }
}

/// Orders the instances to kill on scale-down when the app has a GROUP_BY constraint:
/// repeatedly the next instance (in `preferred` order) of the most used value, so the
/// remaining instances stay evenly spread. `field_of(i)` is the GROUP_BY field's value
/// of `preferred[i]`'s agent. Returns indices into `preferred`, `n` of them at most.
pub fn group_by_victims(preferred_len: usize, n: usize, field_of: impl Fn(usize) -> Option<String>) -> Vec<usize> {
    // Per value, its instances in preference order (front = first to go).
    let mut groups: BTreeMap<Option<String>, std::collections::VecDeque<usize>> = BTreeMap::new();
    for i in 0..preferred_len {
        groups.entry(field_of(i)).or_default().push_back(i);
    }
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        // The largest group; among equals, the one whose next victim is preferred most.
        let Some(key) = groups
            .iter()
            .filter(|(_, g)| !g.is_empty())
            .max_by(|(_, a), (_, b)| a.len().cmp(&b.len()).then(b[0].cmp(&a[0])))
            .map(|(k, _)| k.clone())
        else {
            break;
        };
        if let Some(i) = groups.get_mut(&key).and_then(|g| g.pop_front()) {
            out.push(i);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(raw: &[&str]) -> Constraint {
        Constraint::parse(&raw.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn agent(host: &str, attrs: &[(&str, &str)]) -> AgentFields {
        AgentFields {
            hostname: host.into(),
            attributes: attrs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    /// Accepts `candidate` for an app with `constraint` whose instances run on `placed`?
    fn accepts(constraint: &[&str], placed: &[&AgentFields], candidate: &AgentFields) -> bool {
        ConstraintTracker::new(&[c(constraint)], placed.iter().copied()).violated(candidate).is_none()
    }

    #[test]
    fn unique_takes_each_value_once() {
        let (a, b) = (agent("a", &[("rack", "r1")]), agent("b", &[("rack", "r1")]));
        assert!(accepts(&["hostname", "UNIQUE"], &[], &a));
        assert!(!accepts(&["hostname", "UNIQUE"], &[&a], &a));
        assert!(accepts(&["@hostname", "UNIQUE"], &[&a], &b));
        assert!(!accepts(&["rack", "UNIQUE"], &[&a], &b), "same rack");
        assert!(!accepts(&["zone", "UNIQUE"], &[], &a), "missing attribute: only UNLIKE accepts");
    }

    #[test]
    fn cluster_with_and_without_a_value() {
        let (r1, r2) = (agent("a", &[("rack", "r1")]), agent("b", &[("rack", "r2")]));
        assert!(accepts(&["rack", "CLUSTER", "r1"], &[], &r1));
        assert!(!accepts(&["rack", "CLUSTER", "r1"], &[], &r2));
        // Without a value: anything first, then only the first instance's value.
        assert!(accepts(&["rack", "CLUSTER"], &[], &r2));
        assert!(accepts(&["rack", "CLUSTER"], &[&r1], &r1));
        assert!(!accepts(&["rack", "CLUSTER"], &[&r1], &r2));
        assert!(!accepts(&["zone", "CLUSTER"], &[], &r1));
    }

    #[test]
    fn group_by_keeps_groups_even_and_opens_the_minimum_number() {
        let r = |n: u32| agent(&format!("h{n}"), &[("rack", &format!("r{n}"))]);
        let (r1, r2, r3) = (r(1), r(2), r(3));
        // A new value is always welcome.
        assert!(accepts(&["rack", "GROUP_BY"], &[&r1], &r2));
        // Without a minimum, the least used existing group is fine (even if it is the
        // only one: distribution then follows offer order, as in Marathon).
        assert!(accepts(&["rack", "GROUP_BY"], &[&r1], &r1));
        assert!(!accepts(&["rack", "GROUP_BY"], &[&r1, &r1, &r2], &r1), "r1 is not among the smallest");
        assert!(accepts(&["rack", "GROUP_BY"], &[&r1, &r1, &r2], &r2));
        // With a minimum of 3, existing groups wait until three are in use.
        assert!(!accepts(&["rack", "GROUP_BY", "3"], &[&r1, &r2], &r1));
        assert!(accepts(&["rack", "GROUP_BY", "3"], &[&r1, &r2], &r3));
        assert!(accepts(&["rack", "GROUP_BY", "3"], &[&r1, &r2, &r3], &r1));
        assert!(!accepts(&["rack", "GROUP_BY", "3"], &[&r1, &r2, &r3, &r1], &r1));
    }

    #[test]
    fn like_and_unlike_match_whole_values_and_unlike_takes_agents_without_the_field() {
        let a = agent("web-1.example.com", &[("rack", "rack-12")]);
        let bare = agent("b", &[]);
        assert!(accepts(&["rack", "LIKE", "rack-[0-9]+"], &[], &a));
        assert!(!accepts(&["rack", "LIKE", "rack-1"], &[], &a), "whole value, not a prefix");
        assert!(!accepts(&["rack", "LIKE", "rack-.*"], &[], &bare));
        assert!(!accepts(&["rack", "UNLIKE", "rack-1[0-9]"], &[], &a));
        assert!(accepts(&["rack", "UNLIKE", "rack-1"], &[], &a));
        assert!(accepts(&["rack", "UNLIKE", "rack-.*"], &[], &bare), "missing attribute: UNLIKE accepts");
        assert!(accepts(&["hostname", "LIKE", "web-[0-9]\\.example\\.com"], &[], &a));
    }

    #[test]
    fn max_per_counts_instances_per_value() {
        let (a, b) = (agent("a", &[("rack", "r1")]), agent("b", &[("rack", "r1")]));
        assert!(accepts(&["rack", "MAX_PER", "2"], &[&a], &b));
        assert!(!accepts(&["rack", "MAX_PER", "2"], &[&a, &b], &b));
        assert!(!accepts(&["rack", "MAX_PER", "0"], &[], &a));
    }

    #[test]
    fn is_compares_text_exactly_and_numbers_as_three_decimal_scalars() {
        // Attribute values arrive formatted the way Value's Display does it.
        let a = agent("a", &[("level", "0.8"), ("os", "linux")]);
        for v in ["0.8", "0.80", "0.8001"] {
            assert!(accepts(&["level", "IS", v], &[], &a), "{v}");
        }
        assert!(!accepts(&["level", "IS", "0.81"], &[], &a));
        assert!(accepts(&["os", "IS", "linux"], &[], &a));
        assert!(!accepts(&["os", "IS", "Linux"], &[], &a));
    }

    #[test]
    fn fault_domain_fields_read_region_and_zone() {
        let a = agent("a", &[("region", "eu"), ("zone", "eu-1a")]);
        assert_eq!(a.get("@region"), Some("eu"));
        assert_eq!(a.get("@zone"), Some("eu-1a"));
        assert_eq!(a.get("@hostname"), Some("a"));
        assert!(accepts(&["@zone", "CLUSTER", "eu-1a"], &[], &a));
    }

    #[test]
    fn several_constraints_report_the_first_violated() {
        let a = agent("a", &[("rack", "r1")]);
        let t = ConstraintTracker::new(&[c(&["rack", "LIKE", "r.*"]), c(&["hostname", "UNIQUE"])], [&a]);
        assert_eq!(t.violated(&a), Some(1));
        assert_eq!(t.violated(&agent("b", &[("rack", "r2")])), None);
        assert_eq!(t.violated(&agent("c", &[])), Some(0));
    }

    #[test]
    fn scale_down_takes_from_the_biggest_groups_first() {
        // Instances in kill-preference order, with their racks: r1 holds three, r2 two, r3 one.
        let racks = ["r1", "r2", "r1", "r3", "r1", "r2"];
        let victims = group_by_victims(racks.len(), 3, |i| Some(racks[i].to_string()));
        // r1 (3) loses its most preferred (0); then r1 and r2 have two each: r2's next (1)
        // is preferred over r1's (2), then r1 (2). Left: r1, r2, r3 once each.
        assert_eq!(victims, vec![0, 1, 2]);
        assert_eq!(group_by_victims(2, 5, |_| None), vec![0, 1], "never more than there are");
    }
}
