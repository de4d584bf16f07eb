//! Schedules (issue "Schedules: open/close windows, late-to-close, unexpected openings, accounts
//! on test and out of service").
//!
//! The property: for random schedules (weekly windows, several per day and across midnight,
//! grace, holidays, one-off exceptions, operators' extensions, in time zones with and without
//! daylight saving, over dates that cross its changes) and random opening/closing reports, the
//! alarms the engine raises and restores (looking only at reports and at the timer structure's
//! edges, as the daemon does) are exactly those of a reference model that looks at every
//! minute and decides each kind from its definition, with its own way of placing the windows
//! (the first minute whose wall-clock time reaches the window's time, found by scanning).

use std::collections::BTreeSet;
use std::sync::Arc;

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use meldkamer::correlate::schedule::plan::{
    Armed, Checks, Exception, Extension, Hours, Kinds, Lateness, Plan, WeeklyWindow,
};
use meldkamer::correlate::timers::Timers;
use proptest::prelude::*;

const MIN: i64 = 60_000;

/// Zones and start dates: a few days before each change of daylight saving in Europe and
/// America (at 02:00 local, an hour), in Lord Howe (a 30-minute change) and St John's (a
/// negative half-hour offset), and an ordinary week in Kolkata (a half-hour offset without
/// daylight saving) and UTC.
const ZONES: [(&str, (i16, i8, i8)); 10] = [
    ("Europe/Amsterdam", (2026, 3, 26)),
    ("Europe/Amsterdam", (2026, 10, 22)),
    ("America/New_York", (2026, 3, 5)),
    ("America/New_York", (2026, 10, 29)),
    ("Australia/Lord_Howe", (2026, 4, 2)),
    ("Australia/Lord_Howe", (2026, 10, 1)),
    ("America/St_Johns", (2026, 3, 5)),
    ("America/St_Johns", (2026, 10, 29)),
    ("Asia/Kolkata", (2026, 1, 12)),
    ("UTC", (2026, 1, 12)),
];

/// Days simulated.
const DAYS: i64 = 5;

#[derive(Debug, Clone)]
struct Case {
    zone: &'static str,
    start: Date,
    windows: Vec<WeeklyWindow>,
    holidays: Vec<i64>,
    exceptions: Vec<(i64, i64, Vec<Hours>, u16)>,
    /// Minutes after the start, length in minutes, grace.
    extensions: Vec<(i64, i64, u16)>,
    checks: Checks,
    /// Minutes after the start (distinct), armed or not.
    reports: Vec<(i64, bool)>,
}

/// A quarter hour of the day: half of them in the night around the changes of the clocks
/// (00:30 to 03:30), so that opens and closes land in skipped and repeated times.
fn quarter() -> impl Strategy<Value = u16> {
    prop_oneof![0u16..96, 2u16..=14]
}

fn hours() -> impl Strategy<Value = Hours> {
    // Quarter hours, so that windows meet, overlap and land on the changes of the clocks.
    (quarter(), quarter().prop_map(|q| q.max(1)))
        .prop_filter("open and close differ", |(o, c)| {
            o != &(c % 96) || (*o == 0 && *c == 96)
        })
        .prop_map(|(o, c)| Hours {
            open: o * 15,
            close: c * 15,
        })
}

fn case() -> impl Strategy<Value = Case> {
    let window = (1u8..=127, hours(), prop_oneof![Just(0u16), 0u16..=240])
        .prop_map(|(days, hours, grace)| WeeklyWindow { days, hours, grace });
    (
        0..ZONES.len(),
        prop::collection::vec(window, 0..4),
        prop::collection::vec(-1i64..DAYS + 1, 0..3),
        prop::collection::vec(
            (-1i64..DAYS, 0i64..3, prop::collection::vec(hours(), 0..3), 0u16..=60),
            0..2,
        ),
        prop::collection::vec((0i64..DAYS * 1440, 1i64..=600, 0u16..=30), 0..3),
        (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
        prop::collection::btree_map(0i64..DAYS * 1440, any::<bool>(), 0..32),
    )
        .prop_map(|(z, windows, holidays, exceptions, extensions, c, reports)| {
            let (zone, (y, m, d)) = ZONES[z];
            Case {
                zone,
                start: Date::new(y, m, d).expect("date"),
                windows,
                holidays,
                exceptions,
                extensions,
                checks: Checks {
                    late_to_close: c.0,
                    unexpected_opening: c.1,
                    late_to_open: c.2,
                    early_close: c.3,
                },
                reports: reports.into_iter().collect(),
            }
        })
}

fn day(start: Date, n: i64) -> Date {
    start.checked_add(jiff::Span::new().days(n)).expect("date")
}

impl Case {
    fn tz(&self) -> TimeZone {
        TimeZone::get(self.zone).expect("zone")
    }

    /// The first instant of the simulation: local midnight of the start date.
    fn t0(&self) -> i64 {
        self.tz()
            .to_zoned(self.start.at(0, 0, 0, 0))
            .expect("midnight")
            .timestamp()
            .as_millisecond()
    }

    fn plan(&self) -> Plan {
        let mut p = Plan::weekly(self.tz(), self.windows.clone());
        p.holidays = Arc::new(
            self.holidays
                .iter()
                .map(|n| day(self.start, *n))
                .collect::<BTreeSet<_>>(),
        );
        p.exceptions = self
            .exceptions
            .iter()
            .map(|(from, len, hours, grace)| Exception {
                from: day(self.start, *from),
                to: day(self.start, from + len),
                hours: hours.clone(),
                grace: *grace,
            })
            .collect();
        let t0 = self.t0();
        p.extensions = self
            .extensions
            .iter()
            .map(|(at, len, grace)| Extension {
                from_ms: t0 + at * MIN,
                until_ms: t0 + (at + len) * MIN,
                grace: *grace,
            })
            .collect();
        p.checks = self.checks;
        p
    }
}

/// A raise (true) or restore (false) of a kind, at an instant.
type Change = (i64, Lateness, bool);

/// The engine as the daemon drives it: a reconcile at every report (in the report's own
/// transaction) and at every edge the timer structure hands out.
fn engine(c: &Case) -> Vec<Change> {
    let plan = c.plan();
    let t0 = c.t0();
    let end = t0 + DAYS * 1440 * MIN;
    let mut state: Option<Armed> = None;
    let mut raised = Kinds::NONE;
    let mut out = Vec::new();
    let mut timers: Timers<u8> = Timers::default();
    timers.set(0, t0);
    let mut reports = c.reports.iter().map(|(m, a)| (t0 + m * MIN, *a)).peekable();
    let mut reconcile = |t: i64, state: Option<Armed>, out: &mut Vec<Change>| {
        let holds = plan.conditions(state, t);
        for k in raised.minus(holds).iter() {
            out.push((t, k, false));
        }
        for k in holds.minus(raised).iter() {
            out.push((t, k, true));
        }
        raised = holds;
    };
    loop {
        let report = reports.peek().copied();
        let edge = timers.next();
        match (report, edge) {
            // A report at an edge is stored first: the edge then sees the site as reported.
            (Some((t, armed)), e) if t < end && e.is_none_or(|e| t <= e) => {
                reports.next();
                state = Some(if armed { Armed::Armed(t) } else { Armed::Disarmed(t) });
                reconcile(t, state, &mut out);
            }
            (_, Some(e)) if e < end => {
                timers.pop_due(e);
                reconcile(e, state, &mut out);
                timers.set(0, plan.next_edge(e));
            }
            _ => break,
        }
    }
    out
}

/// The reference: every minute, each kind by its definition.
fn reference(c: &Case) -> Vec<Change> {
    let tz = c.tz();
    let t0 = c.t0();
    // Minutes from four days before the start to two days after the end: every window that can
    // matter opens and closes in there.
    let first = t0 - 4 * 1440 * MIN;
    let n = (DAYS + 6) * 1440;
    let local: Vec<DateTime> = (0..n)
        .map(|i| tz.to_datetime(Timestamp::from_millisecond(first + i * MIN).expect("instant")))
        .collect();
    let reach =
        |target: DateTime| -> Option<i64> { local.iter().position(|l| *l >= target).map(|i| first + i as i64 * MIN) };
    let at = |d: Date, min: u16| -> DateTime {
        if min == 1440 {
            day(d, 1).at(0, 0, 0, 0)
        } else {
            d.at((min / 60) as i8, (min % 60) as i8, 0, 0)
        }
    };
    // (open, close, grace, is a window rather than an extension)
    let mut instances: Vec<(i64, i64, i64, bool)> = Vec::new();
    for dn in -4..DAYS + 2 {
        let d = day(c.start, dn);
        let exception = c
            .exceptions
            .iter()
            .find(|(from, len, _, _)| *from <= dn && dn <= from + len);
        let todays: Vec<(Hours, u16)> = match exception {
            Some((_, _, hours, grace)) => hours.iter().map(|h| (*h, *grace)).collect(),
            None if c.holidays.contains(&dn) => Vec::new(),
            None => {
                let bit = 1u8 << d.weekday().to_monday_zero_offset();
                c.windows
                    .iter()
                    .filter(|w| w.days & bit != 0)
                    .map(|w| (w.hours, w.grace))
                    .collect()
            }
        };
        for (h, grace) in todays {
            let close_day = if h.close <= h.open { day(d, 1) } else { d };
            if let (Some(o), Some(cl)) = (reach(at(d, h.open)), reach(at(close_day, h.close)))
                && cl > o
            {
                instances.push((o, cl, i64::from(grace) * MIN, true));
            }
        }
    }
    for (m, len, grace) in &c.extensions {
        instances.push((t0 + m * MIN, t0 + (m + len) * MIN, i64::from(*grace) * MIN, false));
    }
    let allowed = |t: i64| instances.iter().any(|(o, cl, g, _)| o - g <= t && t < cl + g);
    let mut out = Vec::new();
    let mut prev = Kinds::NONE;
    for m in 0..DAYS * 1440 {
        let t = t0 + m * MIN;
        let last = c.reports.iter().rev().find(|(r, _)| *r <= m);
        let mut holds = Kinds::NONE;
        match last {
            None => {}
            Some((r, false)) => {
                let d = t0 + r * MIN;
                if !allowed(t) {
                    holds.insert(if allowed(d) {
                        Lateness::LateToClose
                    } else {
                        Lateness::UnexpectedOpening
                    });
                }
            }
            Some((r, true)) => {
                let d = t0 + r * MIN;
                for (o, cl, g, window) in &instances {
                    if *window && o + g <= t && t < *cl && d < *o {
                        holds.insert(Lateness::LateToOpen);
                    }
                    if *window && *o <= t && t < cl - g && d >= *o {
                        holds.insert(Lateness::EarlyClose);
                    }
                }
            }
        }
        let on = |k: Lateness| match k {
            Lateness::LateToClose => c.checks.late_to_close,
            Lateness::UnexpectedOpening => c.checks.unexpected_opening,
            Lateness::LateToOpen => c.checks.late_to_open,
            Lateness::EarlyClose => c.checks.early_close,
        };
        let holds: Kinds = holds.iter().filter(|k| on(*k)).collect();
        for k in prev.minus(holds).iter() {
            out.push((t, k, false));
        }
        for k in holds.minus(prev).iter() {
            out.push((t, k, true));
        }
        prev = holds;
    }
    out
}

fn sorted(mut v: Vec<Change>) -> Vec<Change> {
    v.sort();
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_engine_raises_what_a_minute_by_minute_model_raises(c in case()) {
        prop_assert_eq!(sorted(engine(&c)), sorted(reference(&c)), "{:#?}", c);
    }
}

/// The property test's own check: the model finds what a schedule is for (a site opened in
/// the morning and never closed is late to close at close + grace, once), so a model that
/// found nothing could not pass it with an engine that found nothing.
#[test]
fn the_reference_model_sees_a_site_left_open() {
    let c = Case {
        zone: "Europe/Amsterdam",
        start: Date::new(2026, 1, 12).expect("date"),
        windows: vec![WeeklyWindow {
            days: 0x1f,
            hours: Hours { open: 480, close: 1080 },
            grace: 15,
        }],
        holidays: vec![],
        exceptions: vec![],
        extensions: vec![],
        checks: Checks::default(),
        reports: vec![(500, false)],
    };
    let r = reference(&c);
    assert_eq!(r[0], (c.t0() + (1080 + 15) * MIN, Lateness::LateToClose, true));
    assert_eq!(sorted(engine(&c)), sorted(r));
}

// ---------------------------------------------------------------------------------------------
// Over the operator API, against a running daemon on a manual clock.

mod api {
    use std::time::Duration;

    use meldkamer::protocol::frame::Token;
    use serde_json::{Value, json};

    use crate::common::*;
    use crate::operator::{Api, PASSWORD, daemon_with_operators, socket};

    /// Shop S-1001 (account 1234): Monday to Saturday 08:00-18:00 CET, 15 minutes grace.
    const SCHEDULE: &str = "[[schedule]]\nsite = \"S-1001\"\ntime_zone = \"Europe/Amsterdam\"\n\
        [[schedule_window]]\nsite = \"S-1001\"\ndays = \"mon-sat\"\nopen = \"08:00\"\nclose = \"18:00\"\ngrace = 15\n";

    async fn send_cid(d: &TestDaemon, seq: u16, data: &str) {
        let f = plain(Token::AdmCid, seq, "1234", &format!("#1234|{data}"), None);
        assert_eq!(
            tcp_exchange(d.tcp(), &f).await.as_deref().map(token_of).as_deref(),
            Some("ACK"),
            "{data}"
        );
    }

    async fn logged_in(d: &TestDaemon, name: &str) -> Api {
        let mut api = Api::connect(&socket(d)).await;
        assert_eq!(api.login(name, PASSWORD).await["ok"], true);
        api
    }

    /// Wait (real time, bounded) until `f` finds what it looks for in the queue.
    async fn queue_until(api: &mut Api, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let q = api.call(json!({"op": "queue"})).await;
            if let Some(a) = q["result"]["alarms"].as_array().and_then(|v| v.iter().find(|a| f(a))) {
                return a.clone();
            }
            assert!(std::time::Instant::now() < deadline, "no {what} in time: {q}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn audit_rows(d: &TestDaemon, action: &str) -> Vec<(String, String, String)> {
        let conn = rusqlite::Connection::open(d.db_path()).expect("db");
        conn.prepare("SELECT actor, subject, result FROM audit_log WHERE action = ?1 ORDER BY id")
            .expect("query")
            .query_map([action], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("rows")
    }

    /// The keyholder phones at 18:20: "we stay until 20:30 tonight". The operator sees the site
    /// late in the schedule tab and on the alarm (its schedule state), extends it over the
    /// API, and the alarm is restored at once; the extension is audited with who and why.
    #[tokio::test]
    async fn an_operator_extends_a_late_site_and_the_extension_is_audited() {
        let mut d = daemon_with_operators().await;
        import(&d.cfg, SCHEDULE);
        // 13:00 CET: opened by user 5.
        send_cid(&d, 1, "1401 01 005").await;
        d.clock.set(time::macros::datetime!(2026-01-15 17:20 UTC));
        let mut olga = logged_in(&d, "olga").await;
        let late = queue_until(&mut olga, "late-to-close alarm", |a| a["category"] == "late_to_close").await;
        assert_eq!(late["title"], "Late to close: not armed by 18:15 CET");
        let id = late["id"].as_str().expect("id").to_string();

        let tab = olga.call(json!({"op": "schedules"})).await;
        assert_eq!(tab["result"]["late"][0]["site_ref"], "S-1001", "{tab}");
        assert_eq!(tab["result"]["late"][0]["kind"], "late_to_close");
        assert_eq!(tab["result"]["late"][0]["alarm"], id.as_str());

        let detail = olga.call(json!({"op": "alarm", "alarm": id})).await;
        let s = &detail["result"]["schedule"];
        assert_eq!(s["open"], false, "{s}");
        assert_eq!(s["today"], "08:00-18:00 (grace 15)");
        assert_eq!(s["late"], json!(["late to close"]));
        // Its category's priority and default procedure (the customer has none of its own).
        assert_eq!(late["priority"], 5);
        let steps: Vec<&str> = detail["result"]["procedure"]
            .as_array()
            .map(|p| p.iter().filter_map(|s| s["instruction"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(
            steps.first().copied(),
            Some("Check the site's schedule, extensions and who opened it last"),
            "{detail}"
        );
        assert_eq!(steps.len(), 3, "{steps:?}");

        // Refused first: no reason, and an end in the past.
        let r = olga
            .call(json!({"op": "extend", "site": "S-1001", "until_ms": 1_768_505_400_000i64, "reason": " "}))
            .await;
        assert_eq!(r["error"]["kind"], "invalid", "{r}");
        let r = olga
            .call(json!({"op": "extend", "site": "S-1001", "until_ms": 1_768_490_000_000i64, "reason": "x"}))
            .await;
        assert_eq!(r["error"]["kind"], "invalid", "{r}");
        let r = olga
            .call(json!({"op": "extend", "site": "S-9999", "until_ms": 1_768_505_400_000i64, "reason": "x"}))
            .await;
        assert_eq!(r["error"]["kind"], "not_found", "{r}");
        // 20:30 CET, as the console gives it: in the site's local time.
        let r = olga
            .call(json!({"op": "extend", "site": "S-1001", "until_local": "20:30",
                         "reason": "keyholder: we stay until 20:30 tonight"}))
            .await;
        assert_eq!(r["ok"], true, "{r}");
        let restored = queue_until(&mut olga, "restored alarm", |a| {
            a["id"] == id.as_str() && a["restored"] == true
        })
        .await;
        assert_eq!(restored["category"], "late_to_close");
        let detail = olga.call(json!({"op": "alarm", "alarm": id})).await;
        let s = &detail["result"]["schedule"];
        assert_eq!(s["open"], true, "{s}");
        assert_eq!(
            s["extension"], "until 20:30 CET by olga: keyholder: we stay until 20:30 tonight",
            "{s}"
        );
        let log: Vec<String> = detail["result"]["log"]
            .as_array()
            .expect("log")
            .iter()
            .map(|l| {
                format!(
                    "{} {}",
                    l["actor"].as_str().unwrap_or(""),
                    l["action"].as_str().unwrap_or("")
                )
            })
            .collect();
        assert!(log.contains(&"olga extended".to_string()), "{log:?}");
        let audit = audit_rows(&d, "extend");
        assert_eq!(audit.len(), 4, "{audit:?}");
        assert_eq!(
            audit[0].2,
            "refused: invalid: an extension needs a reason (what the caller said), at most 4000 characters"
        );
        assert_eq!(
            audit[2],
            (
                "olga".into(),
                "site S-9999 (unknown)".into(),
                "refused: not_found: no such site or account".into()
            )
        );
        assert_eq!(
            audit[3],
            (
                "olga".into(),
                "site S-1001".into(),
                "ok: until 2026-01-15T19:30:00.000Z: keyholder: we stay until 20:30 tonight".into()
            )
        );
        d.stop().await;
    }

    /// A supervisor puts account 1234 on test over the API (an operator may not); its burglary
    /// raises no operator alarm; ending the test by hand gives the summary in the supervisor
    /// queue with the burglary in it. Both audited.
    #[tokio::test]
    async fn a_supervisor_puts_an_account_on_test_and_ends_it() {
        let mut d = daemon_with_operators().await;
        let mut olga = logged_in(&d, "olga").await;
        let mut sam = logged_in(&d, "sam").await;
        let until = 1_768_485_600_000i64; // 14:00 UTC, two hours on
        let set = json!({"op": "service", "account": "1234", "mode": "test", "until_ms": until,
                         "reason": "installer replaces the back door detector"});
        assert_eq!(olga.call(set.clone()).await["error"]["kind"], "forbidden");
        assert_eq!(sam.call(set).await["ok"], true);
        let tab = olga.call(json!({"op": "schedules"})).await;
        let p = &tab["result"]["periods"][0];
        assert_eq!(
            (p["mode"].as_str(), p["account"].as_str(), p["site_ref"].as_str()),
            (Some("test"), Some("1234"), Some("S-1001"))
        );
        assert_eq!(p["set_by"], "sam");
        // Give the writer a moment to see the period (it reads it at its next transaction).
        send_cid(&d, 1, "1130 01 003").await;
        let tab = olga.call(json!({"op": "schedules"})).await;
        assert_eq!(tab["result"]["periods"][0]["events"], 1, "{tab}");
        let q = olga.call(json!({"op": "queue"})).await;
        assert_eq!(q["result"]["alarms"], json!([]), "no operator alarm on test: {q}");
        assert_eq!(
            sam.call(json!({"op": "service_end", "account": "1234"})).await["ok"],
            true
        );
        let summary = queue_until(&mut sam, "test summary", |a| a["category"] == "test").await;
        assert_eq!(summary["queue"], "supervisor");
        assert_eq!(
            summary["title"],
            "Test of account 1234 ended: 1 event(s): 1x Burglary alarm"
        );
        let again = sam.call(json!({"op": "service_end", "account": "1234"})).await;
        assert_eq!(again["error"]["kind"], "conflict", "{again}");
        // The test's event is shown as test: in the summary's timeline and in a search of the
        // account; an event after the test is not.
        let detail = sam.call(json!({"op": "alarm", "alarm": summary["id"].clone()})).await;
        let events = &detail["result"]["events"];
        assert_eq!(events.as_array().map(Vec::len), Some(1), "{detail}");
        assert_eq!(events[0]["on_test"], true, "{detail}");
        send_cid(&d, 2, "1130 01 003").await;
        queue_until(&mut olga, "the burglary after the test", |a| {
            a["category"] == "burglary"
        })
        .await;
        let found = olga.call(json!({"op": "search", "query": "1234"})).await;
        let flags: Vec<bool> = found["result"]["events"]
            .as_array()
            .map(|e| e.iter().map(|e| e["on_test"] == true).collect())
            .unwrap_or_default();
        assert_eq!(flags, [false, true], "newest first: {found}");
        let audit = audit_rows(&d, "service");
        assert_eq!(audit[0].2, "refused: forbidden: service requires the supervisor role");
        assert_eq!(
            audit[1],
            (
                "sam".into(),
                "account 1234".into(),
                "ok: on test until 2026-01-15T14:00:00.000Z: installer replaces the back door detector".into()
            )
        );
        assert_eq!(audit_rows(&d, "service_end")[0].2, "ok: period ended");
        d.stop().await;
    }
}
