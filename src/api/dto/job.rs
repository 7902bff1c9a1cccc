//! Chronos's job JSON, in and out (reference chronos.md section 2), plus dromos's own
//! fields for what Chronos left implicit: `cron` and `timezone` (a crontab line instead of
//! `schedule`), `concurrencyPolicy`, `missedRunPolicy`, `retryDelaySeconds`,
//! `maxRetryDelaySeconds`; and `nextRunAt` on output.
//!
//! As in Chronos, numbers may arrive as strings and every write is an upsert that
//! resets the counters it is not sent. Unlike Chronos, an unknown field, an unknown
//! constraint operator or time zone is an error naming the field, not silently dropped.

use crate::domain::job::{ConcurrencyPolicy, JobName, JobRecord, JobSpec, JobStatus, MissedRunPolicy};
use crate::domain::schedule::{Period, Schedule, Zone};
use crate::domain::{Timestamp, Violation};
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;

/// Fields dromos keeps and shows but does not act on.
/// (`metronome`: what a job made through Metronome's API had that Chronos's has not.)
const KEPT: &[&str] = &[
    "executor",
    "executorFlags",
    "taskInfoData",
    "fetch",
    "uris",
    "dataProcessingJobType",
    "async",
    "container",
    "metronome",
];

/// Read-only fields that clients send back unchanged (ignored on input).
const OUTPUT_ONLY: &[&str] = &["nextRunAt", "missedCount", "skippedCount"];

/// A job document parsed: the definition and the counters it carries.
pub struct ParsedJob {
    pub spec: JobSpec,
    pub status: JobStatus,
}

/// Parses a Chronos job. `now` fills an empty schedule start; every problem is listed
/// with its field's path.
pub fn parse_job(body: Value, now: Timestamp) -> Result<ParsedJob, Vec<Violation>> {
    let Value::Object(obj) = body else {
        return Err(vec![Violation::new("/", "a job is a JSON object")]);
    };
    let mut r = Reader { obj: &obj, errors: Vec::new() };
    for key in obj.keys() {
        if !KNOWN.contains(&key.as_str()) && !KEPT.contains(&key.as_str()) && !OUTPUT_ONLY.contains(&key.as_str()) {
            r.errors.push(Violation::new(format!("/{key}"), "unknown field"));
        }
    }
    let name = match r.string("name") {
        Some(n) => JobName::parse(&n).map_err(|e| r.errors.push(Violation::new("/name", e))).ok(),
        None => {
            r.errors.push(Violation::new("/name", "a job needs a name"));
            None
        }
    };
    let command = r.string("command").unwrap_or_default();
    let container = obj.get("container").filter(|c| !c.is_null());
    let container_image = container.and_then(|c| c.get("image")).and_then(Value::as_str).map(str::to_string);
    if container.is_some() && container_image.as_deref().is_none_or(str::is_empty) {
        r.errors.push(Violation::new("/container/image", "a container needs an image"));
    }
    if let Some(c) = container {
        // What a job container may ask for: its image, host or bridge network, a pull.
        for k in ["volumes", "parameters", "networkInfos", "portMappings"] {
            if c.get(k).and_then(Value::as_array).is_some_and(|a| !a.is_empty()) {
                r.errors.push(Violation::new(format!("/container/{k}"), "is not supported for jobs"));
            }
        }
        if let Some(t) = c.get("type").and_then(Value::as_str).filter(|t| *t != "DOCKER") {
            r.errors.push(Violation::new("/container/type", format!("'{t}' is not supported; use DOCKER")));
        }
        if let Some(n) = c.get("network").and_then(Value::as_str).filter(|n| !["HOST", "BRIDGE"].contains(n)) {
            r.errors.push(Violation::new("/container/network", format!("'{n}' is not supported; use HOST or BRIDGE")));
        }
    }
    if command.trim().is_empty() && container_image.is_none() {
        r.errors.push(Violation::new("/command", "a job needs a command (or a container image)"));
    }
    // Both may come back from a GET (each filled from the other); different ones conflict.
    let uris: Vec<&Value> = obj.get("uris").and_then(Value::as_array).map(|a| a.iter().collect()).unwrap_or_default();
    let fetched: Vec<&Value> = obj
        .get("fetch")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|f| f.get("uri")).collect())
        .unwrap_or_default();
    if !uris.is_empty() && !fetched.is_empty() && uris != fetched {
        r.errors.push(Violation::new("/fetch", "give either uris or fetch, not both"));
    }

    // Time zone: `scheduleTimeZone` (Chronos) or `timezone` (with `cron`).
    let zone_field = if obj.contains_key("timezone") { "timezone" } else { "scheduleTimeZone" };
    let zone_name = r.string(zone_field).filter(|z| !z.trim().is_empty());
    let zone = zone_name
        .as_deref()
        .and_then(|z| Zone::parse(z).map_err(|e| r.errors.push(Violation::new(format!("/{zone_field}"), e))).ok());

    let parents: BTreeSet<JobName> = r
        .list("parents")
        .into_iter()
        .enumerate()
        .filter_map(|(i, p)| match p.as_str().map(JobName::parse) {
            Some(Ok(n)) => Some(n),
            Some(Err(e)) => {
                r.errors.push(Violation::new(format!("/parents/{i}"), e));
                None
            }
            None => {
                r.errors.push(Violation::new(format!("/parents/{i}"), "a parent is a job name"));
                None
            }
        })
        .collect();
    // `parents` wins over a schedule (Chronos); neither: run once, now.
    let schedule = if !parents.is_empty() {
        None
    } else {
        let (field, text) = match (r.string("cron"), r.string("schedule")) {
            (Some(c), _) if !c.trim().is_empty() => ("cron", c),
            (_, Some(s)) if !s.trim().is_empty() => ("schedule", s),
            _ => ("schedule", "R1//PT24H".to_string()),
        };
        match Schedule::parse(&text, zone, now).and_then(|s| s.check_runs(now).map(|_| s)) {
            Ok(s) => Some(s),
            Err(e) => {
                r.errors.push(Violation::new(format!("/{field}"), e));
                None
            }
        }
    };

    let epsilon_ms = match r.string("epsilon").filter(|e| !e.is_empty()) {
        None => JobSpec::DEFAULT_EPSILON_MS,
        Some(e) => match Period::parse(&e) {
            Ok(p) if p.months == 0 && p.days == 0 => p.millis,
            Ok(p) => p.days as u64 * 86_400_000 + p.millis + p.months as u64 * 30 * 86_400_000,
            Err(msg) => {
                r.errors.push(Violation::new("/epsilon", msg));
                0
            }
        },
    };
    let concurrent = r.boolean("concurrent").unwrap_or(false);
    let concurrency = match r.string("concurrencyPolicy") {
        None => {
            if concurrent {
                ConcurrencyPolicy::Allow
            } else {
                ConcurrencyPolicy::Forbid
            }
        }
        Some(p) => match p.as_str() {
            "ALLOW" => ConcurrencyPolicy::Allow,
            "FORBID" => ConcurrencyPolicy::Forbid,
            "REPLACE" => ConcurrencyPolicy::Replace,
            _ => {
                r.errors.push(Violation::new("/concurrencyPolicy", "must be ALLOW, FORBID or REPLACE"));
                ConcurrencyPolicy::Forbid
            }
        },
    };
    let missed_runs = match r.string("missedRunPolicy").as_deref() {
        None | Some("WITHIN_EPSILON") => MissedRunPolicy::WithinEpsilon,
        Some("ANY_DELAY") => MissedRunPolicy::AnyDelay,
        Some(_) => {
            r.errors.push(Violation::new("/missedRunPolicy", "must be WITHIN_EPSILON or ANY_DELAY"));
            MissedRunPolicy::WithinEpsilon
        }
    };
    let resource = |r: &mut Reader, field: &str, default: f64| match r.number(field) {
        None => default,
        Some(0.0) => default,
        Some(v) if v > 0.0 && v.is_finite() && v < 1e9 => v,
        Some(_) => {
            r.errors.push(Violation::new(format!("/{field}"), "must be a positive number"));
            default
        }
    };
    // 0 or absent: Chronos's defaults.
    let cpus = resource(&mut r, "cpus", JobSpec::DEFAULT_CPUS);
    let mem = resource(&mut r, "mem", JobSpec::DEFAULT_MEM);
    let disk = resource(&mut r, "disk", JobSpec::DEFAULT_DISK);
    let retries = r.count("retries", JobSpec::DEFAULT_RETRIES as u64, 1000) as u32;
    let retry_delay_ms = r.count("retryDelaySeconds", JobSpec::DEFAULT_RETRY_DELAY_MS / 1000, 86_400) * 1000;
    let max_retry_delay_ms =
        r.count("maxRetryDelaySeconds", JobSpec::DEFAULT_MAX_RETRY_DELAY_MS / 1000, 86_400 * 7) * 1000;
    let max_completion_time_ms = r.count("maxCompletionTime", 0, 86_400 * 365) * 1000;

    let arguments: Vec<String> = r
        .list("arguments")
        .into_iter()
        .enumerate()
        .filter_map(|(i, a)| match a {
            Value::String(s) => Some(s),
            _ => {
                r.errors.push(Violation::new(format!("/arguments/{i}"), "an argument is a string"));
                None
            }
        })
        .collect();
    let mut environment = Vec::new();
    for (i, e) in r.list("environmentVariables").into_iter().enumerate() {
        match (e.get("name").and_then(Value::as_str), e.get("value").and_then(Value::as_str)) {
            (Some(n), Some(v)) if !n.is_empty() && !n.contains('=') && !n.contains('\0') && !v.contains('\0') => {
                environment.push((n.to_string(), v.to_string()))
            }
            _ => r.errors.push(Violation::new(
                format!("/environmentVariables/{i}"),
                "an environment variable is {\"name\": ..., \"value\": ...} with a name without '='",
            )),
        }
    }
    let mut constraints = Vec::new();
    for (i, c) in r.list("constraints").into_iter().enumerate() {
        let parts: Vec<&str> = c.as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        match parts[..] {
            [attr, op, value] if ["EQUALS", "LIKE", "UNLIKE"].contains(&op) && !attr.is_empty() => {
                if op != "EQUALS" && crate::domain::app::whole_match_regex(value).is_err() {
                    r.errors.push(Violation::new(format!("/constraints/{i}/2"), "not a valid regular expression"));
                }
                constraints.push([attr.to_string(), op.to_string(), value.to_string()]);
            }
            _ => r.errors.push(Violation::new(
                format!("/constraints/{i}"),
                "a constraint is [attribute, EQUALS|LIKE|UNLIKE, value]",
            )),
        }
    }
    let mut extra = Map::new();
    for k in KEPT {
        if let Some(v) = obj.get(*k) {
            extra.insert(k.to_string(), v.clone());
        }
    }
    let shell = r.boolean("shell").unwrap_or(true);
    let owner = r.string("owner").unwrap_or_default();
    let owner_name = r.string("ownerName").unwrap_or_default();
    let description = r.string("description").unwrap_or_default();
    let disabled = r.boolean("disabled").unwrap_or(false);
    let run_as_user = r.string("runAsUser").filter(|u| !u.is_empty());
    let high_priority = r.boolean("highPriority").unwrap_or(false);
    let soft_error = r.boolean("softError").unwrap_or(false);
    let status = JobStatus {
        success_count: r.count("successCount", 0, u64::MAX),
        error_count: r.count("errorCount", 0, u64::MAX),
        last_success: r.time("lastSuccess"),
        last_error: r.time("lastError"),
        errors_since_last_success: r.count("errorsSinceLastSuccess", 0, u64::MAX),
        ..Default::default()
    };
    // Everything is read: any problem (a missing or bad name among them) is listed.
    let Some(name) = name.filter(|_| r.errors.is_empty()) else {
        return Err(r.errors);
    };
    let spec = JobSpec {
        name,
        command,
        shell,
        arguments,
        schedule,
        schedule_time_zone: zone_name,
        parents,
        epsilon_ms,
        missed_runs,
        concurrency,
        retries,
        retry_delay_ms,
        max_retry_delay_ms,
        max_completion_time_ms,
        owner,
        owner_name,
        description,
        disabled,
        cpus,
        mem,
        disk,
        run_as_user,
        environment,
        constraints,
        container_image,
        high_priority,
        soft_error,
        extra,
    };
    Ok(ParsedJob { spec, status })
}

/// Fields read by [`parse_job`] (besides [`KEPT`] and [`OUTPUT_ONLY`]).
const KNOWN: &[&str] = &[
    "name",
    "command",
    "shell",
    "arguments",
    "schedule",
    "cron",
    "scheduleTimeZone",
    "timezone",
    "parents",
    "epsilon",
    "retries",
    "retryDelaySeconds",
    "maxRetryDelaySeconds",
    "owner",
    "ownerName",
    "description",
    "disabled",
    "concurrent",
    "concurrencyPolicy",
    "missedRunPolicy",
    "cpus",
    "mem",
    "disk",
    "maxCompletionTime",
    "runAsUser",
    "environmentVariables",
    "constraints",
    "highPriority",
    "softError",
    "successCount",
    "errorCount",
    "lastSuccess",
    "lastError",
    "errorsSinceLastSuccess",
];

/// Reads fields of a Chronos document leniently (numbers and booleans may be strings,
/// null is absent), collecting what is wrong.
struct Reader<'a> {
    obj: &'a Map<String, Value>,
    errors: Vec<Violation>,
}

impl Reader<'_> {
    fn get(&self, field: &str) -> Option<&Value> {
        self.obj.get(field).filter(|v| !v.is_null())
    }

    fn wrong(&mut self, field: &str, what: &str) {
        self.errors.push(Violation::new(format!("/{field}"), format!("must be {what}")));
    }

    fn string(&mut self, field: &str) -> Option<String> {
        match self.get(field)? {
            Value::String(s) => Some(s.clone()),
            _ => {
                self.wrong(field, "a string");
                None
            }
        }
    }

    fn boolean(&mut self, field: &str) -> Option<bool> {
        match self.get(field)? {
            Value::Bool(b) => Some(*b),
            Value::String(s) if s == "true" || s == "false" => Some(s == "true"),
            _ => {
                self.wrong(field, "true or false");
                None
            }
        }
    }

    fn number(&mut self, field: &str) -> Option<f64> {
        let v = match self.get(field)? {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        };
        if v.is_none() {
            self.wrong(field, "a number");
        }
        v
    }

    /// A whole number in `0..=max` (`default` when absent).
    fn count(&mut self, field: &str, default: u64, max: u64) -> u64 {
        match self.number(field) {
            None => default,
            Some(v) if v >= 0.0 && v.fract() == 0.0 && v <= max as f64 => v as u64,
            Some(_) => {
                self.wrong(field, &format!("a whole number from 0 to {max}"));
                default
            }
        }
    }

    fn list(&mut self, field: &str) -> Vec<Value> {
        match self.get(field) {
            None => vec![],
            Some(Value::Array(a)) => a.clone(),
            Some(_) => {
                self.wrong(field, "a list");
                vec![]
            }
        }
    }

    /// An ISO 8601 time, `""` meaning none.
    fn time(&mut self, field: &str) -> Option<Timestamp> {
        let s = self.string(field)?;
        if s.is_empty() {
            return None;
        }
        let t = Timestamp::parse(&s);
        if t.is_none() {
            self.wrong(field, "an ISO 8601 time or \"\"");
        }
        t
    }
}

fn time_or_empty(t: Option<Timestamp>) -> Value {
    t.map(|t| json!(t)).unwrap_or(json!(""))
}

/// A job in Chronos's JSON, with dromos's fields; `now` places the schedule (Chronos
/// shows the next run as the interval's start, with the runs left).
pub fn job_json(rec: &JobRecord, now: Timestamp) -> Value {
    let (spec, st) = (&rec.spec, &rec.status);
    let mut out = json!({
        "name": spec.name,
        "command": spec.command,
        "shell": spec.shell,
        "arguments": spec.arguments,
        "epsilon": Period { months: 0, days: 0, millis: spec.epsilon_ms.max(1) }.to_string(),
        "retries": spec.retries,
        "retryDelaySeconds": spec.retry_delay_ms / 1000,
        "maxRetryDelaySeconds": spec.max_retry_delay_ms / 1000,
        "owner": spec.owner,
        "ownerName": spec.owner_name,
        "description": spec.description,
        "successCount": st.success_count,
        "errorCount": st.error_count,
        "lastSuccess": time_or_empty(st.last_success),
        "lastError": time_or_empty(st.last_error),
        "errorsSinceLastSuccess": st.errors_since_last_success,
        "cpus": spec.cpus,
        "mem": spec.mem,
        "disk": spec.disk,
        "disabled": spec.disabled,
        "softError": spec.soft_error,
        "highPriority": spec.high_priority,
        "concurrent": spec.concurrency == ConcurrencyPolicy::Allow,
        "concurrencyPolicy": spec.concurrency,
        "missedRunPolicy": spec.missed_runs,
        "maxCompletionTime": spec.max_completion_time_ms / 1000,
        "runAsUser": spec.run_as_user.clone().unwrap_or_default(),
        "environmentVariables": spec.environment.iter().map(|(n, v)| json!({"name": n, "value": v})).collect::<Vec<_>>(),
        "constraints": spec.constraints,
        "missedCount": st.missed_count,
        "skippedCount": st.skipped_count,
        "uris": [],
        "fetch": [],
        "executor": "",
        "executorFlags": "",
        "taskInfoData": "",
        "dataProcessingJobType": false,
    });
    for (k, v) in &spec.extra {
        out[k] = v.clone();
    }
    // Chronos fills `fetch` from `uris` and the other way round, for old and new clients.
    let list = |k: &str| out.get(k).and_then(Value::as_array).cloned().unwrap_or_default();
    let (uris, fetch) = (list("uris"), list("fetch"));
    if fetch.is_empty() && !uris.is_empty() {
        out["fetch"] = Value::Array(
            uris.iter()
                .map(|u| json!({"uri": u, "executable": false, "cache": false, "extract": true, "output_file": ""}))
                .collect(),
        );
    } else if uris.is_empty() && !fetch.is_empty() {
        out["uris"] = Value::Array(fetch.iter().filter_map(|f| f.get("uri").cloned()).collect());
    }
    match &spec.schedule {
        Some(s) => {
            let key = match s {
                Schedule::Cron(..) => "cron",
                Schedule::Repeating(..) => "schedule",
            };
            out[key] = json!(s.display_after(now));
            out["scheduleTimeZone"] = json!(spec.schedule_time_zone.clone().unwrap_or_default());
            out["nextRunAt"] = json!(st.next_due);
        }
        None => out["parents"] = json!(spec.parents),
    }
    out
}
