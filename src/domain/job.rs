//! Jobs: Chronos-style batch jobs that run on a schedule (an ISO 8601 repeating interval
//! or a crontab line, see [`super::schedule`]) or after their parents succeed, each run a
//! task on the same master/agent core as app tasks.
//!
//! A job's definition ([`JobSpec`]) is what users send; what the scheduler keeps about it
//! ([`JobStatus`]: counters, the next due time, when it last started) and each run
//! ([`JobRun`]) are separate records, so replacing a definition keeps neither more nor
//! less than Chronos did (the counters it is sent) and a run is never lost with it.

use super::schedule::Schedule;
use super::time::Timestamp;
use std::collections::BTreeSet;
use std::fmt;

/// A job's name: its identity (renaming is not supported, as in Chronos). Chronos's rule,
/// `[\w.-]+` (ASCII word characters), at most 200 characters: names appear in task ids
/// and file names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobName(String);

pub const MAX_JOB_NAME: usize = 200;

impl JobName {
    pub fn parse(s: &str) -> Result<JobName, String> {
        if s.is_empty() {
            return Err("a job needs a name".into());
        }
        if s.len() > MAX_JOB_NAME {
            return Err(format!("a job name has at most {MAX_JOB_NAME} characters"));
        }
        if !s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
            return Err(format!("'{s}' may contain only letters, digits, '_', '.' and '-'"));
        }
        if s == "." || s == ".." {
            return Err(format!("'{s}' is not a job name"));
        }
        Ok(JobName(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for JobName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        JobName::parse(&s)
    }
}

impl From<JobName> for String {
    fn from(n: JobName) -> String {
        n.0
    }
}

impl fmt::Display for JobName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What happens when a due time passes while its run cannot start (dromos was down, or
/// the job was disabled): at most one catch-up run, never a storm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MissedRunPolicy {
    /// The latest missed due time runs once if it is at most `epsilon` old; anything
    /// older is recorded as missed and skipped (Chronos 2.x, Kubernetes'
    /// startingDeadlineSeconds).
    #[default]
    WithinEpsilon,
    /// The latest missed due time runs once however late (Chronos 3.x); the others are
    /// recorded as missed.
    AnyDelay,
}

/// What a due run does while an earlier run of the job is still active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConcurrencyPolicy {
    /// Start it alongside (Chronos `concurrent: true`).
    Allow,
    /// Skip it and record that it was skipped (Chronos `concurrent: false`, the default,
    /// which dropped it silently).
    Forbid,
    /// Kill the active run, then start this one.
    Replace,
}

/// A job definition, validated. Field names follow Chronos's JSON. (Stored as this
/// struct's JSON; the API renders Chronos's own form.)
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSpec {
    pub name: JobName,
    pub command: String,
    /// Run `command` through `/bin/sh -c` (else it is the executable and `arguments` its argv).
    pub shell: bool,
    pub arguments: Vec<String>,
    /// When it runs on its own; `None` for a dependent job (it runs after `parents`).
    pub schedule: Option<Schedule>,
    /// The job's `scheduleTimeZone` as sent (an IANA name), for display.
    pub schedule_time_zone: Option<String>,
    pub parents: BTreeSet<JobName>,
    /// How late a due run may still start (ms).
    pub epsilon_ms: u64,
    pub missed_runs: MissedRunPolicy,
    pub concurrency: ConcurrencyPolicy,
    /// Further attempts after a failed one.
    pub retries: u32,
    /// The delay before the first retry (ms); each further retry waits twice as long.
    pub retry_delay_ms: u64,
    /// The longest a retry waits (ms).
    pub max_retry_delay_ms: u64,
    /// A run still going after this long is killed and counts as failed (0: no limit).
    pub max_completion_time_ms: u64,
    pub owner: String,
    pub owner_name: String,
    pub description: String,
    pub disabled: bool,
    pub cpus: f64,
    pub mem: f64,
    pub disk: f64,
    pub run_as_user: Option<String>,
    pub environment: Vec<(String, String)>,
    /// Constraints as Chronos sends them: `[attribute, EQUALS|LIKE|UNLIKE, value]`.
    pub constraints: Vec<[String; 3]>,
    pub container_image: Option<String>,
    pub high_priority: bool,
    /// On final failure, run the dependents anyway.
    pub soft_error: bool,
    /// Fields dromos keeps and shows but does not act on (`executor`, `fetch`, `uris`,
    /// `dataProcessingJobType`, ...), as sent.
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// A job as the master holds it: its definition and what the scheduler keeps about it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JobRecord {
    pub spec: JobSpec,
    pub status: JobStatus,
}

impl JobSpec {
    /// Chronos's resource defaults (`--mesos_task_cpu`, `_mem`, `_disk`).
    pub const DEFAULT_CPUS: f64 = 0.1;
    pub const DEFAULT_MEM: f64 = 128.0;
    pub const DEFAULT_DISK: f64 = 256.0;
    /// Chronos 2.x's `--task_epsilon`.
    pub const DEFAULT_EPSILON_MS: u64 = 60_000;
    pub const DEFAULT_RETRIES: u32 = 2;
    pub const DEFAULT_RETRY_DELAY_MS: u64 = 10_000;
    pub const DEFAULT_MAX_RETRY_DELAY_MS: u64 = 600_000;

    /// A job that runs `command` through the shell, only when started, with every other
    /// field at its default.
    pub fn new(name: JobName, command: &str) -> JobSpec {
        JobSpec {
            name,
            command: command.to_string(),
            shell: true,
            arguments: vec![],
            schedule: None,
            schedule_time_zone: None,
            parents: BTreeSet::new(),
            epsilon_ms: Self::DEFAULT_EPSILON_MS,
            missed_runs: MissedRunPolicy::WithinEpsilon,
            concurrency: ConcurrencyPolicy::Forbid,
            retries: Self::DEFAULT_RETRIES,
            retry_delay_ms: Self::DEFAULT_RETRY_DELAY_MS,
            max_retry_delay_ms: Self::DEFAULT_MAX_RETRY_DELAY_MS,
            max_completion_time_ms: 0,
            owner: String::new(),
            owner_name: String::new(),
            description: String::new(),
            disabled: false,
            cpus: Self::DEFAULT_CPUS,
            mem: Self::DEFAULT_MEM,
            disk: Self::DEFAULT_DISK,
            run_as_user: None,
            environment: vec![],
            constraints: vec![],
            container_image: None,
            high_priority: false,
            soft_error: false,
            extra: serde_json::Map::new(),
        }
    }
}

/// What the scheduler keeps about a job between runs (persisted with it).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    pub success_count: u64,
    pub error_count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<Timestamp>,
    pub errors_since_last_success: u64,
    /// The next due time of a scheduled job (`None`: not scheduled, or the schedule has
    /// ended). Advanced in the same transaction that records the run it causes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_due: Option<Timestamp>,
    /// When a run of the job last started (dependents wait for successes after this).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_start: Option<Timestamp>,
    /// When the job last finished in a way that lets its dependents run: a success, or a
    /// final failure with `softError`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_done: Option<Timestamp>,
    pub missed_count: u64,
    pub skipped_count: u64,
}

/// Which run a task carries out.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct RunKey {
    pub job: JobName,
    pub due: Timestamp,
    pub attempt: u32,
}

/// Why a run exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunTrigger {
    Schedule,
    /// `PUT /scheduler/job/{name}` (or Metronome's POST runs).
    Manual,
    /// Its parents succeeded.
    Dependency,
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunState {
    /// Recorded, waiting for an agent (or for its retry delay).
    Queued,
    /// Its task has been launched.
    Running,
    Succeeded,
    Failed,
    /// Killed on request (or replaced under REPLACE).
    Killed,
    /// Killed at `maxCompletionTime`.
    TimedOut,
}

impl RunState {
    pub fn is_active(self) -> bool {
        matches!(self, RunState::Queued | RunState::Running)
    }
}

/// One run of a job: one due time (or manual start), one attempt. A retry is a new run
/// with the same due time and the next attempt number, so (job, due, attempt) identifies
/// a run: recording it twice is impossible, which is what makes runs exactly-once.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRun {
    pub job: JobName,
    pub due: Timestamp,
    pub attempt: u32,
    pub trigger: RunTrigger,
    pub state: RunState,
    /// `?arguments=` of a manual run, appended to the command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
    /// Not before this time (a retry's backoff).
    pub not_before: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The run's task was asked to stop, and this is how the run ends when it has
    /// (Killed on request or under REPLACE, TimedOut at `maxCompletionTime`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopping: Option<RunState>,
}

/// What happened to a job's runs, for the event bus (`job_run_*` events).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase", tag = "eventType")]
pub enum JobEvent {
    #[serde(rename = "job_run_started")]
    Started { job: JobName, due: Timestamp, attempt: u32, task_id: String },
    #[serde(rename = "job_run_succeeded")]
    Succeeded { job: JobName, due: Timestamp, attempt: u32 },
    #[serde(rename = "job_run_failed")]
    Failed { job: JobName, due: Timestamp, attempt: u32, state: RunState, message: String },
    #[serde(rename = "job_run_retried")]
    Retried { job: JobName, due: Timestamp, attempt: u32, at: Timestamp },
    /// Due times that passed without a run (`count` of them, the latest `last`).
    #[serde(rename = "job_run_missed")]
    Missed { job: JobName, count: u64, last: Timestamp },
    /// A due run not started because another run was active (FORBID).
    #[serde(rename = "job_run_skipped")]
    Skipped { job: JobName, due: Timestamp },
}

impl JobEvent {
    /// The `eventType` of the event.
    pub fn event_type(&self) -> &'static str {
        match self {
            JobEvent::Started { .. } => "job_run_started",
            JobEvent::Succeeded { .. } => "job_run_succeeded",
            JobEvent::Failed { .. } => "job_run_failed",
            JobEvent::Retried { .. } => "job_run_retried",
            JobEvent::Missed { .. } => "job_run_missed",
            JobEvent::Skipped { .. } => "job_run_skipped",
        }
    }
}

impl JobRun {
    /// A new run waiting to be launched.
    pub fn queued(job: JobName, due: Timestamp, attempt: u32, trigger: RunTrigger, not_before: Timestamp) -> JobRun {
        JobRun {
            job,
            due,
            attempt,
            trigger,
            state: RunState::Queued,
            arguments: None,
            not_before,
            task_id: None,
            host: None,
            started_at: None,
            finished_at: None,
            exit_code: None,
            message: None,
            stopping: None,
        }
    }

    pub fn key(&self) -> RunKey {
        RunKey { job: self.job.clone(), due: self.due, attempt: self.attempt }
    }

    /// Chronos's task id form, `ct:<due ms>:<attempt>:<job>:<arguments>`.
    pub fn chronos_task_id(&self) -> String {
        format!("ct:{}:{}:{}:{}", self.due.millis(), self.attempt, self.job, self.arguments.as_deref().unwrap_or(""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_follow_chronos() {
        for ok in ["backup", "nightly.report-2", "a_b", "X"] {
            assert!(JobName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "has space", "a/b", "ünïcode", "..", "semi;colon", &"x".repeat(201)] {
            assert!(JobName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn chronos_task_ids() {
        let mut run = JobRun::queued(
            JobName::parse("backup").unwrap(),
            Timestamp::from_millis(1_767_232_800_000),
            1,
            RunTrigger::Schedule,
            Timestamp::from_millis(0),
        );
        run.arguments = Some("--full".into());
        assert_eq!(run.chronos_task_id(), "ct:1767232800000:1:backup:--full");
    }
}
