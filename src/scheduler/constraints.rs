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
//! values first, so the spread stays even, over every GROUP_BY field of the app
//! ([`group_by_victims`]).

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

/// Orders the instances to kill on scale-down when the app has GROUP_BY constraints, so
/// the remaining instances stay evenly spread over every GROUP_BY field. Each kill comes
/// from the most used value of the most uneven field (spread = most used - least used;
/// among equals, the field listed first); within that value, it is the instance whose
/// values of the other GROUP_BY fields are most used, then the one first in `preferred`
/// order. With one field that is simply the next preferred instance of its most used
/// value. `field_of(i, f)` is the value of GROUP_BY field `f` (of `fields`) for
/// `preferred[i]`'s agent. Returns indices into `preferred`, `n` of them at most.
pub fn group_by_victims(
    preferred_len: usize,
    n: usize,
    fields: usize,
    field_of: impl Fn(usize, usize) -> Option<String>,
) -> Vec<usize> {
    // Per field: each value's instances in preference order and how many are not taken.
    struct Value {
        members: Vec<usize>,
        left: usize,
        /// Members before it are taken.
        next: usize,
    }
    let mut values: Vec<Vec<Value>> = (0..fields).map(|_| Vec::new()).collect();
    // group[i][f]: the index, in values[f], of instance i's value of field f.
    let mut group: Vec<Vec<usize>> = vec![Vec::with_capacity(fields); preferred_len];
    for (f, field_values) in values.iter_mut().enumerate() {
        let mut index: BTreeMap<Option<String>, usize> = BTreeMap::new();
        for (i, g) in group.iter_mut().enumerate() {
            let next = index.len();
            let v = *index.entry(field_of(i, f)).or_insert(next);
            if v == field_values.len() {
                field_values.push(Value { members: Vec::new(), left: 0, next: 0 });
            }
            field_values[v].members.push(i);
            field_values[v].left += 1;
            g.push(v);
        }
    }
    let mut taken = vec![false; preferred_len];
    let mut out = Vec::with_capacity(n.min(preferred_len));
    while out.len() < n.min(preferred_len) {
        let spread = |vs: &[Value]| {
            let used = vs.iter().map(|v| v.left).filter(|l| *l > 0);
            used.clone().max().unwrap_or(0) - used.min().unwrap_or(0)
        };
        // The most uneven field (the first among equals).
        let Some(f) = (0..fields).rev().max_by_key(|f| spread(&values[*f])) else { break };
        for v in values[f].iter_mut() {
            while v.next < v.members.len() && taken[v.members[v.next]] {
                v.next += 1;
            }
        }
        // Its most used value; among equals, the one whose next instance is preferred most.
        let Some(v) = values[f]
            .iter()
            .enumerate()
            .filter_map(|(k, v)| Some((k, v.left, *v.members.get(v.next)?)))
            .max_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2)))
            .map(|(k, _, _)| k)
        else {
            break;
        };
        let pick = if fields == 1 {
            values[f][v].members.get(values[f][v].next).copied()
        } else {
            // How used the instance's other values are (ties: preferred order).
            let others =
                |i: usize| -> usize { (0..fields).filter(|g| *g != f).map(|g| values[g][group[i][g]].left).sum() };
            let members = values[f][v].members[values[f][v].next..].iter().copied().filter(|i| !taken[*i]);
            members.map(|i| (others(i), std::cmp::Reverse(i))).max().map(|(_, std::cmp::Reverse(i))| i)
        };
        let Some(i) = pick else { break };
        taken[i] = true;
        for (g, &k) in group[i].iter().enumerate() {
            values[g][k].left -= 1;
        }
        out.push(i);
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
        let victims = group_by_victims(racks.len(), 3, 1, |i, _| Some(racks[i].to_string()));
        // r1 (3) loses its most preferred (0); then r1 and r2 have two each: r2's next (1)
        // is preferred over r1's (2), then r1 (2). Left: r1, r2, r3 once each.
        assert_eq!(victims, vec![0, 1, 2]);
        assert_eq!(group_by_victims(2, 5, 1, |_, _| None), vec![0, 1], "never more than there are");
    }

    #[test]
    fn scale_down_keeps_every_group_by_field_even() {
        // Instances in kill-preference order on (zone, rack): zone a holds four, zone b two;
        // racks a1 and a2 are in a, b1 in b.
        let at = [("a", "a1"), ("a", "a1"), ("a", "a2"), ("b", "b1"), ("a", "a2"), ("b", "b1")];
        let field = |i: usize, f: usize| Some(if f == 0 { at[i].0 } else { at[i].1 }.to_string());
        // Zones are the uneven field (4 vs 2): two kills from a, leaving a and b with two
        // each. Within a, racks a1 and a2 are used equally: the preferred instance (0)
        // goes first; then rack a1 is the smaller one, so a2's preferred instance (2).
        assert_eq!(group_by_victims(at.len(), 2, 2, field), vec![0, 2]);
        // With the fields the other way round: racks a1, a2, b1 hold two each (spread 0),
        // zones 4 vs 2: zones decide the first kill (0). Then both fields are off by one
        // and racks, listed first, decide: a2 and b1 hold two, a2's next (2) is preferred.
        let swapped = |i: usize, f: usize| field(i, 1 - f);
        assert_eq!(group_by_victims(at.len(), 2, 2, swapped), vec![0, 2]);
        // A third kill: both fields even (zones 2 and 2, racks 1, 1, 2): the rack field is
        // uneven now, so b1 (two left) loses its preferred instance (3).
        assert_eq!(group_by_victims(at.len(), 3, 2, field), vec![0, 2, 3]);
    }
}
