//! Job schedules and the wall-clock arithmetic that turns them into instants.
//!
//! Two notations, one model:
//! - Chronos's ISO 8601 repeating interval `R[n]/<start>/<period>`: `n` runs (none:
//!   forever) at `start`, `start + period`, `start + 2 period`, ... Each occurrence is
//!   computed from the start (occurrence k is start + k x period), so a run that was
//!   moved by a DST gap does not shift the ones after it, and `P1M` from 31 January
//!   gives 28/29 February, then 31 March.
//! - A standard 5-field crontab line (`30 2 * * 1-5`) with Vixie cron's rules: day of
//!   week 0-7 with 0 and 7 Sunday, names, and when both day of month and day of week are
//!   restricted a day matches either (the OR rule). The `cron` crate does the matching
//!   behind an adapter: it wants seconds first, numbers days of the week 1-7 from Sunday
//!   and ANDs the two day fields, so lines are rewritten before it sees them.
//!
//! Both are evaluated on the wall clock of the job's zone (an IANA name, or for an ISO
//! start without `scheduleTimeZone` the start's own UTC offset). Calendar parts of a
//! period (years, months, weeks, days) move the wall clock, so `P1D` keeps 02:00 across a
//! DST change; time parts (hours, minutes, seconds) are elapsed time, so `PT24H` does not
//! (Chronos/Joda behaviour). The DST rule, for both notations: a wall-clock time that
//! does not exist (the spring-forward gap) runs once, at the end of the gap; a time that
//! exists twice (the fall-back hour) runs once, at its first instant.
//!
//! Pure: `now` is always an argument.

use super::time::Timestamp;
use chrono::{DateTime, Datelike, Duration, FixedOffset, LocalResult, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use std::fmt;
use std::str::FromStr;

/// The zone a schedule's wall clock runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    /// An IANA time zone (`Europe/Berlin`).
    Named(Tz),
    /// A fixed UTC offset (an ISO start's own `Z` or `+02:00`).
    Fixed(FixedOffset),
}

impl Zone {
    pub const UTC: Zone = Zone::Named(Tz::UTC);

    /// Parses an IANA zone name (`Europe/Berlin`, `UTC`); abbreviations such as `PST`
    /// that are not zone names are refused rather than guessed.
    pub fn parse(name: &str) -> Result<Zone, String> {
        Tz::from_str(name.trim())
            .map(Zone::Named)
            .map_err(|_| format!("'{name}' is not an IANA time zone name (such as Europe/Berlin or UTC)"))
    }

    /// The wall-clock time at `t`.
    pub fn local(self, t: Timestamp) -> NaiveDateTime {
        let utc = instant(t);
        match self {
            Zone::Named(tz) => utc.with_timezone(&tz).naive_local(),
            Zone::Fixed(off) => utc.with_timezone(&off).naive_local(),
        }
    }

    /// The instant a wall-clock time stands for, by the DST rule: in a gap, the gap's
    /// end; in an overlap, the first of the two instants.
    pub fn resolve(self, wall: NaiveDateTime) -> Option<Timestamp> {
        let found = match self {
            Zone::Named(tz) => map_local(tz.from_local_datetime(&wall)),
            Zone::Fixed(off) => map_local(off.from_local_datetime(&wall)),
        };
        match found {
            Some(t) => Some(t),
            None => self.gap_end(wall),
        }
    }

    /// The first instant after the gap that `wall` falls in: between reading `wall`
    /// with the offset after the gap (an instant before it) and with the offset before
    /// it (an instant after it), the first instant whose wall clock is past `wall`.
    fn gap_end(self, wall: NaiveDateTime) -> Option<Timestamp> {
        let Zone::Named(tz) = self else { return None };
        let offset_at = |t: NaiveDateTime| tz.offset_from_utc_datetime(&t).fix().local_minus_utc() as i64;
        let day = Duration::days(1);
        let (before, after) = (offset_at(wall.checked_sub_signed(day)?), offset_at(wall.checked_add_signed(day)?));
        let (mut lo, mut hi) = (
            Timestamp::from_millis((wall.and_utc().timestamp() - after) * 1000),
            Timestamp::from_millis((wall.and_utc().timestamp() - before) * 1000),
        );
        if lo >= hi {
            return None;
        }
        // Invariant: local(lo) < wall < local(hi); transitions fall on whole seconds.
        while hi.millis() - lo.millis() > 1000 {
            let mid = Timestamp::from_millis(lo.millis() + (hi.millis() - lo.millis()) / 2000 * 1000);
            if self.local(mid) < wall {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Some(hi)
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Zone::Named(tz) => f.write_str(tz.name()),
            Zone::Fixed(off) => write!(f, "{off}"),
        }
    }
}

fn map_local<Z: TimeZone>(r: LocalResult<DateTime<Z>>) -> Option<Timestamp> {
    match r {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => Some(Timestamp::from_millis(t.timestamp_millis())),
        LocalResult::None => None,
    }
}

fn instant(t: Timestamp) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(t.millis()).single().unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// An ISO 8601 duration: calendar parts move the wall clock, time parts elapse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Period {
    pub months: u32,
    pub days: u32,
    pub millis: u64,
}

impl Period {
    /// Parses `PnYnMnWnDTnHnMnS` (each part optional, seconds may have a fraction; `W`
    /// may be combined with the others, as Joda allowed). Zero-length periods are refused.
    pub fn parse(s: &str) -> Result<Period, String> {
        let bad = || format!("'{s}' is not an ISO 8601 duration such as P1D, PT1H30M or P1M");
        let rest = s.strip_prefix('P').ok_or_else(bad)?;
        let (date, time) = match rest.split_once('T') {
            Some((d, t)) if !t.is_empty() => (d, Some(t)),
            Some(_) => return Err(bad()),
            None => (rest, None),
        };
        let mut p = Period::default();
        let parts = |text: &str, units: &str| -> Result<Vec<(f64, char)>, String> {
            let mut out = Vec::new();
            let mut num = String::new();
            let mut seen = String::new();
            for c in text.chars() {
                if c.is_ascii_digit() || c == '.' || c == ',' {
                    num.push(if c == ',' { '.' } else { c });
                } else if units.contains(c) && !num.is_empty() && !seen.contains(c) {
                    let v: f64 = num.parse().map_err(|_| bad())?;
                    // Units must come in order (Y before M before W before D, ...).
                    if seen.chars().last().is_some_and(|l| units.find(l) > units.find(c)) {
                        return Err(bad());
                    }
                    out.push((v, c));
                    seen.push(c);
                    num.clear();
                } else {
                    return Err(bad());
                }
            }
            if !num.is_empty() {
                return Err(bad());
            }
            Ok(out)
        };
        let whole = |v: f64| -> Result<u32, String> {
            (v.fract() == 0.0 && v <= u32::MAX as f64).then_some(v as u32).ok_or_else(bad)
        };
        let date_parts = parts(date, "YMWD")?;
        let time_parts = match time {
            Some(t) => parts(t, "HMS")?,
            None => vec![],
        };
        if date_parts.is_empty() && time_parts.is_empty() {
            return Err(bad());
        }
        for (v, u) in date_parts {
            let n = whole(v)?;
            match u {
                'Y' => p.months = p.months.checked_add(n.checked_mul(12).ok_or_else(bad)?).ok_or_else(bad)?,
                'M' => p.months = p.months.checked_add(n).ok_or_else(bad)?,
                'W' => p.days = p.days.checked_add(n.checked_mul(7).ok_or_else(bad)?).ok_or_else(bad)?,
                _ => p.days = p.days.checked_add(n).ok_or_else(bad)?,
            }
        }
        for (v, u) in time_parts {
            if u != 'S' && v.fract() != 0.0 {
                return Err(bad());
            }
            let unit = match u {
                'H' => 3_600_000.0,
                'M' => 60_000.0,
                _ => 1000.0,
            };
            let ms = (v * unit).round();
            if ms > 1e15 {
                return Err(bad());
            }
            p.millis += ms as u64;
        }
        if p == Period::default() {
            return Err(format!("'{s}' is zero long: a period must be longer than zero"));
        }
        Ok(p)
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("P")?;
        let (y, m) = (self.months / 12, self.months % 12);
        for (n, u) in [(y, 'Y'), (m, 'M'), (self.days, 'D')] {
            if n > 0 {
                write!(f, "{n}{u}")?;
            }
        }
        if self.millis > 0 {
            f.write_str("T")?;
            let (h, rest) = (self.millis / 3_600_000, self.millis % 3_600_000);
            let (min, ms) = (rest / 60_000, rest % 60_000);
            for (n, u) in [(h, 'H'), (min, 'M')] {
                if n > 0 {
                    write!(f, "{n}{u}")?;
                }
            }
            match (ms / 1000, ms % 1000) {
                (0, 0) => {}
                (s, 0) => write!(f, "{s}S")?,
                (s, frac) => write!(f, "{s}.{frac:03}S")?,
            }
        }
        Ok(())
    }
}

/// Chronos's `R[n]/<start>/<period>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Repeating {
    /// How many runs in all; `None`: forever.
    pub repeat: Option<u64>,
    /// The first run, on the zone's wall clock.
    pub start: NaiveDateTime,
    pub period: Period,
}

impl Repeating {
    /// The wall-clock time of occurrence `k` (None when it does not fit the calendar).
    fn wall(&self, k: u64) -> Option<NaiveDateTime> {
        let months = u32::try_from(k.checked_mul(self.period.months as u64)?).ok()?;
        let days = k.checked_mul(self.period.days as u64)?;
        self.start.checked_add_months(chrono::Months::new(months))?.checked_add_days(chrono::Days::new(days))
    }

    /// The instant of occurrence `k` in `zone` (None past the end of time or of `repeat`).
    fn occurrence(&self, zone: Zone, k: u64) -> Option<Timestamp> {
        if self.repeat.is_some_and(|n| k >= n) {
            return None;
        }
        let base = zone.resolve(self.wall(k)?)?;
        let elapsed = k.checked_mul(self.period.millis)?;
        Some(base.plus_millis(i64::try_from(elapsed).ok()?))
    }

    /// The first occurrence index whose instant is after `t` (None: none is).
    fn first_after(&self, zone: Zone, t: Timestamp) -> Option<u64> {
        let after = |k: u64| self.occurrence(zone, k).is_none_or(|o| o > t);
        if after(0) {
            return self.occurrence(zone, 0).map(|_| 0);
        }
        // Occurrences only move forward with k: find a k past t by doubling, then the
        // first one by bisection. Invariant: !after(lo) && after(hi).
        let (mut lo, mut hi) = (0u64, 1u64);
        while !after(hi) {
            lo = hi;
            hi = hi.checked_mul(2)?;
        }
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if after(mid) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        self.occurrence(zone, hi).map(|_| hi)
    }
}

/// A crontab line, rewritten for the `cron` crate.
#[derive(Debug, Clone)]
pub struct CronLine {
    /// The line as the user wrote it (macros expanded, spaces normalised).
    pub source: String,
    /// One schedule, or two when the OR rule applies (day of month, day of week).
    parts: Vec<cron::Schedule>,
}

impl PartialEq for CronLine {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

impl CronLine {
    pub fn parse(line: &str) -> Result<CronLine, String> {
        let expanded = match line.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            "@reboot" => return Err("@reboot has no time to run at".into()),
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let [minute, hour, dom, month, dow] = fields[..] else {
            return Err(format!(
                "'{line}' is not a crontab line: it needs 5 fields (minute hour day-of-month month day-of-week)"
            ));
        };
        if let Some(c) = expanded.chars().find(|c| matches!(c, 'L' | 'W' | '#')) {
            return Err(format!("'{line}': '{c}' is not supported in crontab lines"));
        }
        let days = week_days(dow).map_err(|e| format!("'{line}': day of week: {e}"))?;
        let restricted = |f: &str| !(f.starts_with('*') || f.starts_with('?'));
        let dow_list = match days {
            0x7f => "*".to_string(),
            set => (0..7).filter(|d| set & (1 << d) != 0).map(|d| (d + 1).to_string()).collect::<Vec<_>>().join(","),
        };
        let build = |dom: &str, dow: &str| -> Result<cron::Schedule, String> {
            let quartz = format!("0 {minute} {hour} {dom} {month} {dow}");
            cron::Schedule::from_str(&quartz).map_err(|e| format!("'{line}' is not a valid crontab line: {e}"))
        };
        let parts = if restricted(dom) && restricted(dow) {
            vec![build(dom, "*")?, build("*", &dow_list)?]
        } else {
            let dom = if restricted(dom) { dom } else { "*" };
            vec![build(dom, &dow_list)?]
        };
        Ok(CronLine { source: fields.join(" "), parts })
    }

    /// The next matching wall-clock time strictly after `wall`.
    fn next_wall(&self, wall: NaiveDateTime) -> Option<NaiveDateTime> {
        let at = wall.and_utc();
        self.parts.iter().filter_map(|s| s.after(&at).next()).min().map(|d| d.naive_utc())
    }

    /// The latest matching wall-clock time strictly before `wall`.
    fn prev_wall(&self, wall: NaiveDateTime) -> Option<NaiveDateTime> {
        let at = wall.and_utc();
        self.parts.iter().filter_map(|s| s.after(&at).next_back()).max().map(|d| d.naive_utc())
    }
}

/// The days (bit 0 = Sunday) a standard day-of-week field names: `*`, `?`, numbers 0-7
/// (0 and 7 are Sunday), names, ranges, lists and steps.
fn week_days(field: &str) -> Result<u8, String> {
    let day = |s: &str| -> Result<u32, String> {
        if let Some(i) = DAY_NAMES.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            return Ok(i as u32);
        }
        match s.parse::<u32>() {
            Ok(n) if n <= 7 => Ok(n),
            _ => Err(format!("'{s}' is not a day (0-7 or SUN-SAT)")),
        }
    };
    let mut set = 0u8;
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, s.parse::<u32>().ok().filter(|s| *s > 0).ok_or(format!("bad step in '{item}'"))?),
            None => (item, 1),
        };
        let (from, to) = match range {
            "*" | "?" => (0, 6),
            r => match r.split_once('-') {
                Some((a, b)) => (day(a)?, day(b)?),
                // `a/n` counts from a to the end of the week (as Vixie cron).
                None if step > 1 => (day(r)?, 6),
                None => (day(r)?, day(r)?),
            },
        };
        if from > to {
            return Err(format!("'{range}' runs backwards"));
        }
        for d in (from..=to).step_by(step as usize) {
            set |= 1 << (d % 7);
        }
    }
    Ok(set)
}

/// When a job runs: a repeating interval or a crontab line, in a zone.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    Repeating(Repeating, Zone),
    Cron(CronLine, Zone),
}

impl Schedule {
    /// Parses a Chronos `schedule` (`R/...`) or a crontab line. `zone`: the job's
    /// `scheduleTimeZone`, if any, which replaces an ISO start's offset keeping its wall
    /// clock (as Chronos did); cron lines run in it or in UTC. `now` fills an empty start.
    pub fn parse(text: &str, zone: Option<Zone>, now: Timestamp) -> Result<Schedule, String> {
        let text = text.trim();
        if !text.starts_with('R') {
            return Ok(Schedule::Cron(CronLine::parse(text)?, zone.unwrap_or(Zone::UTC)));
        }
        let bad = || format!("'{text}' is not an ISO 8601 repeating interval such as R/2026-01-01T02:00:00Z/P1D");
        let mut parts = text.splitn(3, '/');
        let (r, start, period) = match (parts.next(), parts.next(), parts.next()) {
            (Some(r), Some(s), Some(p)) => (r, s, p),
            _ => return Err(bad()),
        };
        let repeat = match &r[1..] {
            "" => None,
            n => Some(n.parse::<u64>().map_err(|_| bad())?),
        };
        let period = Period::parse(period)?;
        let (wall, own) = if start.is_empty() {
            (Zone::UTC.local(now), Zone::UTC)
        } else {
            parse_start(start).ok_or_else(|| format!("'{start}' is not an ISO 8601 date and time"))?
        };
        if wall.year() < 1970 {
            return Err(format!("'{start}' is before 1970"));
        }
        let (wall, zone) = match zone {
            // Chronos: the named zone replaces the offset and keeps the wall clock.
            Some(z) => (wall, z),
            None => (wall, own),
        };
        Ok(Schedule::Repeating(Repeating { repeat, start: wall, period }, zone))
    }

    pub fn zone(&self) -> Zone {
        match self {
            Schedule::Repeating(_, z) | Schedule::Cron(_, z) => *z,
        }
    }

    /// The first due time after `t` (None: the schedule has ended).
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        match self {
            Schedule::Repeating(r, zone) => r.first_after(*zone, t).and_then(|k| r.occurrence(*zone, k)),
            Schedule::Cron(c, zone) => {
                // Wall-clock times in order; the first whose instant is after t. (After a
                // fall-back, the wall clock of t may repeat times already run: skip them.)
                let mut wall = zone.local(t);
                for _ in 0..10_000 {
                    wall = c.next_wall(wall)?;
                    let at = zone.resolve(wall)?;
                    if at > t {
                        return Some(at);
                    }
                }
                None
            }
        }
    }

    /// The latest due time at or before `t` (None: there was none).
    pub fn last_at_or_before(&self, t: Timestamp) -> Option<Timestamp> {
        match self {
            Schedule::Repeating(r, zone) => {
                let k = match r.first_after(*zone, t) {
                    Some(k) => k.checked_sub(1)?,
                    // Ended: the last of its runs, if it has started.
                    None => r.repeat?.checked_sub(1)?,
                };
                r.occurrence(*zone, k).filter(|o| *o <= t)
            }
            Schedule::Cron(c, zone) => {
                // Forward over the last three hours first: that walk knows the DST rule
                // (after a fall-back the wall clock runs back, and walking back from it
                // would miss the latest run); only sparse lines need the walk back.
                let mut last = None;
                let mut at = t.plus_millis(-3 * 3_600_000);
                while let Some(next) = self.next_after(at).filter(|n| *n <= t) {
                    last = Some(next);
                    at = next;
                }
                if last.is_some() {
                    return last;
                }
                let mut wall = zone.local(t) + Duration::milliseconds(1);
                for _ in 0..10_000 {
                    wall = c.prev_wall(wall)?;
                    let at = zone.resolve(wall)?;
                    if at <= t {
                        return Some(at);
                    }
                }
                None
            }
        }
    }

    /// How many due times fall in `(after, until]`, counting at most `cap` (exact for a
    /// repeating interval).
    pub fn count_between(&self, after: Timestamp, until: Timestamp, cap: u64) -> u64 {
        if until <= after {
            return 0;
        }
        if let Schedule::Repeating(r, zone) = self {
            let end = |t| r.first_after(*zone, t).unwrap_or_else(|| r.repeat.unwrap_or(u64::MAX));
            return end(until).saturating_sub(end(after)).min(cap);
        }
        let mut n = 0;
        let mut at = after;
        while n < cap {
            match self.next_after(at) {
                Some(next) if next <= until => {
                    n += 1;
                    at = next;
                }
                _ => break,
            }
        }
        n
    }

    /// How many runs of a repeating interval come after `t` (None: unbounded or cron).
    pub fn remaining_after(&self, t: Timestamp) -> Option<u64> {
        match self {
            Schedule::Repeating(r, zone) => {
                let n = r.repeat?;
                Some(r.first_after(*zone, t).map_or(0, |k| n.saturating_sub(k)))
            }
            Schedule::Cron(..) => None,
        }
    }

    /// The schedule as Chronos shows it once time has moved on: `R<left>/<next due>/<period>`
    /// for a repeating interval (its start is the next due time, its count the runs left
    /// after `t`), the crontab line as is.
    pub fn display_after(&self, t: Timestamp) -> String {
        match self {
            Schedule::Repeating(r, zone) => {
                let next = self.next_after(t);
                let start = next.map(|n| zone.local(n)).unwrap_or(r.start);
                let count = match self.remaining_after(t) {
                    Some(n) => n.to_string(),
                    None => String::new(),
                };
                format!("R{count}/{}/{}", format_wall(start, *zone), r.period)
            }
            Schedule::Cron(c, _) => c.source.clone(),
        }
    }

    /// The schedule as written, normalised (an empty start filled in).
    pub fn source(&self) -> String {
        match self {
            Schedule::Repeating(r, zone) => {
                let count = r.repeat.map(|n| n.to_string()).unwrap_or_default();
                format!("R{count}/{}/{}", format_wall(r.start, *zone), r.period)
            }
            Schedule::Cron(c, _) => c.source.clone(),
        }
    }

    /// The text the schedule is stored as: like [`Schedule::source`], but a repeating
    /// interval in a named zone keeps its start as a bare wall-clock time, so a start in
    /// a DST gap reads back as the same wall-clock time (not the gap's end).
    fn stored_text(&self) -> String {
        match self {
            Schedule::Repeating(r, Zone::Named(_)) => {
                let count = r.repeat.map(|n| n.to_string()).unwrap_or_default();
                format!("R{count}/{}/{}", r.start.format("%Y-%m-%dT%H:%M:%S%.3f"), r.period)
            }
            _ => self.source(),
        }
    }

    /// Whether any run is still to come after `now` (a crontab line that names an
    /// impossible date, such as 31 February, never runs).
    pub fn check_runs(&self, now: Timestamp) -> Result<(), String> {
        match self {
            Schedule::Cron(c, _) if self.next_after(now).is_none() => {
                Err(format!("'{}' never matches a date", c.source))
            }
            _ => Ok(()),
        }
    }
}

/// Stored as the normalised text and, for a named zone, the zone's name; reading it
/// back parses it again (its start is always filled in, so no clock is needed).
impl serde::Serialize for Schedule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Schedule", 2)?;
        st.serialize_field("text", &self.stored_text())?;
        let zone = match self.zone() {
            Zone::Named(tz) => Some(tz.name()),
            Zone::Fixed(_) => None,
        };
        st.serialize_field("zone", &zone)?;
        st.end()
    }
}

impl<'de> serde::Deserialize<'de> for Schedule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        struct Stored {
            text: String,
            zone: Option<String>,
        }
        let st = Stored::deserialize(d)?;
        let zone = st.zone.as_deref().map(Zone::parse).transpose().map_err(serde::de::Error::custom)?;
        Schedule::parse(&st.text, zone, Timestamp::from_millis(0)).map_err(serde::de::Error::custom)
    }
}

/// A start with its offset: RFC 3339 (`2026-01-01T02:00:00Z`, with or without seconds
/// or fraction) or without an offset (read as UTC, as Joda did).
fn parse_start(s: &str) -> Option<(NaiveDateTime, Zone)> {
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Some((d.naive_local(), Zone::Fixed(*d.offset())));
    }
    for f in ["%Y-%m-%dT%H:%M%:z", "%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M%z"] {
        if let Ok(d) = DateTime::parse_from_str(s, f) {
            return Some((d.naive_local(), Zone::Fixed(*d.offset())));
        }
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d"] {
        if let Ok(d) = NaiveDateTime::parse_from_str(s, f) {
            return Some((d, Zone::UTC));
        }
        if let Ok(d) = chrono::NaiveDate::parse_from_str(s, f) {
            return Some((d.and_hms_opt(0, 0, 0)?, Zone::UTC));
        }
    }
    None
}

/// A wall-clock time with its zone's offset at that time (`2026-03-29T03:00:00.000+02:00`).
fn format_wall(wall: NaiveDateTime, zone: Zone) -> String {
    let at = zone.resolve(wall).unwrap_or_default();
    let fmt = "%Y-%m-%dT%H:%M:%S%.3f%:z";
    let text = match zone {
        Zone::Named(tz) => instant(at).with_timezone(&tz).format(fmt).to_string(),
        Zone::Fixed(off) => instant(at).with_timezone(&off).format(fmt).to_string(),
    };
    text.replace("+00:00", "Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap_or_else(|| panic!("bad test time {s}"))
    }

    fn zone(name: &str) -> Option<Zone> {
        Some(Zone::parse(name).unwrap())
    }

    fn parse(s: &str, z: Option<Zone>) -> Schedule {
        Schedule::parse(s, z, t("2026-01-01T00:00:00Z")).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    /// The first `n` due times after `from`.
    fn runs(s: &Schedule, from: &str, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut at = t(from);
        for _ in 0..n {
            match s.next_after(at) {
                Some(next) => {
                    out.push(next.to_string());
                    at = next;
                }
                None => break,
            }
        }
        out
    }

    #[test]
    fn periods() {
        let ok = [
            ("P1D", Period { months: 0, days: 1, millis: 0 }),
            ("PT24H", Period { months: 0, days: 0, millis: 86_400_000 }),
            ("P1W", Period { months: 0, days: 7, millis: 0 }),
            ("P1Y2M3DT4H5M6S", Period { months: 14, days: 3, millis: 14_706_000 }),
            ("PT0.5S", Period { months: 0, days: 0, millis: 500 }),
            ("PT1M", Period { months: 0, days: 0, millis: 60_000 }),
            ("P1M", Period { months: 1, days: 0, millis: 0 }),
        ];
        for (s, p) in ok {
            assert_eq!(Period::parse(s), Ok(p), "{s}");
        }
        assert_eq!(Period::parse("P1Y2M3DT4H5M6S").unwrap().to_string(), "P1Y2M3DT4H5M6S");
        for bad in ["1D", "P", "PT", "P1H", "PT1D", "P1.5D", "PT1.5H", "P1D2Y", "P1DD", "PT0S", "P0D", "Px"] {
            assert!(Period::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn repeat_counts_runs_and_ends() {
        let s = parse("R3/2026-02-01T10:00:00Z/PT1H", None);
        assert_eq!(
            runs(&s, "2026-01-01T00:00:00Z", 5),
            ["2026-02-01T10:00:00.000Z", "2026-02-01T11:00:00.000Z", "2026-02-01T12:00:00.000Z"]
        );
        assert_eq!(s.remaining_after(t("2026-01-01T00:00:00Z")), Some(3));
        assert_eq!(s.remaining_after(t("2026-02-01T10:00:00Z")), Some(2));
        assert_eq!(s.remaining_after(t("2026-02-01T12:00:00Z")), Some(0));
        assert_eq!(s.display_after(t("2026-02-01T10:30:00Z")), "R2/2026-02-01T11:00:00.000Z/PT1H");
        let forever = parse("R/2026-02-01T10:00:00Z/PT1H", None);
        assert_eq!(runs(&forever, "2030-05-05T05:05:00Z", 1), ["2030-05-05T06:00:00.000Z"]);
        assert_eq!(forever.remaining_after(t("2030-01-01T00:00:00Z")), None);
        assert!(runs(&parse("R0/2026-02-01T10:00:00Z/PT1H", None), "2026-01-01T00:00:00Z", 1).is_empty());
        // An empty start is now.
        let now = parse("R1//PT24H", None);
        assert_eq!(now.source(), "R1/2026-01-01T00:00:00.000Z/PT24H");
        // Months are counted from the start, not from the previous run.
        let monthly = parse("R/2026-01-31T12:00:00Z/P1M", None);
        assert_eq!(
            runs(&monthly, "2026-01-31T12:00:00Z", 3),
            ["2026-02-28T12:00:00.000Z", "2026-03-31T12:00:00.000Z", "2026-04-30T12:00:00.000Z"]
        );
    }

    #[test]
    fn days_keep_the_wall_clock_and_hours_do_not() {
        // Europe/Berlin moves from +01:00 to +02:00 on 2026-03-29 at 02:00.
        let daily = parse("R/2026-03-28T01:30:00Z/P1D", zone("Europe/Berlin"));
        assert_eq!(
            runs(&daily, "2026-03-28T00:00:00Z", 3),
            ["2026-03-28T00:30:00.000Z", "2026-03-29T00:30:00.000Z", "2026-03-29T23:30:00.000Z"],
            "01:30 local every day"
        );
        let hours = parse("R/2026-03-28T01:30:00Z/PT24H", zone("Europe/Berlin"));
        assert_eq!(
            runs(&hours, "2026-03-28T00:00:00Z", 3),
            ["2026-03-28T00:30:00.000Z", "2026-03-29T00:30:00.000Z", "2026-03-30T00:30:00.000Z"],
            "every 24 h: 02:30 local after the change"
        );
        // Without a zone the start's own offset is kept: P1D is 24 h.
        let fixed = parse("R/2026-03-28T01:30:00+01:00/P1D", None);
        assert_eq!(runs(&fixed, "2026-03-28T00:00:00Z", 2), ["2026-03-28T00:30:00.000Z", "2026-03-29T00:30:00.000Z"]);
        assert_eq!(fixed.source(), "R/2026-03-28T01:30:00.000+01:00/P1D");
        // A daily 02:30 start in the gap runs at its end, then at 02:30 again.
        let gap = parse("R/2026-03-28T02:30:00Z/P1D", zone("Europe/Berlin"));
        assert_eq!(
            runs(&gap, "2026-03-28T12:00:00Z", 2),
            ["2026-03-29T01:00:00.000Z", "2026-03-30T00:30:00.000Z"],
            "03:00 CEST, then 02:30 CEST"
        );
        assert_eq!(gap.display_after(t("2026-03-28T12:00:00Z")), "R/2026-03-29T03:00:00.000+02:00/P1D");
    }

    #[test]
    fn cron_day_of_week_numbers_names_and_the_or_rule() {
        let s = |line: &str| parse(line, None);
        // 2026-03-02 is a Monday.
        let weekdays = runs(&s("0 9 * * 1-5"), "2026-03-01T00:00:00Z", 6);
        assert_eq!(weekdays[0], "2026-03-02T09:00:00.000Z");
        assert_eq!(weekdays[4], "2026-03-06T09:00:00.000Z", "Friday");
        assert_eq!(weekdays[5], "2026-03-09T09:00:00.000Z", "then Monday");
        for sunday in ["0 9 * * 0", "0 9 * * 7", "0 9 * * SUN", "0 9 * * sun"] {
            assert_eq!(runs(&s(sunday), "2026-03-02T00:00:00Z", 1), ["2026-03-08T09:00:00.000Z"], "{sunday}");
        }
        assert_eq!(runs(&s("0 9 * * 5-7"), "2026-03-02T00:00:00Z", 3)[2], "2026-03-08T09:00:00.000Z");
        assert_eq!(
            runs(&s("0 9 * * */2"), "2026-03-02T00:00:00Z", 2),
            ["2026-03-03T09:00:00.000Z", "2026-03-05T09:00:00.000Z"]
        );
        // Both days restricted: the 13th OR a Friday (Vixie cron); 2026-03-06 is a Friday.
        assert_eq!(
            runs(&s("0 0 13 * 5"), "2026-03-05T00:00:00Z", 4),
            [
                "2026-03-06T00:00:00.000Z",
                "2026-03-13T00:00:00.000Z",
                "2026-03-20T00:00:00.000Z",
                "2026-03-27T00:00:00.000Z"
            ]
        );
        assert_eq!(
            runs(&s("0 0 12 * 5"), "2026-03-11T00:00:00Z", 2),
            ["2026-03-12T00:00:00.000Z", "2026-03-13T00:00:00.000Z"]
        );
        // Only day of month: no OR.
        assert_eq!(runs(&s("0 0 13 * *"), "2026-03-05T00:00:00Z", 1), ["2026-03-13T00:00:00.000Z"]);
        assert_eq!(runs(&s("@daily"), "2026-03-05T10:00:00Z", 1), ["2026-03-06T00:00:00.000Z"]);
        assert_eq!(
            runs(&s("*/15 * * * *"), "2026-03-05T10:07:00Z", 2),
            ["2026-03-05T10:15:00.000Z", "2026-03-05T10:30:00.000Z"]
        );
        assert_eq!(runs(&s("30 2 1 JAN,jul *"), "2026-03-05T10:07:00Z", 1), ["2026-07-01T02:30:00.000Z"]);
    }

    #[test]
    fn cron_in_dst_gaps_and_overlaps_runs_once() {
        let berlin = |line: &str| parse(line, zone("Europe/Berlin"));
        let york = |line: &str| parse(line, zone("America/New_York"));
        // Spring forward (Berlin 2026-03-29 02:00 -> 03:00): 02:30 runs at 03:00 CEST, once.
        assert_eq!(
            runs(&berlin("30 2 * * *"), "2026-03-28T12:00:00Z", 2),
            ["2026-03-29T01:00:00.000Z", "2026-03-30T00:30:00.000Z"]
        );
        // Every 15 minutes: 02:00-02:45 and 03:00 are one run at 03:00.
        assert_eq!(
            runs(&berlin("*/15 * * * *"), "2026-03-29T00:40:00Z", 3),
            ["2026-03-29T00:45:00.000Z", "2026-03-29T01:00:00.000Z", "2026-03-29T01:15:00.000Z"]
        );
        // New York 2026-03-08 02:00 EST -> 03:00 EDT.
        assert_eq!(
            runs(&york("30 2 * * *"), "2026-03-07T12:00:00Z", 2),
            ["2026-03-08T07:00:00.000Z", "2026-03-09T06:30:00.000Z"]
        );
        // Fall back (Berlin 2026-10-25 03:00 CEST -> 02:00 CET): 02:30 runs once, at its
        // first instant; asked during the second 02:30, the next run is tomorrow's.
        let fall = berlin("30 2 * * *");
        assert_eq!(runs(&fall, "2026-10-24T12:00:00Z", 2), ["2026-10-25T00:30:00.000Z", "2026-10-26T01:30:00.000Z"]);
        assert_eq!(runs(&fall, "2026-10-25T01:31:00Z", 1), ["2026-10-26T01:30:00.000Z"]);
        // New York 2026-11-01 02:00 EDT -> 01:00 EST: 01:30 runs once.
        assert_eq!(
            runs(&york("30 1 * * *"), "2026-10-31T12:00:00Z", 2),
            ["2026-11-01T05:30:00.000Z", "2026-11-02T06:30:00.000Z"]
        );
    }

    #[test]
    fn looking_back_and_counting() {
        let hourly = parse("R5/2026-02-01T10:00:00Z/PT1H", None);
        let at = |s: &str| hourly.last_at_or_before(t(s)).map(|x| x.to_string());
        assert_eq!(at("2026-02-01T09:59:59Z"), None);
        assert_eq!(at("2026-02-01T10:00:00Z").as_deref(), Some("2026-02-01T10:00:00.000Z"));
        assert_eq!(at("2026-02-01T12:30:00Z").as_deref(), Some("2026-02-01T12:00:00.000Z"));
        assert_eq!(at("2027-01-01T00:00:00Z").as_deref(), Some("2026-02-01T14:00:00.000Z"), "the last of five");
        assert_eq!(hourly.count_between(t("2026-02-01T09:00:00Z"), t("2026-02-01T12:00:00Z"), 100), 3);
        assert_eq!(hourly.count_between(t("2026-02-01T10:00:00Z"), t("2027-01-01T00:00:00Z"), 100), 4);
        assert_eq!(hourly.count_between(t("2026-02-01T10:00:00Z"), t("2027-01-01T00:00:00Z"), 2), 2);
        let cron = parse("0 9 * * *", None);
        let at = |s: &str| cron.last_at_or_before(t(s)).map(|x| x.to_string());
        assert_eq!(at("2026-03-05T09:00:00Z").as_deref(), Some("2026-03-05T09:00:00.000Z"));
        assert_eq!(at("2026-03-05T08:59:59Z").as_deref(), Some("2026-03-04T09:00:00.000Z"));
        assert_eq!(cron.count_between(t("2026-03-01T09:00:00Z"), t("2026-03-05T09:00:00Z"), 100), 4);
        assert_eq!(cron.count_between(t("2026-03-01T09:00:00Z"), t("2026-12-05T09:00:00Z"), 100), 100);
        // Berlin's fall-back: every ten minutes, at 02:15 in the second pass the last run
        // was 02:50 in the first (02:00-02:10 of the second pass had run already).
        let tens = parse("*/10 * * * *", zone("Europe/Berlin"));
        assert_eq!(
            tens.last_at_or_before(t("2026-10-25T01:15:00Z")).map(|x| x.to_string()).as_deref(),
            Some("2026-10-25T00:50:00.000Z")
        );
        // Berlin's fall-back: during the second 02:30 the last run is the first 02:30.
        let fall = parse("30 2 * * *", zone("Europe/Berlin"));
        assert_eq!(
            fall.last_at_or_before(t("2026-10-25T01:45:00Z")).map(|x| x.to_string()).as_deref(),
            Some("2026-10-25T00:30:00.000Z")
        );
    }

    #[test]
    fn stored_schedules_read_back_the_same() {
        for (text, z) in [
            ("R5/2026-03-28T01:30:00Z/P1D", zone("Europe/Berlin")),
            ("R/2026-03-29T02:30:00Z/P1D", zone("Europe/Berlin")),
            ("R/2026-03-28T01:30:00+01:00/PT1H30M", None),
            ("30 2 * * 1-5", zone("America/New_York")),
            ("0 0 13 * 5", None),
        ] {
            let s = parse(text, z);
            let back: Schedule = serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
            assert_eq!(back, s, "{text}");
            assert_eq!(back.zone(), s.zone());
            assert_eq!(back.next_after(t("2026-03-28T00:00:00Z")), s.next_after(t("2026-03-28T00:00:00Z")));
        }
    }

    #[test]
    fn bad_schedules_say_why() {
        let now = t("2026-01-01T00:00:00Z");
        let err = |s: &str, z: Option<Zone>| Schedule::parse(s, z, now).err().unwrap_or_else(|| panic!("{s} parsed"));
        assert!(err("0 9 * *", None).contains("5 fields"));
        assert!(err("0 0 9 * * *", None).contains("5 fields"));
        assert!(err("0 9 L * *", None).contains("'L'"));
        assert!(err("0 9 * * 8", None).contains("day of week"));
        assert!(err("0 9 * * 5-1", None).contains("backwards"));
        assert!(err("@reboot", None).contains("@reboot"));
        assert!(err("61 * * * *", None).contains("not a valid crontab line"));
        assert!(err("R/2026-01-01T00:00:00Z/P0D", None).contains("zero"));
        assert!(err("R/1969-12-31T00:00:00Z/P1D", None).contains("1970"));
        assert!(err("R/yesterday/P1D", None).contains("'yesterday'"));
        assert!(err("Rx/2026-01-01T00:00:00Z/P1D", None).contains("repeating interval"));
        assert!(Zone::parse("PST").is_err());
        assert!(Zone::parse("Mars/Olympus").is_err());
        assert_eq!(Zone::parse("America/New_York").unwrap().to_string(), "America/New_York");
        // A line that names an impossible date never runs.
        let feb31 = Schedule::parse("0 0 31 2 *", None, now).unwrap();
        assert!(feb31.check_runs(now).unwrap_err().contains("never"));
        assert!(parse("0 0 29 2 *", None).check_runs(now).is_ok());
    }
}
