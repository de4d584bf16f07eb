//! A site's schedule as instants, and what it says about the site at an instant. Pure: no
//! database, no clock; times are Unix milliseconds, the wall clock is the site's time zone.
//!
//! # Windows and instances
//!
//! A weekly window (`mon-fri 08:00-18:00, grace 15`) has an *instance* on every date whose
//! weekday it names (the date it opens on), unless the date is a public holiday of the site's
//! calendar, or a one-off exception covers the date (its own hours, or none: closed), which
//! replaces the weekly windows of that date. A window whose close is not after its open
//! (`22:00-06:00`) closes on the next date; `24:00` is the end of the date.
//!
//! A wall-clock time becomes the **first instant whose local time is at or after it**: in a
//! fold (the hour repeated when daylight saving ends) the first occurrence, in a gap (the hour
//! skipped when it starts) the end of the gap. So "armed by 02:30" on the night the clocks go
//! from 02:00 to 03:00 means by 03:00, and a window `02:00-03:00` on that night is empty.
//! Grace is real minutes before and after the instants.
//!
//! An operator's extension ("we stay until 23:30 tonight") is an instance from when it was
//! given until its end, with the grace of the site's windows.
//!
//! # What is checked
//!
//! The site's *allowed* time is the union over instances of `[open − grace, close + grace)`:
//! when it may be disarmed. With the site's armed state (armed or disarmed by the last
//! opening/closing report, at instant `d`; nothing is checked while it is unknown):
//!
//! | kind | holds at `t` when |
//! |---|---|
//! | late to close | disarmed, `t` outside the allowed time, `d` inside it (it opened in time and did not close by close + grace) |
//! | unexpected opening | disarmed, `t` outside the allowed time, `d` outside it too (it opened outside every window) |
//! | late to open (if the site asks) | armed, `t` in `[open + grace, close)` of an instance, `d` before its open (it did not open) |
//! | early close (if the site asks) | armed, `t` in `[open, close − grace)` of an instance, `d` at or after its open |
//!
//! Extensions count for the allowed time only (late to open and early close look at the
//! windows). An alarm is raised when a kind starts to hold and restored when it stops: so a
//! kind changes only at a report or at an *edge* of an instance (`open − grace`, `open`,
//! `open + grace`, `close − grace`, `close`, `close + grace`), and [`Plan::next_edge`] is when
//! to look again. `tests/it/schedules.rs` checks this against a model that looks at every
//! minute.

use std::collections::BTreeSet;
use std::sync::Arc;

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::{AmbiguousOffset, TimeZone};

use crate::protocol::codes::Category;

/// A minute, in milliseconds.
pub const MINUTE_MS: i64 = 60_000;
/// A day, in milliseconds (a look-again point when nothing is scheduled).
pub const DAY_MS: i64 = 86_400_000;
/// Most grace minutes of a window.
pub const MAX_GRACE_MIN: u16 = 240;
/// How far ahead [`Plan::next_edge`] looks for the next instance, in days.
const LOOK_AHEAD_DAYS: i64 = 8;

/// A kind of schedule alarm. Each is a category of its own (priority rules and procedures
/// per kind); none is life-safety.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lateness {
    /// Not armed by close + grace.
    LateToClose,
    /// Not disarmed by open + grace (only where the site asks for it).
    LateToOpen,
    /// Disarmed outside every window.
    UnexpectedOpening,
    /// Armed during a window, before close − grace (only where the site asks for it).
    EarlyClose,
}

impl Lateness {
    /// Every kind.
    pub const ALL: [Lateness; 4] = [
        Lateness::LateToClose,
        Lateness::LateToOpen,
        Lateness::UnexpectedOpening,
        Lateness::EarlyClose,
    ];

    /// Its alarm category.
    pub fn category(self) -> Category {
        match self {
            Lateness::LateToClose => Category::LateToClose,
            Lateness::LateToOpen => Category::LateToOpen,
            Lateness::UnexpectedOpening => Category::UnexpectedOpening,
            Lateness::EarlyClose => Category::EarlyClose,
        }
    }

    /// Stable name (the category's).
    pub fn as_str(self) -> &'static str {
        self.category().as_str()
    }

    /// Parse the stable name.
    pub fn parse(s: &str) -> Option<Lateness> {
        Lateness::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Priority without a priority rule: an opening outside the schedule may be someone with a
    /// stolen code (4, like a supervisor item); a site left open is 5 (like a lost path); a
    /// site that did not open or closed early is 6.
    pub fn default_priority(self) -> u8 {
        match self {
            Lateness::UnexpectedOpening => 4,
            Lateness::LateToClose => 5,
            Lateness::LateToOpen | Lateness::EarlyClose => 6,
        }
    }

    /// For people.
    pub fn label(self) -> &'static str {
        match self {
            Lateness::LateToClose => "late to close",
            Lateness::LateToOpen => "late to open",
            Lateness::UnexpectedOpening => "unexpected opening",
            Lateness::EarlyClose => "early close",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of [`Lateness`] kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Kinds(u8);

impl Kinds {
    /// None.
    pub const NONE: Kinds = Kinds(0);

    /// Add one.
    pub fn insert(&mut self, k: Lateness) {
        self.0 |= k.bit();
    }

    /// Remove one.
    pub fn remove(&mut self, k: Lateness) {
        self.0 &= !k.bit();
    }

    /// Whether it holds `k`.
    pub fn contains(self, k: Lateness) -> bool {
        self.0 & k.bit() != 0
    }

    /// Kinds in `self` and not in `other`.
    pub fn minus(self, other: Kinds) -> Kinds {
        Kinds(self.0 & !other.0)
    }

    /// True when empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The kinds, in [`Lateness::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Lateness> {
        Lateness::ALL.into_iter().filter(move |k| self.contains(*k))
    }
}

impl FromIterator<Lateness> for Kinds {
    fn from_iter<I: IntoIterator<Item = Lateness>>(it: I) -> Kinds {
        let mut k = Kinds::NONE;
        for x in it {
            k.insert(x);
        }
        k
    }
}

/// Opening hours on one date: minutes after midnight. `close` is 1 to 1440 (24:00); a close
/// not after the open is on the next date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hours {
    /// 0 to 1439.
    pub open: u16,
    /// 1 to 1440.
    pub close: u16,
}

impl Hours {
    /// Whether it closes on the next date.
    pub fn crosses_midnight(self) -> bool {
        self.close <= self.open
    }
}

/// `HH:MM` (00:00 to 23:59, and 24:00 when `end` allows it) as minutes after midnight.
pub fn parse_clock(s: &str, end: bool) -> Option<u16> {
    let (h, m) = s.trim().split_once(':')?;
    if h.len() != 2 || m.len() != 2 || !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    match (h, m) {
        (24, 0) if end => Some(1440),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}

/// Minutes after midnight as `HH:MM`.
pub fn clock_text(min: u16) -> String {
    format!("{:02}:{:02}", min / 60, min % 60)
}

/// `08:00-18:00` as hours (the two times must differ).
pub fn parse_hours(s: &str) -> Option<Hours> {
    let (a, b) = s.trim().split_once('-')?;
    let open = parse_clock(a, false)?;
    let close = parse_clock(b, true)?;
    (open != close % 1440 || close == 1440 && open == 0).then_some(Hours { open, close })
}

/// Weekdays as a bit set, Monday bit 0: `mon-fri`, `sat;sun`, `daily`, `mon,wed`.
pub fn parse_days(s: &str) -> Option<u8> {
    const NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let day = |x: &str| NAMES.iter().position(|n| n.eq_ignore_ascii_case(x.trim()));
    let s = s.trim();
    if s.eq_ignore_ascii_case("daily") || s.eq_ignore_ascii_case("mon-sun") {
        return Some(0x7f);
    }
    let mut bits = 0u8;
    for part in s.split([';', ',']).map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (day(a)?, day(b)?);
                // A range may wrap the week: `sat-mon`.
                let mut i = a;
                loop {
                    bits |= 1 << i;
                    if i == b {
                        break;
                    }
                    i = (i + 1) % 7;
                }
            }
            None => bits |= 1 << day(part)?,
        }
    }
    (bits != 0).then_some(bits)
}

/// Weekdays as text (`mon-fri`, `mon,wed,sat`, `daily`).
pub fn days_text(bits: u8) -> String {
    const NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    if bits & 0x7f == 0x7f {
        return "daily".into();
    }
    let mut parts = Vec::new();
    let mut i = 0;
    while i < 7 {
        if bits & (1 << i) == 0 {
            i += 1;
            continue;
        }
        let start = i;
        while i + 1 < 7 && bits & (1 << (i + 1)) != 0 {
            i += 1;
        }
        parts.push(if i - start >= 2 {
            format!("{}-{}", NAMES[start], NAMES[i])
        } else if i > start {
            format!("{},{}", NAMES[start], NAMES[i])
        } else {
            NAMES[start].to_string()
        });
        i += 1;
    }
    parts.join(",")
}

/// A weekly window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeeklyWindow {
    /// Opening weekdays, Monday bit 0.
    pub days: u8,
    /// Hours.
    pub hours: Hours,
    /// Grace minutes.
    pub grace: u16,
}

/// Other hours (or none: closed) on the dates `from..=to`, instead of the weekly windows and
/// public holidays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exception {
    /// First date.
    pub from: Date,
    /// Last date.
    pub to: Date,
    /// The hours of each of these dates; none: closed.
    pub hours: Vec<Hours>,
    /// Grace minutes.
    pub grace: u16,
}

/// An operator's one-off extension: allowed from `from_ms` until `until_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extension {
    /// Given at.
    pub from_ms: i64,
    /// Until.
    pub until_ms: i64,
    /// Grace minutes after it.
    pub grace: u16,
}

/// Which kinds a site is checked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checks {
    /// Late to close (default on).
    pub late_to_close: bool,
    /// Unexpected opening (default on).
    pub unexpected_opening: bool,
    /// Late to open (default off).
    pub late_to_open: bool,
    /// Early close (default off).
    pub early_close: bool,
}

impl Default for Checks {
    fn default() -> Self {
        Checks {
            late_to_close: true,
            unexpected_opening: true,
            late_to_open: false,
            early_close: false,
        }
    }
}

impl Checks {
    fn on(&self, k: Lateness) -> bool {
        match k {
            Lateness::LateToClose => self.late_to_close,
            Lateness::UnexpectedOpening => self.unexpected_opening,
            Lateness::LateToOpen => self.late_to_open,
            Lateness::EarlyClose => self.early_close,
        }
    }
}

/// One opening of the site, as instants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instance {
    /// Opens.
    pub open_ms: i64,
    /// Closes.
    pub close_ms: i64,
    /// Grace, ms.
    pub grace_ms: i64,
    /// An operator's extension (counts for the allowed time only).
    pub extension: bool,
}

impl Instance {
    fn allows(&self, t: i64) -> bool {
        self.open_ms - self.grace_ms <= t && t < self.close_ms + self.grace_ms
    }

    fn edges(&self) -> [i64; 6] {
        let (o, c, g) = (self.open_ms, self.close_ms, self.grace_ms);
        [o - g, o, o + g, c - g, c, c + g]
    }
}

/// The site's armed state as the last opening/closing report left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Armed {
    /// Closed (armed) at this instant.
    Armed(i64),
    /// Opened (disarmed) at this instant.
    Disarmed(i64),
}

/// A site's schedule, compiled.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The site's time zone.
    pub tz: TimeZone,
    /// Weekly windows.
    pub windows: Vec<WeeklyWindow>,
    /// Public holidays of the site's calendar.
    pub holidays: Arc<BTreeSet<Date>>,
    /// One-off exceptions.
    pub exceptions: Vec<Exception>,
    /// Operators' extensions.
    pub extensions: Vec<Extension>,
    /// Kinds checked.
    pub checks: Checks,
}

/// The first instant whose local time in `tz` is at or after `dt` (see the module docs).
pub fn first_instant(tz: &TimeZone, dt: DateTime) -> Option<i64> {
    let ts = match tz.to_ambiguous_timestamp(dt).offset() {
        AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(dt).ok()?,
        AmbiguousOffset::Fold { before, .. } => before.to_timestamp(dt).ok()?,
        AmbiguousOffset::Gap { after, .. } => {
            // Before the transition this reads earlier than `dt`; the transition itself is the
            // first instant that reads `dt` or later.
            let probe = after.to_timestamp(dt).ok()?;
            tz.following(probe).next()?.timestamp()
        }
    };
    Some(ts.as_millisecond())
}

/// The local date of an instant.
pub fn local_date(tz: &TimeZone, ms: i64) -> Option<Date> {
    Timestamp::from_millisecond(ms).ok().map(|t| tz.to_datetime(t).date())
}

/// `HH:MM` of an instant in `tz`, with the zone's abbreviation.
pub fn local_clock(tz: &TimeZone, ms: i64) -> String {
    match Timestamp::from_millisecond(ms) {
        Ok(t) => {
            let d = tz.to_datetime(t);
            let abbr = tz.to_offset_info(t).abbreviation().to_string();
            format!("{:02}:{:02} {abbr}", d.hour(), d.minute())
        }
        Err(_) => "?".into(),
    }
}

fn at_minute(date: Date, min: u16) -> Option<DateTime> {
    if min >= 1440 {
        let next = date.tomorrow().ok()?;
        return Some(next.at(0, 0, 0, 0));
    }
    Some(date.at((min / 60) as i8, (min % 60) as i8, 0, 0))
}

impl Plan {
    /// A plan with weekly windows only.
    pub fn weekly(tz: TimeZone, windows: Vec<WeeklyWindow>) -> Plan {
        Plan {
            tz,
            windows,
            holidays: Arc::new(BTreeSet::new()),
            exceptions: Vec::new(),
            extensions: Vec::new(),
            checks: Checks::default(),
        }
    }

    fn instance(&self, date: Date, h: Hours, grace: u16) -> Option<Instance> {
        let open = first_instant(&self.tz, at_minute(date, h.open)?)?;
        let close_date = if h.crosses_midnight() {
            date.tomorrow().ok()?
        } else {
            date
        };
        let close = first_instant(&self.tz, at_minute(close_date, h.close)?)?;
        // A window inside a skipped hour has no time at all.
        (close > open).then_some(Instance {
            open_ms: open,
            close_ms: close,
            grace_ms: i64::from(grace) * MINUTE_MS,
            extension: false,
        })
    }

    /// The instances that open on `date` (weekly windows, or an exception's hours), appended
    /// to `out`.
    pub fn instances_on(&self, date: Date, out: &mut Vec<Instance>) {
        if let Some(e) = self.exceptions.iter().find(|e| e.from <= date && date <= e.to) {
            out.extend(e.hours.iter().filter_map(|h| self.instance(date, *h, e.grace)));
            return;
        }
        if self.holidays.contains(&date) {
            return;
        }
        let bit = 1u8 << date.weekday().to_monday_zero_offset();
        out.extend(
            self.windows
                .iter()
                .filter(|w| w.days & bit != 0)
                .filter_map(|w| self.instance(date, w.hours, w.grace)),
        );
    }

    /// Every instance (extensions too) that opens on a date from `days_before` days before the
    /// local date of `t` to `days_after` days after it, or is an extension near that span.
    pub fn instances_around(&self, t: i64, days_before: i64, days_after: i64) -> Vec<Instance> {
        let mut out = Vec::new();
        let Some(day) = local_date(&self.tz, t) else {
            return out;
        };
        let mut d = day.checked_sub(jiff::Span::new().days(days_before)).unwrap_or(day);
        let last = day.checked_add(jiff::Span::new().days(days_after)).unwrap_or(day);
        while d <= last {
            self.instances_on(d, &mut out);
            match d.tomorrow() {
                Ok(n) => d = n,
                Err(_) => break,
            }
        }
        let (lo, hi) = (t - (days_before + 1) * DAY_MS, t + (days_after + 1) * DAY_MS);
        out.extend(
            self.extensions
                .iter()
                .filter(|e| e.until_ms > lo && e.from_ms < hi && e.until_ms > e.from_ms)
                .map(|e| Instance {
                    open_ms: e.from_ms,
                    close_ms: e.until_ms,
                    grace_ms: i64::from(e.grace) * MINUTE_MS,
                    extension: true,
                }),
        );
        out
    }

    /// The instances that can hold `t` in their allowed time: those opening up to two days
    /// before its date (a window across midnight, grace) or the day after (grace before an
    /// opening just after midnight).
    fn near(&self, t: i64) -> Vec<Instance> {
        self.instances_around(t, 2, 1)
    }

    /// Whether the site may be disarmed at `t`.
    pub fn allowed(&self, t: i64) -> bool {
        self.near(t).iter().any(|i| i.allows(t))
    }

    /// The kinds that hold at `t` for a site in state `armed` (none while it is unknown).
    pub fn conditions(&self, armed: Option<Armed>, t: i64) -> Kinds {
        let mut k = Kinds::NONE;
        match armed {
            None => {}
            Some(Armed::Disarmed(d)) if !self.allowed(t) => {
                k.insert(if self.allowed(d) {
                    Lateness::LateToClose
                } else {
                    Lateness::UnexpectedOpening
                });
            }
            Some(Armed::Disarmed(_)) => {}
            Some(Armed::Armed(d)) => {
                for i in self.near(t).iter().filter(|i| !i.extension) {
                    if i.open_ms + i.grace_ms <= t && t < i.close_ms && d < i.open_ms {
                        k.insert(Lateness::LateToOpen);
                    }
                    if i.open_ms <= t && t < i.close_ms - i.grace_ms && d >= i.open_ms {
                        k.insert(Lateness::EarlyClose);
                    }
                }
            }
        }
        Lateness::ALL
            .into_iter()
            .filter(|x| k.contains(*x) && self.checks.on(*x))
            .collect()
    }

    /// The next instant after `t` at which a kind may start or stop holding without a report:
    /// the next edge of an instance, or a day later when nothing is scheduled in the next
    /// eight days (`LOOK_AHEAD_DAYS`).
    pub fn next_edge(&self, t: i64) -> i64 {
        self.instances_around(t, 2, LOOK_AHEAD_DAYS)
            .iter()
            .flat_map(|i| i.edges())
            .filter(|e| *e > t)
            .min()
            .unwrap_or(t + DAY_MS)
    }

    /// The end of the allowed time the site most recently left, at or before `t` (for the
    /// text of a late-to-close alarm).
    pub fn last_allowed_end(&self, t: i64) -> Option<i64> {
        self.near(t)
            .iter()
            .map(|i| i.close_ms + i.grace_ms)
            .filter(|e| *e <= t)
            .max()
    }

    /// The instance (window or extension) open at `t`, if any: the one that closes last.
    pub fn open_at(&self, t: i64) -> Option<Instance> {
        self.near(t)
            .into_iter()
            .filter(|i| i.open_ms <= t && t < i.close_ms)
            .max_by_key(|i| i.close_ms)
    }

    /// The next opening after `t`, if one is within the look-ahead.
    pub fn next_open(&self, t: i64) -> Option<Instance> {
        self.instances_around(t, 0, LOOK_AHEAD_DAYS)
            .into_iter()
            .filter(|i| i.open_ms > t)
            .min_by_key(|i| i.open_ms)
    }

    /// The instances of window (not extension) instances that bound the kind `k` holding at
    /// `t`: the window a late-to-open or early-close is about.
    pub fn window_for(&self, k: Lateness, t: i64) -> Option<Instance> {
        self.near(t).into_iter().filter(|i| !i.extension).find(|i| match k {
            Lateness::LateToOpen => i.open_ms + i.grace_ms <= t && t < i.close_ms,
            Lateness::EarlyClose => i.open_ms <= t && t < i.close_ms - i.grace_ms,
            Lateness::LateToClose | Lateness::UnexpectedOpening => false,
        })
    }

    /// The grace of the window open (or most recently closed) at `t`: an extension gets it.
    pub fn grace_at(&self, t: i64) -> u16 {
        let near = self.near(t);
        let best = near
            .iter()
            .filter(|i| !i.extension && i.open_ms <= t)
            .max_by_key(|i| i.open_ms)
            .or_else(|| near.iter().find(|i| !i.extension));
        best.map_or(0, |i| (i.grace_ms / MINUTE_MS) as u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        s.parse::<Timestamp>().expect("time").as_millisecond()
    }

    fn amsterdam() -> TimeZone {
        TimeZone::get("Europe/Amsterdam").expect("zone")
    }

    fn shop() -> Plan {
        Plan::weekly(
            amsterdam(),
            vec![WeeklyWindow {
                days: parse_days("mon-sat").expect("days"),
                hours: parse_hours("08:00-22:00").expect("hours"),
                grace: 15,
            }],
        )
    }

    #[test]
    fn clock_days_and_hours_parse_and_print() {
        assert_eq!(parse_clock("08:05", false), Some(485));
        assert_eq!(parse_clock("24:00", false), None);
        assert_eq!(parse_clock("24:00", true), Some(1440));
        assert_eq!(parse_clock("8:05", false), None);
        assert_eq!(parse_clock("23:60", false), None);
        assert_eq!(parse_hours("22:00-06:00").map(|h| h.crosses_midnight()), Some(true));
        assert_eq!(parse_hours("00:00-24:00").map(|h| h.crosses_midnight()), Some(false));
        assert_eq!(parse_hours("08:00-08:00"), None);
        assert_eq!(parse_days("mon-fri"), Some(0x1f));
        assert_eq!(parse_days("sat-mon"), Some(0b110_0001));
        assert_eq!(parse_days("Mon; wed"), Some(0b101));
        assert_eq!(parse_days("daily"), Some(0x7f));
        assert_eq!(parse_days("someday"), None);
        assert_eq!(parse_days(""), None);
        assert_eq!(days_text(0x1f), "mon-fri");
        assert_eq!(days_text(0b101), "mon,wed");
        assert_eq!(days_text(0b110_0001), "mon,sat,sun");
        assert_eq!(days_text(0b11), "mon,tue");
        assert_eq!(clock_text(1440), "24:00");
    }

    /// Thursday 15 January 2026, CET (UTC+1).
    #[test]
    fn a_site_left_open_is_late_to_close_and_one_opened_at_night_unexpected() {
        let p = shop();
        let opened = Some(Armed::Disarmed(ms("2026-01-15T07:10:00Z")));
        assert!(
            p.conditions(opened, ms("2026-01-15T21:14:00Z")).is_empty(),
            "22:14: in grace"
        );
        let late = p.conditions(opened, ms("2026-01-15T21:15:00Z"));
        assert_eq!(late.iter().collect::<Vec<_>>(), [Lateness::LateToClose]);
        assert_eq!(p.next_edge(ms("2026-01-15T21:00:00Z")), ms("2026-01-15T21:15:00Z"));
        let night = Some(Armed::Disarmed(ms("2026-01-16T02:00:00Z")));
        assert_eq!(
            p.conditions(night, ms("2026-01-16T02:00:00Z"))
                .iter()
                .collect::<Vec<_>>(),
            [Lateness::UnexpectedOpening]
        );
        // Sunday: closed all day.
        assert!(!p.allowed(ms("2026-01-18T12:00:00Z")));
        assert!(
            p.allowed(ms("2026-01-17T06:45:00Z")),
            "Saturday 07:45, grace before 08:00"
        );
    }

    /// 2026-03-29: Amsterdam goes from 02:00 CET to 03:00 CEST. 2026-10-25: from 03:00 CEST
    /// back to 02:00 CET.
    #[test]
    fn wall_clock_times_in_a_gap_or_a_fold() {
        let tz = amsterdam();
        let spring = Date::constant(2026, 3, 29);
        assert_eq!(
            first_instant(&tz, spring.at(2, 30, 0, 0)),
            Some(ms("2026-03-29T01:00:00Z")),
            "02:30 does not exist: 03:00 CEST"
        );
        assert_eq!(
            first_instant(&tz, spring.at(1, 30, 0, 0)),
            Some(ms("2026-03-29T00:30:00Z"))
        );
        let autumn = Date::constant(2026, 10, 25);
        assert_eq!(
            first_instant(&tz, autumn.at(2, 30, 0, 0)),
            Some(ms("2026-10-25T00:30:00Z")),
            "the first 02:30 (CEST)"
        );
        let night = Plan::weekly(
            tz,
            vec![WeeklyWindow {
                days: 0x7f,
                hours: parse_hours("02:00-03:00").expect("hours"),
                grace: 0,
            }],
        );
        let mut out = Vec::new();
        night.instances_on(spring, &mut out);
        assert!(out.is_empty(), "the skipped hour has no window");
        night.instances_on(autumn, &mut out);
        assert_eq!(
            out[0].close_ms - out[0].open_ms,
            2 * 3_600_000,
            "the repeated hour counts twice"
        );
    }

    #[test]
    fn holidays_exceptions_and_extensions() {
        let mut p = shop();
        p.holidays = Arc::new([Date::constant(2026, 1, 16)].into_iter().collect());
        assert!(!p.allowed(ms("2026-01-16T12:00:00Z")), "a holiday is closed");
        p.exceptions.push(Exception {
            from: Date::constant(2026, 1, 16),
            to: Date::constant(2026, 1, 16),
            hours: vec![parse_hours("10:00-14:00").expect("hours")],
            grace: 0,
        });
        assert!(p.allowed(ms("2026-01-16T12:00:00Z")), "an exception beats the holiday");
        assert!(!p.allowed(ms("2026-01-16T13:00:00Z")), "14:00 local");
        let opened = Some(Armed::Disarmed(ms("2026-01-15T08:00:00Z")));
        assert!(
            p.conditions(opened, ms("2026-01-15T21:20:00Z"))
                .contains(Lateness::LateToClose)
        );
        p.extensions.push(Extension {
            from_ms: ms("2026-01-15T21:20:00Z"),
            until_ms: ms("2026-01-15T22:30:00Z"),
            grace: 15,
        });
        assert!(p.conditions(opened, ms("2026-01-15T21:20:00Z")).is_empty(), "extended");
        assert!(p.conditions(opened, ms("2026-01-15T22:44:00Z")).is_empty());
        assert!(
            p.conditions(opened, ms("2026-01-15T22:45:00Z"))
                .contains(Lateness::LateToClose)
        );
    }

    #[test]
    fn late_to_open_and_early_close_where_asked() {
        let mut p = shop();
        let closed = Some(Armed::Armed(ms("2026-01-14T21:00:00Z")));
        assert!(p.conditions(closed, ms("2026-01-15T08:00:00Z")).is_empty(), "not asked");
        p.checks.late_to_open = true;
        p.checks.early_close = true;
        assert!(p.conditions(closed, ms("2026-01-15T07:14:00Z")).is_empty());
        assert_eq!(
            p.conditions(closed, ms("2026-01-15T07:15:00Z"))
                .iter()
                .collect::<Vec<_>>(),
            [Lateness::LateToOpen]
        );
        let early = Some(Armed::Armed(ms("2026-01-15T15:00:00Z")));
        assert_eq!(
            p.conditions(early, ms("2026-01-15T15:00:00Z"))
                .iter()
                .collect::<Vec<_>>(),
            [Lateness::EarlyClose]
        );
        assert!(
            p.conditions(early, ms("2026-01-15T20:45:00Z")).is_empty(),
            "close − grace"
        );
    }
}
