//! Schedules in words for the job pages: "every day at 02:30 (Europe/Berlin)",
//! "every 15 minutes", "every 2 days from 2026-01-01 02:00, 10 times". Pure; the raw
//! schedule is always shown next to it, so an unusual line may read a little stiffly
//! but never wrongly.

use crate::domain::schedule::{Period, Schedule};

/// A schedule in words, with its time zone.
pub fn schedule(s: &Schedule) -> String {
    match s {
        Schedule::Repeating(r, zone) => {
            let times = match r.repeat {
                Some(1) => ", once".to_string(),
                Some(n) => format!(", {n} times"),
                None => String::new(),
            };
            format!("{} from {} ({zone}){times}", period(&r.period), r.start.format("%Y-%m-%d %H:%M"))
        }
        Schedule::Cron(c, zone) => format!("{} ({zone})", cron(&c.source)),
    }
}

/// "every day", "every 2 hours", "every 1 month, 2 days and 6 hours".
pub fn period(p: &Period) -> String {
    let (h, rest) = (p.millis / 3_600_000, p.millis % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    let s = rest as f64 / 1000.0;
    let parts: Vec<(f64, &str)> = [
        (f64::from(p.months / 12), "year"),
        (f64::from(p.months % 12), "month"),
        (f64::from(p.days), "day"),
        (h as f64, "hour"),
        (m as f64, "minute"),
        (s, "second"),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0.0)
    .collect();
    if let [(n, unit)] = parts[..] {
        return if n == 1.0 { format!("every {unit}") } else { format!("every {n} {unit}s") };
    }
    let words: Vec<String> =
        parts.iter().map(|(n, unit)| format!("{n} {unit}{}", if *n == 1.0 { "" } else { "s" })).collect();
    format!("every {}", join(&words))
}

const DAYS: [&str; 7] = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// A 5-field crontab line in words.
pub fn cron(line: &str) -> String {
    let f: Vec<&str> = line.split_whitespace().collect();
    let [minute, hour, dom, month, dow] = f[..] else { return line.to_string() };
    let num = |s: &str| s.parse::<u32>().ok();
    let any = |s: &str| s == "*" || s == "?";
    let time = match (num(minute), num(hour)) {
        (Some(m), Some(h)) => format!("at {h:02}:{m:02}"),
        (Some(m), None) if any(hour) => format!("every hour at minute {m}"),
        (Some(m), None) => format!("at minute {m} of hour {}", list(hour, &|x| x.to_string())),
        (None, _) if any(minute) && any(hour) => "every minute".to_string(),
        (None, _) if any(hour) => match minute.strip_prefix("*/") {
            Some(n) => format!("every {n} minutes"),
            None => format!("at minutes {} of every hour", list(minute, &|x| x.to_string())),
        },
        (None, _) => {
            format!("at minutes {} of hour {}", list(minute, &|x| x.to_string()), list(hour, &|x| x.to_string()))
        }
    };
    let day_name = |x: &str| match x.parse::<usize>() {
        Ok(n) => DAYS.get(n % 7).map_or(x.to_string(), |d| d.to_string()),
        Err(_) => DAYS.iter().find(|d| d[..3].eq_ignore_ascii_case(x)).map_or(x.to_string(), |d| d.to_string()),
    };
    let month_name = |x: &str| match x.parse::<usize>() {
        Ok(n) if (1..=12).contains(&n) => MONTHS[n - 1].to_string(),
        _ => MONTHS.iter().find(|m| m[..3].eq_ignore_ascii_case(x)).map_or(x.to_string(), |m| m.to_string()),
    };
    let days = match (any(dom), any(dow)) {
        (true, true) => "every day".to_string(),
        (true, false) => format!("on {}", list(dow, &day_name)),
        (false, true) => format!("on day {} of the month", list(dom, &|x| x.to_string())),
        (false, false) => {
            format!("on day {} of the month and on {}", list(dom, &|x| x.to_string()), list(dow, &day_name))
        }
    };
    let months = if any(month) { String::new() } else { format!(" in {}", list(month, &month_name)) };
    format!("{days}{months}, {time}")
}

/// A crontab field's list (`a,b`, `a-b`, `*/n`, `a-b/n`) in words, naming each value.
fn list(field: &str, name: &dyn Fn(&str) -> String) -> String {
    let items: Vec<String> = field
        .split(',')
        .map(|item| {
            let (range, step) = match item.split_once('/') {
                Some((r, s)) => (r, Some(s)),
                None => (item, None),
            };
            let range = match range.split_once('-') {
                Some((a, b)) => format!("{} to {}", name(a), name(b)),
                None if range == "*" => "all".to_string(),
                None => name(range),
            };
            match step {
                Some(s) => format!("every {s} of {range}"),
                None => range,
            }
        })
        .collect();
    let mut unique: Vec<String> = Vec::new();
    for i in items {
        if !unique.contains(&i) {
            unique.push(i);
        }
    }
    join(&unique)
}

/// "a", "a and b", "a, b and c".
fn join(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [head @ .., last] => format!("{} and {last}", head.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::schedule::Zone;
    use crate::domain::Timestamp;

    fn words(text: &str, zone: Option<&str>) -> String {
        let zone = zone.map(|z| Zone::parse(z).unwrap());
        schedule(&Schedule::parse(text, zone, Timestamp::from_millis(0)).unwrap())
    }

    #[test]
    fn crontab_lines_read_as_sentences() {
        assert_eq!(words("30 2 * * *", Some("Europe/Berlin")), "every day, at 02:30 (Europe/Berlin)");
        assert_eq!(words("*/15 * * * *", None), "every day, every 15 minutes (UTC)");
        assert_eq!(words("* * * * *", None), "every day, every minute (UTC)");
        assert_eq!(words("5 * * * *", None), "every day, every hour at minute 5 (UTC)");
        assert_eq!(words("0 9 * * 1-5", None), "on Monday to Friday, at 09:00 (UTC)");
        assert_eq!(words("0 9 * * MON,fri", None), "on Monday and Friday, at 09:00 (UTC)");
        assert_eq!(words("0 0 1 * *", None), "on day 1 of the month, at 00:00 (UTC)");
        assert_eq!(words("@yearly", None), "on day 1 of the month in January, at 00:00 (UTC)");
        assert_eq!(words("0 9-17/2 * * 0,7", None), "on Sunday, at minute 0 of hour every 2 of 9 to 17 (UTC)");
        assert_eq!(words("0 0 13 * 5", None), "on day 13 of the month and on Friday, at 00:00 (UTC)");
    }

    #[test]
    fn repeating_intervals_read_as_sentences() {
        assert_eq!(words("R/2026-01-01T02:00:00Z/P1D", None), "every day from 2026-01-01 02:00 (+00:00)");
        assert_eq!(
            words("R5/2026-01-01T02:00:00Z/PT15M", None),
            "every 15 minutes from 2026-01-01 02:00 (+00:00), 5 times"
        );
        assert_eq!(
            words("R1/2026-03-29T02:30:00/P1M2DT6H", Some("Europe/Berlin")),
            "every 1 month, 2 days and 6 hours from 2026-03-29 02:30 (Europe/Berlin), once"
        );
        assert_eq!(words("R/2026-01-01T00:00:00Z/PT1.5S", None), "every 1.5 seconds from 2026-01-01 00:00 (+00:00)");
    }
}
