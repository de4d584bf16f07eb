//! Correlation and supervision scenarios (`fixtures/scenarios/*.trace`), replayed in-process on
//! the virtual clock: every response byte-exact, the outcome (events, alarms, sites) equal to
//! the blessed `*.outcome.json`, and the rule each scenario exists for checked explicitly.
//! Run with MELDKAMER_BLESS=1 to rewrite expectations after an intended change.

use std::path::{Path, PathBuf};

use meldkamer::replay::run::run_in_process;
use meldkamer::trace::Trace;
use serde_json::Value;

fn scenario_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/scenarios")
}

async fn run(name: &str) -> Value {
    let path = scenario_dir().join(format!("{name}.trace"));
    let trace = Trace::load(&path).expect("trace parses");
    let dir = tempfile::tempdir().expect("tempdir");
    let result = run_in_process(&trace, dir.path()).await.expect("runs");
    let outcome_path = path.with_extension("outcome.json");
    if std::env::var_os("MELDKAMER_BLESS").is_some() {
        std::fs::write(&path, trace.with_expectations(&result.actual)).expect("write trace");
        let mut text = serde_json::to_string_pretty(&result.outcome).expect("json");
        text.push('\n');
        std::fs::write(&outcome_path, text).expect("write outcome");
        return result.outcome;
    }
    assert!(result.mismatches.is_empty(), "{name}: {:#?}", result.mismatches);
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(&outcome_path).expect("outcome file")).expect("outcome json");
    assert_eq!(
        result.outcome,
        expected,
        "{name}: outcome differs from {}",
        outcome_path.display()
    );
    result.outcome
}

fn alarms(o: &Value) -> &Vec<Value> {
    o["alarms"].as_array().expect("alarms")
}

#[tokio::test]
async fn burglary_then_restore() {
    let o = run("burglary-restore").await;
    let a = alarms(&o);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0]["category"], "burglary");
    assert_eq!(a[0]["zone"], "3");
    assert_eq!(a[0]["restored"], true);
    assert_eq!(
        a[0]["state"], "new",
        "a restore does not close the alarm: the operator does"
    );
    assert!(
        a[0]["title"]
            .as_str()
            .expect("title")
            .contains("Back door, ground floor")
    );
}

#[tokio::test]
async fn alarm_then_opening_by_user_5_is_the_keypad_factor() {
    let o = run("alarm-then-opening").await;
    let a = alarms(&o);
    assert_eq!(a.len(), 1, "an opening does not open an alarm");
    assert_eq!(a[0]["keypad_factor"], "user 5");
    assert_eq!(a[0]["phone_factor"], false);
    assert_eq!(o["sites"][0]["armed"], "disarmed");
    assert_eq!(o["sites"][0]["by_user"], "5");
}

#[tokio::test]
async fn duress_outranks_everything() {
    let o = run("duress-outranks").await;
    let a = alarms(&o);
    let duress = a.iter().find(|x| x["duress"] == true).expect("duress alarm");
    assert_eq!(duress["priority"], 1);
    let best_other = a
        .iter()
        .filter(|x| x["duress"] != true)
        .map(|x| x["priority"].as_i64().expect("p"))
        .min();
    assert!(best_other.expect("others") > 1, "duress must outrank fire and burglary");
    let fire = a.iter().find(|x| x["category"] == "fire").expect("fire");
    let burglary = a.iter().find(|x| x["category"] == "burglary").expect("burglary");
    assert!(
        fire["priority"].as_i64() < burglary["priority"].as_i64(),
        "fire before burglary"
    );
}

#[tokio::test]
async fn a_flood_of_1000_events_is_one_alarm() {
    let o = run("flood-1000").await;
    assert_eq!(o["events"].as_array().expect("events").len(), 1000);
    let a = alarms(&o);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0]["events"], 1000);
}

#[tokio::test]
async fn unknown_account_and_unknown_code_reach_the_supervisor() {
    let o = run("unknown-account-and-code").await;
    let a = alarms(&o);
    assert_eq!(a.len(), 3);
    assert!(a.iter().all(|x| x["queue"] == "supervisor"), "{a:#?}");
    assert!(
        a.iter()
            .any(|x| x["title"].as_str().expect("t").contains("Unknown account 9999"))
    );
    assert!(
        a.iter()
            .any(|x| x["title"].as_str().expect("t").contains("Unknown code SIA ZX"))
    );
    assert!(
        a.iter()
            .any(|x| x["title"].as_str().expect("t").contains("Unknown code Contact ID 999"))
    );
}

#[tokio::test]
async fn missed_poll_opens_and_late_poll_restores() {
    let o = run("missed-poll-late-poll").await;
    let a: Vec<&Value> = alarms(&o).iter().filter(|x| x["account"] == "3456").collect();
    assert_eq!(a.len(), 1, "{a:#?}");
    assert_eq!(a[0]["category"], "communication");
    assert_eq!(a[0]["restored"], true);
    // Polled at 0 s and 30 s: the deadline is 90 s; the clock passes it at 91 s.
    assert_eq!(a[0]["opened"], "2026-01-15T12:01:31.000Z");
}

/// Time the daemon was not receiving is not the panels' fault: a deadline that passed while it
/// was down restarts when it receives again. No alarm for an account that reports within one
/// interval after the restart; an alarm for one that does not; one supervisor item for the
/// outage.
#[tokio::test]
async fn deadlines_restart_after_time_not_receiving() {
    let o = run("deadline-after-restart").await;
    let a = alarms(&o);
    // 2345's primary path (90 s) polled at 0 s; down from 0 s to 100 s; it polled at 101 s.
    assert!(
        a.iter().all(|x| x["account"] != "2345"),
        "reported within one interval after the restart: no alarm: {a:#?}"
    );
    // 3456 (60 s) never reported: its deadline restarts at 100 s and passes at 160 s.
    let lost: Vec<&Value> = a.iter().filter(|x| x["account"] == "3456").collect();
    assert_eq!(lost.len(), 1, "{a:#?}");
    assert_eq!(lost[0]["category"], "communication");
    assert_eq!(
        lost[0]["opened"], "2026-01-15T12:02:40.000Z",
        "one interval after the restart"
    );
    let outage: Vec<&Value> = a.iter().filter(|x| x["queue"] == "supervisor").collect();
    assert_eq!(outage.len(), 1, "one item for the outage: {a:#?}");
    let title = outage[0]["title"].as_str().expect("title");
    assert!(title.contains("not receiving for 1 min 40 s"), "{title}");
    assert!(title.contains("2 reporting deadlines"), "{title}");
    assert_eq!(a.len(), 2, "{a:#?}");
}

/// The deadlines one start moved stay moved after the next (a start, a short run, ten minutes
/// down, a start): nothing is alarmed for time the daemon was not receiving.
#[tokio::test]
async fn deadlines_moved_by_one_start_stay_moved_after_the_next() {
    let o = run("restarted-twice").await;
    let a = alarms(&o);
    assert!(
        a.iter().all(|x| x["category"] != "communication"),
        "no communication-lost alarm: {a:#?}"
    );
    let titles: Vec<&str> = a.iter().map(|x| x["title"].as_str().expect("title")).collect();
    assert_eq!(titles.len(), 2, "one item per outage: {titles:#?}");
    assert!(titles[0].contains("for 1 min 40 s") && titles[0].contains(": 2 reporting deadlines"));
    assert!(titles[1].contains("for 10 min 0 s") && titles[1].contains(": 3 reporting deadlines"));
}

/// A communication-lost alarm that is open when the daemon restarts is not raised again (no
/// second alarm, no "repeated" or second "deadline missed" line on it); a deadline that passes
/// after the restart still alarms.
#[tokio::test]
async fn an_open_communication_lost_alarm_is_not_raised_again_by_a_restart() {
    let o = run("comm-lost-open-over-restart").await;
    let a = alarms(&o);
    let lost: Vec<&Value> = a.iter().filter(|x| x["account"] == "3456").collect();
    assert_eq!(lost.len(), 1, "{a:#?}");
    assert_eq!(lost[0]["opened"], "2026-01-15T12:01:01.000Z");
    let primary: Vec<&Value> = a.iter().filter(|x| x["account"] == "2345").collect();
    assert_eq!(primary.len(), 1, "a deadline passing after the restart alarms: {a:#?}");
    assert_eq!(primary[0]["opened"], "2026-01-15T12:02:11.000Z");

    let dir = tempfile::tempdir().expect("tempdir");
    let conn = replayed("comm-lost-open-over-restart", dir.path()).await;
    let actions: Vec<String> = conn
        .prepare(
            "SELECT l.action FROM alarm_log l JOIN alarms a ON a.id = l.alarm_id WHERE a.account = '3456'
             ORDER BY l.id",
        )
        .expect("query")
        .query_map([], |r| r.get(0))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(actions, ["opened", "deadline_missed"], "raised once, never again");
}

/// A network failure silences 1,000 accounts: the operators get one mass-loss alarm naming the
/// scope, each account has its own record (restored one by one), the one alarm raised before
/// the threshold was reached is folded into it, and a fire alarm meanwhile is its own alarm.
#[tokio::test]
async fn a_mass_loss_is_one_alarm_not_a_thousand() {
    let o = run("mass-loss").await;
    let a = alarms(&o);
    let open_comm: Vec<&Value> = a
        .iter()
        .filter(|x| x["category"] == "communication" && x["state"] != "closed")
        .collect();
    assert_eq!(open_comm.len(), 1, "one item, not a thousand: {a:#?}");
    let m = open_comm[0];
    assert_eq!(m["queue"], "operator");
    assert_eq!(m["priority"], 3);
    assert_eq!(m["opened"], "2026-01-15T12:01:30.000Z");
    let title = m["title"].as_str().expect("title");
    assert!(title.contains("1001 accounts silent"), "{title}");
    assert!(
        title.contains("over TCP, receiver line R1 L1: 1001 of 1002 accounts (99 %), network 127.0.0.0/24"),
        "the scope: {title}"
    );
    let folded: Vec<&Value> = a.iter().filter(|x| x["account"] == "69999").collect();
    assert_eq!(folded.len(), 1);
    assert_eq!(folded[0]["state"], "closed", "the alarm raised alone before is folded");
    assert_eq!(folded[0]["disposition"], "duplicate");
    let fire: Vec<&Value> = a.iter().filter(|x| x["category"] == "fire").collect();
    assert_eq!(fire.len(), 1, "life safety is never folded: {a:#?}");
    assert_eq!(fire[0]["account"], "79999");
    assert_eq!(a.len(), 3, "{a:#?}");
    let records = &o["mass_loss"][0];
    assert_eq!(records["accounts"], 1001, "each account its own record");
    assert_eq!(records["restored"], 10, "restored one by one as they report");

    // What the operator sees with the alarm: the accounts still silent.
    let dir = tempfile::tempdir().expect("tempdir");
    let conn = replayed("mass-loss", dir.path()).await;
    let public: String = conn
        .query_row(
            "SELECT public_id FROM alarms WHERE category = 'communication' AND state <> 'closed'",
            [],
            |r| r.get(0),
        )
        .expect("mass-loss alarm");
    let d = meldkamer::operator::queries::alarm_detail_public(&conn, &public)
        .expect("detail")
        .expect("alarm");
    let v = d.mass_loss.expect("the mass loss's accounts");
    assert_eq!((v.accounts, v.restored), (1001, 10));
    assert_eq!(v.silent.len(), 200, "the first 200 of 991");
    assert_eq!(v.silent[0].account, "69999", "the earliest missed deadline first");
    assert!(
        v.silent
            .iter()
            .all(|x| !(70000..=70009).contains(&x.account.parse::<u32>().expect("number")))
    );
    assert_eq!(v.silent[1].route, "TCP R1 L1 from 127.0.0.0/24");
}

/// A receiver line with ten panels fails: they are too few for a mass loss by count, but all
/// of their line, so the operators get one mass-loss alarm naming the line and the share; the
/// two silent accounts of a line of thirty get their own alarms; the line's accounts are
/// restored one by one as they report.
#[tokio::test]
async fn a_failed_receiver_line_is_one_mass_loss_of_that_line() {
    let o = run("mass-loss-line").await;
    let a = alarms(&o);
    let comm: Vec<&Value> = a.iter().filter(|x| x["category"] == "communication").collect();
    assert_eq!(comm.len(), 3, "one for the line, two of their own: {a:#?}");
    let line: Vec<&Value> = comm.iter().copied().filter(|x| x["account"] == "").collect();
    assert_eq!(line.len(), 1, "{a:#?}");
    let title = line[0]["title"].as_str().expect("title");
    assert_eq!(
        title,
        "Mass communication loss on receiver line R1 L2: 10 of 10 accounts (100 %) silent since \
         2026-01-15T12:01:30.000Z (over TCP, network 127.0.0.0/24)"
    );
    assert_eq!(line[0]["priority"], 3);
    let mut own: Vec<&str> = comm
        .iter()
        .filter_map(|x| x["account"].as_str())
        .filter(|x| !x.is_empty())
        .collect();
    own.sort();
    assert_eq!(
        own,
        ["81028", "81029"],
        "line 1's two silent accounts are not a mass loss"
    );
    let records = &o["mass_loss"][0];
    assert_eq!(records["accounts"], 10);
    assert_eq!(records["restored"], 3);
}

/// Replay a scenario and return the database it left (in `dir`).
async fn replayed(name: &str, dir: &Path) -> rusqlite::Connection {
    let trace = Trace::load(&scenario_dir().join(format!("{name}.trace"))).expect("trace parses");
    let result = run_in_process(&trace, dir).await.expect("runs");
    assert!(result.mismatches.is_empty(), "{name}: {:#?}", result.mismatches);
    rusqlite::Connection::open(dir.join("replay.db")).expect("db")
}

fn only_alarm(conn: &rusqlite::Connection) -> (i64, String) {
    conn.query_row("SELECT id, public_id FROM alarms", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("one alarm")
}

fn detail_events(conn: &rusqlite::Connection, public_id: &str) -> Vec<meldkamer::operator::queries::EventRow> {
    meldkamer::operator::queries::alarm_detail_public(conn, public_id)
        .expect("detail")
        .expect("alarm")
        .events
}

/// What an operator's detail view lists for an alarm: its own events (linked on the event
/// rows, a chain from the newest), the newest 200 of a flood in order, a restore linked as a
/// secondary event, and links written before schema version 7 (`alarm_events` only).
#[tokio::test]
async fn an_alarm_lists_its_own_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conn = replayed("flood-1000", dir.path()).await;
    let (alarm_id, public_id) = only_alarm(&conn);
    let events = detail_events(&conn, &public_id);
    assert_eq!(events.len(), 200, "the newest 200 of 1,000");
    let newest: Vec<String> = {
        let mut stmt = conn
            .prepare(
                "SELECT strftime('%Y-%m-%dT%H:%M:%fZ', received_ms / 1000.0, 'unixepoch') FROM events
                 ORDER BY id DESC LIMIT 200",
            )
            .expect("query");
        let mut v: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("rows");
        v.reverse();
        v
    };
    assert_eq!(
        events.iter().map(|e| e.received.clone()).collect::<Vec<_>>(),
        newest,
        "oldest first, the newest 200 stored events"
    );
    let linked: i64 = conn
        .query_row("SELECT count(*) FROM events WHERE alarm_id = ?1", [alarm_id], |r| {
            r.get(0)
        })
        .expect("count");
    assert_eq!(linked, 1000, "every event of the flood is linked to the alarm");

    // An alarm from before version 7: no chain, its links in alarm_events only.
    conn.execute_batch(&format!(
        "UPDATE alarms SET last_event_id = NULL;
         UPDATE events SET alarm_id = NULL, alarm_prev = NULL;
         INSERT INTO alarm_events (alarm_id, event_id) SELECT {alarm_id}, id FROM events ORDER BY id LIMIT 3;"
    ))
    .expect("legacy links");
    assert_eq!(detail_events(&conn, &public_id).len(), 3);

    let dir = tempfile::tempdir().expect("tempdir");
    let conn = replayed("burglary-restore", dir.path()).await;
    let (_, public_id) = only_alarm(&conn);
    let events = detail_events(&conn, &public_id);
    let qualifiers: Vec<&str> = events.iter().map(|e| e.qualifier.as_str()).collect();
    assert_eq!(qualifiers, ["new", "restore"], "{events:#?}");
}

// ---------------------------------------------------------------------------------------------
// Schedules (fixtures/records/schedules.toml: shop S-3001 mon-sat 08:00-22:00 grace 15, checked
// for every kind; bakery S-3002 daily 22:00-06:00 grace 10; bar S-3004 daily 18:00-02:30 grace
// 15; all Europe/Amsterdam).

/// The alarms of a schedule category, as (title, opened, restored).
fn schedule_alarms(o: &Value, category: &str) -> Vec<(String, String, bool)> {
    alarms(o)
        .iter()
        .filter(|a| a["category"] == category)
        .map(|a| {
            (
                a["title"].as_str().expect("title").to_string(),
                a["opened"].as_str().expect("opened").to_string(),
                a["restored"] == true,
            )
        })
        .collect()
}

fn schedule_log(o: &Value) -> Vec<String> {
    o["schedule_log"]
        .as_array()
        .map(|l| l.iter().map(|x| x.as_str().expect("text").to_string()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn schedule_late_to_close_at_close_plus_grace_and_restored_when_armed() {
    let o = run("schedule-late-to-close").await;
    assert_eq!(
        schedule_alarms(&o, "late_to_close"),
        [(
            "Late to close: not armed by 22:15 CET".to_string(),
            "2026-01-15T21:15:00.000Z".to_string(),
            true
        )]
    );
    assert_eq!(alarms(&o).len(), 1, "nothing else: {o:#}");
    let a = &alarms(&o)[0];
    assert_eq!(a["queue"], "operator");
    // Priority 5 (a site left open), escalated by one: nobody acknowledged it in a minute.
    assert_eq!(
        (a["priority"].as_i64(), a["escalated"].as_bool()),
        (Some(4), Some(true))
    );
}

#[tokio::test]
async fn schedule_late_to_open_where_the_site_asks_for_it() {
    let o = run("schedule-late-to-open").await;
    assert_eq!(
        schedule_alarms(&o, "late_to_open"),
        [(
            "Late to open: not disarmed by 08:15 CET".to_string(),
            "2026-01-16T07:15:00.000Z".to_string(),
            true
        )]
    );
    assert_eq!(alarms(&o).len(), 1, "{o:#}");
}

#[tokio::test]
async fn schedule_unexpected_opening_is_raised_as_the_opening_is_stored() {
    let o = run("schedule-unexpected-opening").await;
    assert_eq!(
        schedule_alarms(&o, "unexpected_opening"),
        [(
            "Unexpected opening at 03:00 CET by user 5, outside the schedule".to_string(),
            "2026-01-18T02:00:00.000Z".to_string(),
            true
        )]
    );
    let a = &alarms(&o)[0];
    // Priority 4 (someone may have a stolen code), escalated by one.
    assert_eq!(
        (a["priority"].as_i64(), a["escalated"].as_bool()),
        (Some(3), Some(true))
    );
    assert_eq!(a["events"], 0, "the opening is a secondary link, not a joined event");
}

#[tokio::test]
async fn schedule_early_close_where_the_site_asks_for_it() {
    let o = run("schedule-early-close").await;
    assert_eq!(
        schedule_alarms(&o, "early_close"),
        [(
            "Early close at 16:00 CET by user 5: the window is open until 22:00 CET".to_string(),
            "2026-01-15T15:00:00.000Z".to_string(),
            true
        )]
    );
    assert_eq!(alarms(&o).len(), 1, "{o:#}");
}

#[tokio::test]
async fn schedule_window_across_midnight() {
    let o = run("schedule-across-midnight").await;
    assert_eq!(
        schedule_alarms(&o, "late_to_close"),
        [(
            "Late to close: not armed by 06:10 CET".to_string(),
            "2026-01-16T05:10:00.000Z".to_string(),
            true
        )]
    );
    assert_eq!(alarms(&o).len(), 1, "an opening 5 minutes early is in grace: {o:#}");
}

#[tokio::test]
async fn schedule_daylight_saving_starts_close_in_the_skipped_hour() {
    let o = run("schedule-dst-start").await;
    assert_eq!(
        schedule_alarms(&o, "late_to_close"),
        [(
            "Late to close: not armed by 03:15 CEST".to_string(),
            "2026-03-29T01:15:00.000Z".to_string(),
            true
        )]
    );
}

#[tokio::test]
async fn schedule_daylight_saving_ends_close_at_the_first_of_two() {
    let o = run("schedule-dst-end").await;
    assert_eq!(
        schedule_alarms(&o, "late_to_close"),
        [(
            "Late to close: not armed by 02:45 CEST".to_string(),
            "2026-10-25T00:45:00.000Z".to_string(),
            true
        )]
    );
}

#[tokio::test]
async fn schedule_holiday_is_closed_and_an_exception_has_its_own_hours() {
    let o = run("schedule-holiday").await;
    assert_eq!(
        schedule_alarms(&o, "unexpected_opening"),
        [(
            "Unexpected opening at 10:00 CEST by user 5, outside the schedule".to_string(),
            "2026-04-06T08:00:00.000Z".to_string(),
            true
        )]
    );
    assert_eq!(
        alarms(&o).len(),
        1,
        "the exception's opening and closing raise nothing: {o:#}"
    );
}

#[tokio::test]
async fn schedule_an_operators_extension_restores_and_ends_by_itself() {
    let o = run("schedule-extension").await;
    let late = schedule_alarms(&o, "late_to_close");
    assert_eq!(late.len(), 1, "the second lateness joins the same alarm: {late:?}");
    assert_eq!(late[0].1, "2026-01-15T21:15:00.000Z");
    assert!(late[0].2, "restored when armed");
    let log: Vec<String> = schedule_log(&o)
        .into_iter()
        .filter(|l| !l.contains(" escalated "))
        .collect();
    let actions: Vec<&str> = log.iter().map(|l| l.split(' ').nth(2).unwrap_or("")).collect();
    assert_eq!(
        actions,
        ["opened", "extended", "restored", "repeated", "restored"],
        "{log:#?}"
    );
    assert!(
        log[1].contains("replay extended")
            && log[1].contains("extended until 23:30 CET by replay: we are doing inventory"),
        "{}",
        log[1]
    );
    assert!(log[3].contains("not armed by 23:45 CET"), "{}", log[3]);
}

#[tokio::test]
async fn schedule_lateness_joins_an_open_alarm_of_the_site_visibly() {
    let o = run("schedule-joins-alarm").await;
    let a = alarms(&o);
    assert_eq!(a.len(), 1, "no alarm of its own: {a:#?}");
    assert_eq!(a[0]["category"], "burglary", "the burglary keeps its category");
    assert_eq!(a[0]["priority"], 2, "3, escalated; not changed by the join");
    let log = schedule_log(&o);
    assert_eq!(log.len(), 2, "{log:#?}");
    assert!(
        log[0].contains("system late_to_close on \"Burglary alarm"),
        "{}",
        log[0]
    );
    assert!(
        log[0].contains("Late to close: not armed by 22:15 CET (joins this alarm)"),
        "{}",
        log[0]
    );
    assert!(log[1].contains("late_to_close_ended") && log[1].contains("armed at 22:20 CET by user 5"));
}

#[tokio::test]
async fn schedule_lateness_survives_a_restart() {
    let o = run("schedule-restart").await;
    assert_eq!(
        schedule_alarms(&o, "late_to_close"),
        [(
            "Late to close: not armed by 22:15 CET".to_string(),
            "2026-01-15T21:30:00.000Z".to_string(),
            true
        )],
        "raised once, at start-up"
    );
}

// ---------------------------------------------------------------------------------------------
// On test and out of service.

#[tokio::test]
async fn service_a_test_period_raises_nothing_and_ends_with_a_summary() {
    let o = run("service-test-period").await;
    let a = alarms(&o);
    let summary: Vec<&Value> = a.iter().filter(|x| x["category"] == "test").collect();
    assert_eq!(summary.len(), 1, "{a:#?}");
    assert_eq!(summary[0]["queue"], "supervisor");
    assert_eq!(
        summary[0]["opened"], "2026-01-15T10:00:00.000Z",
        "at the test's end, by itself"
    );
    assert_eq!(
        summary[0]["title"],
        "Test of site S-3001 ended: 5 event(s): 1x Burglary alarm, 1x Burglary alarm restore, 2x Closing, 1x Opening"
    );
    // What the test held back: the closing at 10:50 that lasts is an early close at 11:00.
    assert_eq!(
        schedule_alarms(&o, "early_close"),
        [(
            "Early close at 10:50 CET by user 5: the window is open until 22:00 CET".to_string(),
            "2026-01-15T10:00:00.000Z".to_string(),
            true
        )]
    );
    let burglary: Vec<&Value> = a.iter().filter(|x| x["category"] == "burglary").collect();
    assert_eq!(burglary.len(), 1, "only the one after the test: {a:#?}");
    assert_eq!(burglary[0]["opened"], "2026-01-15T10:06:00.000Z");
    assert_eq!(burglary[0]["queue"], "operator");
    assert_eq!(a.len(), 3, "{a:#?}");
}

#[tokio::test]
async fn service_out_of_service_goes_to_the_supervisor_only() {
    let o = run("service-out-of-service").await;
    let a = alarms(&o);
    let supervisor: Vec<(&str, &str, i64)> = a
        .iter()
        .filter(|x| x["queue"] == "supervisor")
        .map(|x| {
            (
                x["category"].as_str().expect("c"),
                x["title"].as_str().expect("t"),
                x["events"].as_i64().expect("n"),
            )
        })
        .collect();
    assert_eq!(
        supervisor,
        [
            ("burglary", "Out of service: Burglary alarm, zone 3", 2),
            ("fire", "Out of service: Fire alarm, zone 9", 1)
        ],
        "one item per category, never a fire joined to a burglary"
    );
    let operator: Vec<(&str, &str)> = a
        .iter()
        .filter(|x| x["queue"] == "operator")
        .map(|x| (x["category"].as_str().expect("c"), x["opened"].as_str().expect("o")))
        .collect();
    assert_eq!(
        operator,
        [
            ("unexpected_opening", "2026-01-15T13:30:00.000Z"),
            ("burglary", "2026-01-15T13:40:00.000Z")
        ],
        "nothing for the operators while out of service; after it the site is open outside its hours"
    );
}

/// An out-of-service period ends by itself at its time (nobody ends it): what came in before
/// went to the supervisor, what comes after is the operators' again, and the opening outside
/// the hours it held back is raised at its end (the timer structure's end of the period).
#[tokio::test]
async fn service_out_of_service_ends_by_itself() {
    let o = run("service-out-of-service-expires").await;
    let a = alarms(&o);
    let queue_of = |q: &str| -> Vec<(String, String)> {
        a.iter()
            .filter(|x| x["queue"] == q)
            .map(|x| {
                (
                    x["category"].as_str().unwrap_or("").to_string(),
                    x["opened"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    };
    assert_eq!(
        queue_of("supervisor"),
        [
            ("burglary".to_string(), "2026-01-15T11:30:00.000Z".to_string()),
            ("fire".to_string(), "2026-01-15T11:31:00.000Z".to_string())
        ]
    );
    assert_eq!(
        queue_of("operator"),
        [
            ("unexpected_opening".to_string(), "2026-01-15T12:00:00.000Z".to_string()),
            ("burglary".to_string(), "2026-01-15T12:40:00.000Z".to_string())
        ],
        "held back until 12:00Z, nothing held back after"
    );
}
