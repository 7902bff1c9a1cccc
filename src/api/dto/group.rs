//! Group JSON: Marathon's GroupUpdate in (`POST`/`PUT /v2/groups`), GroupInfo out.
//!
//! Ids in a group body are relative to the group they sit in (`{"id": "shop", "apps":
//! [{"id": "db"}]}` holds `/shop/db`); an app or subgroup must sit directly in its
//! group. Errors inside an app carry their place in the body (`/apps/1/cmd`,
//! `/groups/0/apps/0/mem`).

use super::app::{app_json, parse_app, Embed};
use crate::api::error::ApiError;
use crate::domain::{PathId, Timestamp, Violation};
use crate::master::groups::GroupUpdate;
use crate::master::state::State;
use serde_json::{json, Value};
use std::collections::BTreeMap;

const GROUP_FIELDS: &[&str] = &["id", "apps", "groups", "dependencies", "enforceRole", "pods", "version", "scaleBy"];

/// What a PUT on a group asks for.
#[derive(Debug)]
pub enum GroupRequest {
    /// Back to a stored version (wins over `scaleBy`, as in Marathon).
    Version(String),
    ScaleBy(f64),
    Update(GroupUpdate),
}

/// Parses a PUT body: `{"version": v}`, `{"scaleBy": f}`, or a group update. `base` is
/// the group named by the path; the body's id is relative to it.
pub fn parse_group_request(body: Value, base: &PathId) -> Result<GroupRequest, ApiError> {
    if let Some(v) = body.get("version") {
        return match v.as_str() {
            Some(s) => Ok(GroupRequest::Version(s.to_string())),
            None => {
                Err(ApiError::WrongShape { path: "/version".into(), message: "expected a timestamp string".into() })
            }
        };
    }
    if let Some(f) = body.get("scaleBy") {
        return match f.as_f64() {
            Some(f) if f.is_finite() && f >= 0.0 => Ok(GroupRequest::ScaleBy(f)),
            _ => Err(ApiError::Invalid(vec![Violation::new("/scaleBy", "expected a number of 0 or more")])),
        };
    }
    parse_group(body, base).map(GroupRequest::Update)
}

/// Parses a group update whose id is relative to `base`.
pub fn parse_group(body: Value, base: &PathId) -> Result<GroupUpdate, ApiError> {
    let mut v = Vec::new();
    let update = parse_at(body, base, true, "", &mut v)?;
    match v.is_empty() {
        true => Ok(update),
        false => Err(ApiError::Invalid(v)),
    }
}

fn prefixed(prefix: &str, e: ApiError, v: &mut Vec<Violation>) -> Result<(), ApiError> {
    match e {
        ApiError::Invalid(list) => {
            v.extend(list.into_iter().map(|x| Violation::new(format!("{prefix}{}", x.path), x.message)));
            Ok(())
        }
        ApiError::WrongShape { path, message } => {
            Err(ApiError::WrongShape { path: format!("{prefix}{}", path.trim_end_matches('/')), message })
        }
        other => Err(other),
    }
}

/// One group of the body at JSON pointer `at`. `top`: the id may name any group (else
/// it must be a direct child of `base`).
fn parse_at(body: Value, base: &PathId, top: bool, at: &str, v: &mut Vec<Violation>) -> Result<GroupUpdate, ApiError> {
    let Value::Object(mut obj) = body else {
        return Err(ApiError::WrongShape { path: format!("{at}/"), message: "expected a JSON object".into() });
    };
    for key in obj.keys() {
        if !GROUP_FIELDS.contains(&key.as_str()) {
            v.push(Violation::new(format!("{at}/{}", crate::domain::app::pointer_escape(key)), "unknown field"));
        }
    }
    let id = match obj.get("id") {
        None if top => base.clone(),
        None => {
            v.push(Violation::new(format!("{at}/id"), "must be provided"));
            base.clone()
        }
        Some(Value::String(s)) => match PathId::parse_relative(s, base) {
            Ok(id) if !top && id.parent() != *base => {
                v.push(Violation::new(format!("{at}/id"), format!("{id} is not directly within group {base}")));
                id
            }
            Ok(id) => id,
            Err(e) => {
                v.push(Violation::new(format!("{at}/id"), e.to_string()));
                base.clone()
            }
        },
        Some(_) => return Err(ApiError::WrongShape { path: format!("{at}/id"), message: "expected a string".into() }),
    };
    let mut update = GroupUpdate { id: id.clone(), ..Default::default() };
    if let Some(deps) = obj.remove("dependencies") {
        let list: Vec<String> = super::from_value(deps).map_err(|e| match e {
            ApiError::WrongShape { path, message } => {
                ApiError::WrongShape { path: format!("{at}/dependencies{}", path.trim_end_matches('/')), message }
            }
            e => e,
        })?;
        let mut out = Vec::new();
        for (i, d) in list.iter().enumerate() {
            match PathId::parse_relative(d, &id) {
                Ok(p) if !p.is_root() && p != id => out.push(p),
                Ok(_) => v.push(Violation::new(format!("{at}/dependencies/{i}"), "must name another app or group")),
                Err(e) => v.push(Violation::new(format!("{at}/dependencies/{i}"), e.to_string())),
            }
        }
        update.dependencies = Some(out);
    }
    match obj.remove("enforceRole") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(b)) => update.enforce_role = Some(b),
        Some(_) => {
            return Err(ApiError::WrongShape {
                path: format!("{at}/enforceRole"),
                message: "expected a boolean".into(),
            })
        }
    }
    if let Some(Value::Array(pods)) = obj.get("pods") {
        if !pods.is_empty() {
            v.push(Violation::new(format!("{at}/pods"), "pods are not supported; use apps"));
        }
    }
    match obj.remove("apps") {
        None | Some(Value::Null) => {}
        Some(Value::Array(apps)) => {
            let mut specs = Vec::new();
            for (i, mut app) in apps.into_iter().enumerate() {
                let here = format!("{at}/apps/{i}");
                let app_id = match app.get("id").and_then(Value::as_str).map(|s| PathId::parse_relative(s, &id)) {
                    Some(Ok(a)) if a.parent() == id => a,
                    Some(Ok(a)) => {
                        v.push(Violation::new(format!("{here}/id"), format!("{a} is not directly within group {id}")));
                        continue;
                    }
                    Some(Err(e)) => {
                        v.push(Violation::new(format!("{here}/id"), e.to_string()));
                        continue;
                    }
                    None => {
                        v.push(Violation::new(format!("{here}/id"), "must be provided"));
                        continue;
                    }
                };
                if specs.iter().any(|s: &crate::domain::AppSpec| s.id == app_id) {
                    v.push(Violation::new(format!("{here}/id"), format!("{app_id} appears twice")));
                    continue;
                }
                app["id"] = json!(app_id.to_string());
                match parse_app(app, None) {
                    Ok(spec) => specs.push(spec),
                    Err(e) => prefixed(&here, e, v)?,
                }
            }
            update.apps = Some(specs);
        }
        Some(_) => {
            return Err(ApiError::WrongShape { path: format!("{at}/apps"), message: "expected an array".into() })
        }
    }
    match obj.remove("groups") {
        None | Some(Value::Null) => {}
        Some(Value::Array(groups)) => {
            let mut subs: Vec<GroupUpdate> = Vec::new();
            for (i, g) in groups.into_iter().enumerate() {
                let here = format!("{at}/groups/{i}");
                let sub = parse_at(g, &id, false, &here, v)?;
                if subs.iter().any(|s| s.id == sub.id) {
                    v.push(Violation::new(format!("{here}/id"), format!("{} appears twice", sub.id)));
                    continue;
                }
                subs.push(sub);
            }
            update.groups = Some(subs);
        }
        Some(_) => {
            return Err(ApiError::WrongShape { path: format!("{at}/groups"), message: "expected an array".into() })
        }
    }
    if let (Some(apps), Some(groups)) = (&update.apps, &update.groups) {
        for (i, a) in apps.iter().enumerate() {
            if groups.iter().any(|g| g.id == a.id) {
                v.push(Violation::new(format!("{at}/apps/{i}/id"), format!("{} is also a group", a.id)));
            }
        }
    }
    Ok(update)
}

/// Which parts of a group to embed (`embed=group.groups`, `group.apps`,
/// `group.apps.tasks`, ...). Without `embed`, groups and apps.
#[derive(Debug, Clone, Copy)]
pub struct GroupEmbed {
    pub groups: bool,
    pub apps: bool,
    pub app: Embed,
}

impl GroupEmbed {
    pub fn parse<'a>(values: impl Iterator<Item = &'a str>) -> GroupEmbed {
        let values: Vec<&str> = values.collect();
        if values.is_empty() {
            return GroupEmbed { groups: true, apps: true, app: Embed::default() };
        }
        let app_parts = values.iter().filter_map(|v| v.strip_prefix("group.apps."));
        GroupEmbed {
            groups: values.contains(&"group.groups"),
            apps: values.iter().any(|v| *v == "group.apps" || v.starts_with("group.apps.")),
            app: Embed::parse(app_parts, false),
        }
    }
}

/// Group JSON for group `id` of `state` (Marathon's GroupInfo): its apps, its subgroups
/// (recursively), dependencies, version and enforceRole. `fallback` is the version
/// of a group with nothing in it that was never changed through the group API.
pub fn group_json(state: &State, id: &PathId, embed: GroupEmbed, fallback: Timestamp) -> Value {
    let mut children: BTreeMap<PathId, Vec<PathId>> = BTreeMap::new();
    for g in state.tree().all_groups().into_iter().filter(|g| !g.is_root()) {
        children.entry(g.parent()).or_default().push(g);
    }
    // A group's version is the newest of everything beneath it: one pass over the apps
    // and groups, each counted for all its enclosing groups.
    let mut newest: BTreeMap<PathId, Timestamp> = BTreeMap::new();
    let versions = state.apps.values().map(|r| (r.current.spec.id.parent(), r.current.version));
    for (mut group, version) in versions.chain(state.groups.values().map(|g| (g.id.clone(), g.version))) {
        loop {
            let v = newest.entry(group.clone()).or_insert(version);
            *v = (*v).max(version);
            if group.is_root() {
                break;
            }
            group = group.parent();
        }
    }
    let mut apps: BTreeMap<PathId, Vec<Value>> = BTreeMap::new();
    if embed.apps {
        for r in state.apps.values() {
            apps.entry(r.current.spec.id.parent()).or_default().push(app_json(r, state, embed.app));
        }
    }
    Render { state, embed, fallback, children, newest, apps }.group(id)
}

/// `GET /v2/groups/{id}/apps`: every app beneath the group, as a JSON array.
pub fn apps_within_json(state: &State, id: &PathId, embed: GroupEmbed) -> Value {
    Value::Array(
        state
            .apps
            .values()
            .filter(|r| r.current.spec.id.is_within(id))
            .map(|r| app_json(r, state, embed.app))
            .collect(),
    )
}

/// What rendering a group tree needs, worked out once for the whole tree.
struct Render<'a> {
    state: &'a State,
    embed: GroupEmbed,
    /// The version of a group with nothing beneath it.
    fallback: Timestamp,
    children: BTreeMap<PathId, Vec<PathId>>,
    /// Per group, the newest version of any app or group beneath it.
    newest: BTreeMap<PathId, Timestamp>,
    /// Per group, the JSON of its own apps (when embedded).
    apps: BTreeMap<PathId, Vec<Value>>,
}

impl Render<'_> {
    /// Renders `id` and, when embedded, its subgroups (each group once: its apps are
    /// moved out).
    fn group(&mut self, id: &PathId) -> Value {
        let explicit = self.state.groups.get(id);
        let groups: Vec<Value> = match self.embed.groups {
            true => self.children.get(id).cloned().unwrap_or_default().iter().map(|g| self.group(g)).collect(),
            false => vec![],
        };
        json!({
            "id": id,
            "apps": self.apps.remove(id).unwrap_or_default(),
            "pods": [],
            "groups": groups,
            "dependencies": explicit.map(|g| g.dependencies.clone()).unwrap_or_default(),
            "version": self.newest.get(id).copied().unwrap_or(self.fallback),
            "enforceRole": explicit.is_some_and(|g| g.enforce_role),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(e: ApiError) -> Vec<String> {
        match e {
            ApiError::Invalid(v) => v.into_iter().map(|x| x.path).collect(),
            ApiError::WrongShape { path, .. } => vec![format!("shape {path}")],
            e => vec![format!("other {e:?}")],
        }
    }

    #[test]
    fn ids_are_relative_to_their_group() {
        let body = json!({"id": "shop", "dependencies": ["../infra"], "apps": [{"id": "db", "cmd": "x"}],
            "groups": [{"id": "front", "apps": [{"id": "/shop/front/web", "cmd": "y", "dependencies": ["../../db"]}]}]});
        let u = parse_group(body, &PathId::root()).expect("valid");
        assert_eq!(u.id.to_string(), "/shop");
        assert_eq!(u.dependencies.unwrap()[0].to_string(), "/infra");
        assert_eq!(u.apps.unwrap()[0].id.to_string(), "/shop/db");
        let front = &u.groups.unwrap()[0];
        assert_eq!(front.id.to_string(), "/shop/front");
        let web = &front.apps.as_ref().unwrap()[0];
        assert_eq!(web.id.to_string(), "/shop/front/web");
        assert_eq!(web.dependencies[0].to_string(), "/shop/db");
    }

    #[test]
    fn errors_name_their_place_in_the_body() {
        let body = json!({"id": "shop", "bogus": 1, "apps": [{"id": "db", "cmd": "x"}, {"id": "web", "cmd": "x", "mem": -1}],
            "groups": [{"id": "/elsewhere/g"}, {"apps": [{"cmd": "x"}]}]});
        let mut p = paths(parse_group(body, &PathId::root()).unwrap_err());
        p.sort();
        assert_eq!(p, vec!["/apps/1/mem", "/bogus", "/groups/0/id", "/groups/1/apps/0/id", "/groups/1/id"]);
        let shape = parse_group(json!({"apps": [{"id": "a", "instances": "two"}]}), &PathId::root()).unwrap_err();
        assert_eq!(paths(shape), vec!["shape /apps/0/instances"]);
        let twice = parse_group(
            json!({"id": "g", "apps": [{"id": "a", "cmd": "x"}, {"id": "a", "cmd": "y"}]}),
            &PathId::root(),
        );
        assert_eq!(paths(twice.unwrap_err()), vec!["/apps/1/id"]);
    }

    #[test]
    fn requests_pick_version_then_scale_then_update() {
        let root = PathId::root();
        assert!(matches!(
            parse_group_request(json!({"version": "2026-01-01T00:00:00.000Z", "scaleBy": 2}), &root),
            Ok(GroupRequest::Version(_))
        ));
        assert!(matches!(parse_group_request(json!({"scaleBy": 2}), &root), Ok(GroupRequest::ScaleBy(f)) if f == 2.0));
        assert!(parse_group_request(json!({"scaleBy": -1}), &root).is_err());
        assert!(matches!(parse_group_request(json!({"id": "/x"}), &root), Ok(GroupRequest::Update(_))));
    }
}
