//! Times as the operator reads them: in one configured time zone (`[console] time_zone`, or the
//! system's: `TZ`, else `/etc/localtime`), in one format: `2026-01-15 13:01:35`, and `13:01:35`
//! for today. The API speaks Unix milliseconds (UTC); only the console turns them into wall
//! clock time, with jiff's time zone rules, so a time on either side of a DST change is right.

use jiff::Timestamp;
use jiff::tz::TimeZone;

/// The console's time zone.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalTime {
    tz: TimeZone,
    name: String,
}

impl Default for LocalTime {
    fn default() -> Self {
        LocalTime::utc()
    }
}

/// A time zone that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("unknown time zone {name:?} (an IANA name such as \"Europe/Amsterdam\", or \"\" for the system's)")]
pub struct UnknownZone {
    /// What was asked for.
    pub name: String,
}

impl LocalTime {
    /// UTC.
    pub fn utc() -> LocalTime {
        LocalTime {
            tz: TimeZone::UTC,
            name: "UTC".into(),
        }
    }

    /// An IANA time zone by name; "" is the system's (`TZ`, else `/etc/localtime`; UTC when
    /// neither says).
    pub fn named(name: &str) -> Result<LocalTime, UnknownZone> {
        if name.trim().is_empty() {
            let tz = TimeZone::try_system().unwrap_or(TimeZone::UTC);
            let name = tz.iana_name().unwrap_or("system").to_string();
            return Ok(LocalTime { tz, name });
        }
        TimeZone::get(name)
            .map(|tz| LocalTime {
                tz,
                name: name.to_string(),
            })
            .map_err(|_| UnknownZone { name: name.into() })
    }

    /// A POSIX TZ rule such as `CET-1CEST,M3.5.0,M10.5.0/3` (needs no zone database).
    pub fn posix(rule: &str) -> Result<LocalTime, UnknownZone> {
        TimeZone::posix(rule)
            .map(|tz| LocalTime { tz, name: rule.into() })
            .map_err(|_| UnknownZone { name: rule.into() })
    }

    /// The zone's name as configured.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn civil(&self, ms: i64) -> Option<jiff::civil::DateTime> {
        Timestamp::from_millisecond(ms).ok().map(|t| self.tz.to_datetime(t))
    }

    /// `2026-01-15 13:01:35`.
    pub fn full(&self, ms: i64) -> String {
        match self.civil(ms) {
            Some(d) => format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                d.year(),
                d.month(),
                d.day(),
                d.hour(),
                d.minute(),
                d.second()
            ),
            None => "(no time)".into(),
        }
    }

    /// `13:01:35` when `ms` falls on the same local day as `now_ms`, else [`LocalTime::full`].
    pub fn stamp(&self, ms: i64, now_ms: i64) -> String {
        match (self.civil(ms), self.civil(now_ms)) {
            (Some(d), Some(n)) if d.date() == n.date() => {
                format!("{:02}:{:02}:{:02}", d.hour(), d.minute(), d.second())
            }
            _ => self.full(ms),
        }
    }

    /// The zone's abbreviation at that moment ("CET", "CEST", "UTC").
    pub fn abbreviation(&self, ms: i64) -> String {
        match Timestamp::from_millisecond(ms) {
            Ok(t) => self.tz.to_offset_info(t).abbreviation().to_string(),
            Err(_) => String::new(),
        }
    }

    /// An RFC 3339 time from the API (for the few fields that carry no milliseconds), as
    /// [`LocalTime::stamp`]; the text itself when it does not parse.
    pub fn stamp_text(&self, rfc3339: &str, now_ms: i64) -> String {
        match rfc3339.parse::<Timestamp>() {
            Ok(t) => self.stamp(t.as_millisecond(), now_ms),
            Err(_) => rfc3339.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AMSTERDAM_RULE: &str = "CET-1CEST,M3.5.0,M10.5.0/3";

    /// Unix ms of a UTC time.
    fn utc(s: &str) -> i64 {
        s.parse::<Timestamp>().expect("time").as_millisecond()
    }

    #[test]
    fn one_format_and_today_without_the_date() {
        let t = LocalTime::posix(AMSTERDAM_RULE).expect("rule");
        let at = utc("2026-01-15T12:01:35Z");
        assert_eq!(t.full(at), "2026-01-15 13:01:35");
        assert_eq!(t.stamp(at, at + 3_600_000), "13:01:35");
        // Local midnight has passed (23:30 UTC is 00:30 in Amsterdam): another day.
        assert_eq!(t.stamp(at, utc("2026-01-15T23:30:00Z")), "2026-01-15 13:01:35");
        assert_eq!(t.abbreviation(at), "CET");
    }

    /// Europe/Amsterdam went to summer time on 2026-03-29 at 01:00 UTC (02:00 → 03:00 local) and
    /// back on 2026-10-25 at 01:00 UTC (03:00 → 02:00 local, so 02:30 happens twice).
    #[test]
    fn times_across_a_dst_change_are_right() {
        for t in [
            LocalTime::posix(AMSTERDAM_RULE).expect("rule"),
            LocalTime::named("Europe/Amsterdam").expect("the zone database (or the bundled copy)"),
        ] {
            let now = utc("2026-11-01T00:00:00Z");
            assert_eq!(t.stamp(utc("2026-03-29T00:59:59Z"), now), "2026-03-29 01:59:59");
            assert_eq!(t.stamp(utc("2026-03-29T01:00:00Z"), now), "2026-03-29 03:00:00");
            assert_eq!(t.abbreviation(utc("2026-03-29T01:00:00Z")), "CEST");
            assert_eq!(t.stamp(utc("2026-10-25T00:30:00Z"), now), "2026-10-25 02:30:00");
            assert_eq!(t.stamp(utc("2026-10-25T01:30:00Z"), now), "2026-10-25 02:30:00");
            assert_eq!(t.abbreviation(utc("2026-10-25T01:30:00Z")), "CET");
            // "Today" is the local day, on the day of the change too.
            assert_eq!(
                t.stamp(utc("2026-10-25T01:30:00Z"), utc("2026-10-25T22:59:00Z")),
                "02:30:00"
            );
        }
    }

    #[test]
    fn a_bad_zone_is_named_and_the_system_zone_always_resolves() {
        let e = LocalTime::named("Europe/Amsterdm").expect_err("unknown");
        assert!(e.to_string().contains("Europe/Amsterdm"), "{e}");
        assert!(LocalTime::named("").is_ok());
        assert_eq!(LocalTime::utc().full(0), "1970-01-01 00:00:00");
        assert_eq!(
            LocalTime::utc().stamp_text("2026-01-15T12:01:35.000Z", 0),
            "2026-01-15 12:01:35"
        );
        assert_eq!(LocalTime::utc().stamp_text("garbage", 0), "garbage");
    }
}
