//! Timestamps in Marathon's wire form: ISO-8601 UTC with milliseconds
//! (`2015-09-25T15:13:48.343Z`). App versions are timestamps, so they must sort and
//! compare exactly as their text does.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A millisecond-precision UTC instant. Time is always passed in (never read here),
/// so pure code stays deterministic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    pub fn from_datetime(dt: DateTime<Utc>) -> Self {
        Timestamp(dt.timestamp_millis())
    }

    /// Parses the forms Marathon clients send: RFC 3339 with any offset and precision.
    pub fn parse(s: &str) -> Option<Self> {
        DateTime::parse_from_rfc3339(s).ok().map(|d| Timestamp(d.timestamp_millis()))
    }

    pub fn plus_millis(self, ms: i64) -> Self {
        Timestamp(self.0.saturating_add(ms))
    }

    /// Seconds from `self` to `later` (negative when `later` is earlier).
    pub fn seconds_until(self, later: Timestamp) -> f64 {
        (later.0 - self.0) as f64 / 1000.0
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Utc.timestamp_millis_opt(self.0).single() {
            Some(dt) => f.write_str(&dt.to_rfc3339_opts(SecondsFormat::Millis, true)),
            None => write!(f, "{}", self.0),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse(&s).ok_or_else(|| serde::de::Error::custom("expected an ISO-8601 timestamp"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_marathon_and_round_trips() {
        let t = Timestamp::parse("2015-09-25T15:13:48.343Z").unwrap();
        assert_eq!(t.to_string(), "2015-09-25T15:13:48.343Z");
        assert_eq!(Timestamp::parse("2015-09-25T17:13:48.343+02:00"), Some(t));
        assert_eq!(Timestamp::parse("yesterday"), None);
    }

    #[test]
    fn text_order_is_time_order() {
        let a = Timestamp::from_millis(1_000);
        let b = Timestamp::from_millis(1_001);
        assert!(a.to_string() < b.to_string());
        assert!(a < b);
    }
}
