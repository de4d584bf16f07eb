//! Object-level authorisation over the real operator API (the bug class of the 2024 incident,
//! CWE-639): every operation, by every role, against every class of object. The expected
//! outcomes are written out here by hand, not computed by the function under test.
//!
//! Regression: an operator could not read a supervisor-queue alarm, but `note`, `acknowledge`,
//! `start` and `close` on its id succeeded, so a lockout alert could be closed away by the
//! operator it was about.

use std::collections::HashSet;

use meldkamer::correlate::alarms::{self, AlarmSpec, Queue};
use meldkamer::operator::protocol::Op;
use meldkamer::protocol::codes::Category;
use serde_json::{Value, json};

use crate::common::TestDaemon;
use crate::operator::{Api, PASSWORD, daemon_with_operators, socket};

/// The classes of object a request can name.
const CLASSES: [&str; 5] = ["own", "supervisor", "closed", "unknown", "taken"];

/// What each role gets, per operation and class: ok, forbidden, not_found, conflict, invalid.
/// `-` for operations that name no alarm (the class does not apply; the first cell counts).
#[rustfmt::skip]
const EXPECTED: &[(&str, &str, [&str; 5])] = &[
    //  op             role          own        supervisor   closed      unknown      taken (by otto)
    ("alarm",        "operator",   ["ok",        "not_found", "ok",       "not_found", "ok"]),
    ("alarm",        "supervisor", ["ok",        "ok",        "ok",       "not_found", "ok"]),
    ("alarm",        "admin",      ["ok",        "ok",        "ok",       "not_found", "ok"]),
    ("acknowledge",  "operator",   ["ok",        "not_found", "conflict", "not_found", "conflict"]),
    ("acknowledge",  "supervisor", ["ok",        "ok",        "conflict", "not_found", "conflict"]),
    ("acknowledge",  "admin",      ["ok",        "ok",        "conflict", "not_found", "conflict"]),
    ("start",        "operator",   ["ok",        "not_found", "conflict", "not_found", "conflict"]),
    ("start",        "supervisor", ["ok",        "ok",        "conflict", "not_found", "conflict"]),
    ("start",        "admin",      ["ok",        "ok",        "conflict", "not_found", "conflict"]),
    ("takeover",     "operator",   ["forbidden", "forbidden", "forbidden", "forbidden", "forbidden"]),
    ("takeover",     "supervisor", ["ok",        "ok",        "conflict", "not_found", "ok"]),
    ("takeover",     "admin",      ["ok",        "ok",        "conflict", "not_found", "ok"]),
    ("release",      "operator",   ["conflict",  "not_found", "conflict", "not_found", "conflict"]),
    ("release",      "supervisor", ["conflict",  "conflict",  "conflict", "not_found", "ok"]),
    ("release",      "admin",      ["conflict",  "conflict",  "conflict", "not_found", "ok"]),
    ("note",         "operator",   ["ok",        "not_found", "conflict", "not_found", "conflict"]),
    ("note",         "supervisor", ["ok",        "ok",        "conflict", "not_found", "conflict"]),
    ("note",         "admin",      ["ok",        "ok",        "conflict", "not_found", "conflict"]),
    // A supervisor item has no procedure: its step 1 does not exist.
    ("step",         "operator",   ["ok",        "not_found", "conflict", "not_found", "conflict"]),
    ("step",         "supervisor", ["ok",        "invalid",   "conflict", "not_found", "conflict"]),
    ("step",         "admin",      ["ok",        "invalid",   "conflict", "not_found", "conflict"]),
    // The contact is the own alarm's customer's: on a supervisor item it is nobody's.
    ("call",         "operator",   ["ok",        "not_found", "conflict", "not_found", "conflict"]),
    ("call",         "supervisor", ["ok",        "not_found", "conflict", "not_found", "conflict"]),
    ("call",         "admin",      ["ok",        "not_found", "conflict", "not_found", "conflict"]),
    // A supervisor item has no customer: no contact can cancel it.
    ("verify",       "operator",   ["ok",        "not_found", "conflict", "not_found", "conflict"]),
    ("verify",       "supervisor", ["ok",        "conflict",  "conflict", "not_found", "conflict"]),
    ("verify",       "admin",      ["ok",        "conflict",  "conflict", "not_found", "conflict"]),
    ("recall",       "operator",   ["ok",        "not_found", "conflict", "not_found", "conflict"]),
    ("recall",       "supervisor", ["ok",        "ok",        "conflict", "not_found", "conflict"]),
    ("recall",       "admin",      ["ok",        "ok",        "conflict", "not_found", "conflict"]),
    ("close",        "operator",   ["ok",        "not_found", "conflict", "not_found", "conflict"]),
    ("close",        "supervisor", ["ok",        "ok",        "conflict", "not_found", "conflict"]),
    ("close",        "admin",      ["ok",        "ok",        "conflict", "not_found", "conflict"]),
    ("logout",       "operator",   ["ok", "-", "-", "-", "-"]),
    ("logout",       "supervisor", ["ok", "-", "-", "-", "-"]),
    ("logout",       "admin",      ["ok", "-", "-", "-", "-"]),
    ("whoami",       "operator",   ["ok", "-", "-", "-", "-"]),
    ("whoami",       "supervisor", ["ok", "-", "-", "-", "-"]),
    ("whoami",       "admin",      ["ok", "-", "-", "-", "-"]),
    ("queue",        "operator",   ["ok", "-", "-", "-", "-"]),
    ("queue",        "supervisor", ["ok", "-", "-", "-", "-"]),
    ("queue",        "admin",      ["ok", "-", "-", "-", "-"]),
    ("bulk_acknowledge", "operator",   ["forbidden", "-", "-", "-", "-"]),
    ("bulk_acknowledge", "supervisor", ["ok", "-", "-", "-", "-"]),
    ("bulk_acknowledge", "admin",      ["ok", "-", "-", "-", "-"]),
    ("bulk_close",   "operator",   ["forbidden", "-", "-", "-", "-"]),
    ("bulk_close",   "supervisor", ["ok", "-", "-", "-", "-"]),
    ("bulk_close",   "admin",      ["ok", "-", "-", "-", "-"]),
    ("supervision",  "operator",   ["ok", "-", "-", "-", "-"]),
    ("supervision",  "supervisor", ["ok", "-", "-", "-", "-"]),
    ("supervision",  "admin",      ["ok", "-", "-", "-", "-"]),
    ("search",       "operator",   ["ok", "-", "-", "-", "-"]),
    ("search",       "supervisor", ["ok", "-", "-", "-", "-"]),
    ("search",       "admin",      ["ok", "-", "-", "-", "-"]),
    ("subscribe",    "operator",   ["ok", "-", "-", "-", "-"]),
    ("subscribe",    "supervisor", ["ok", "-", "-", "-", "-"]),
    ("subscribe",    "admin",      ["ok", "-", "-", "-", "-"]),
    ("handover_add", "operator",   ["ok", "-", "-", "-", "-"]),
    ("handover_add", "supervisor", ["ok", "-", "-", "-", "-"]),
    ("handover_add", "admin",      ["ok", "-", "-", "-", "-"]),
    ("handovers",    "operator",   ["ok", "-", "-", "-", "-"]),
    ("handovers",    "supervisor", ["ok", "-", "-", "-", "-"]),
    ("handovers",    "admin",      ["ok", "-", "-", "-", "-"]),
    // An unknown contact: the role passes, the object does not exist.
    ("reset_code",   "operator",   ["forbidden", "-", "-", "-", "-"]),
    ("reset_code",   "supervisor", ["not_found", "-", "-", "-", "-"]),
    ("reset_code",   "admin",      ["not_found", "-", "-", "-", "-"]),
    ("operators",    "operator",   ["forbidden", "-", "-", "-", "-"]),
    ("operators",    "supervisor", ["forbidden", "-", "-", "-", "-"]),
    ("operators",    "admin",      ["ok", "-", "-", "-", "-"]),
    ("schedules",    "operator",   ["ok", "-", "-", "-", "-"]),
    ("schedules",    "supervisor", ["ok", "-", "-", "-", "-"]),
    ("schedules",    "admin",      ["ok", "-", "-", "-", "-"]),
    // S-1001 has a schedule (imported by the test): any operator extends it.
    ("extend",       "operator",   ["ok", "-", "-", "-", "-"]),
    ("extend",       "supervisor", ["ok", "-", "-", "-", "-"]),
    ("extend",       "admin",      ["ok", "-", "-", "-", "-"]),
    // On test: the admin's replaces the supervisor's.
    ("service",      "operator",   ["forbidden", "-", "-", "-", "-"]),
    ("service",      "supervisor", ["ok", "-", "-", "-", "-"]),
    ("service",      "admin",      ["ok", "-", "-", "-", "-"]),
    // Account 2345 is never on test here: nothing to end.
    ("service_end",  "operator",   ["forbidden", "-", "-", "-", "-"]),
    ("service_end",  "supervisor", ["conflict", "-", "-", "-", "-"]),
    ("service_end",  "admin",      ["conflict", "-", "-", "-", "-"]),
];

/// A schedule for S-1001, so that `extend` has something to extend.
const SCHEDULE: &str = "[[schedule]]\nsite = \"S-1001\"\ntime_zone = \"Europe/Amsterdam\"\n\
    [[schedule_window]]\nsite = \"S-1001\"\ndays = \"mon-sat\"\nopen = \"08:00\"\nclose = \"18:00\"\ngrace = 15\n";

/// 14:00 UTC on the test daemon's day (its clock stands at 12:00 UTC).
const TWO_HOURS_ON: i64 = 1_768_485_600_000;

const LOGIN: &[(&str, &str)] = &[("operator", "olga"), ("supervisor", "sam"), ("admin", "ada")];

/// Creates the objects of each class straight in the database (as the writer would), each
/// with a key of its own so no two cases share an alarm.
struct Objects {
    conn: rusqlite::Connection,
    site: i64,
    next: u32,
}

impl Objects {
    fn new(d: &TestDaemon) -> Objects {
        let conn = meldkamer::store::open_write(&d.db_path(), std::time::Duration::from_secs(5)).expect("db");
        let site = conn
            .query_row("SELECT id FROM sites WHERE ref = 'S-1001'", [], |r| r.get(0))
            .expect("site");
        Objects { conn, site, next: 0 }
    }

    fn make(&mut self, class: &str) -> String {
        self.next += 1;
        let n = self.next;
        if class == "unknown" {
            return format!("{:032x}", 0xdead_0000_u64 + u64::from(n));
        }
        let spec = if class == "supervisor" {
            AlarmSpec::supervisor("9999", format!("acct:9999/case:{n}"), "Unknown account 9999", 4)
        } else {
            AlarmSpec {
                queue: Queue::Operator,
                site_id: Some(self.site),
                account_id: None,
                account: "1234".into(),
                join_key: format!("zone:{}/burglary", 500 + n),
                category: Some(Category::Burglary),
                priority: 3,
                title: format!("Burglary alarm, zone {}", 500 + n),
                zone: Some(format!("{}", 500 + n)),
                area: None,
                duress: false,
                source_frame: None,
            }
        };
        let tx = self.conn.transaction().expect("tx");
        let id = alarms::open_or_join(&tx, &spec, false, 1_768_478_400_000)
            .expect("alarm")
            .id;
        match class {
            "closed" => {
                tx.execute(
                    "UPDATE alarms SET state = 'closed', disposition = 'test' WHERE id = ?1",
                    [id],
                )
                .expect("close");
            }
            "taken" => {
                tx.execute(
                    "UPDATE alarms SET state = 'in_progress', owner = 'otto', in_progress_by = 'otto' WHERE id = ?1",
                    [id],
                )
                .expect("take");
            }
            _ => {}
        }
        tx.commit().expect("commit");
        self.conn
            .query_row("SELECT public_id FROM alarms WHERE id = ?1", [id], |r| r.get(0))
            .expect("public id")
    }
}

fn request(op: &str, alarm: &str, contact: &str, bulk_target: &str) -> Value {
    match op {
        "alarm" | "acknowledge" | "start" | "release" => json!({"op": op, "alarm": alarm}),
        "takeover" => json!({"op": op, "alarm": alarm, "reason": "the handler went home ill"}),
        "note" => json!({"op": op, "alarm": alarm, "text": "called the keyholder"}),
        "step" => json!({"op": op, "alarm": alarm, "step": 1, "done": true}),
        "call" => json!({"op": op, "alarm": alarm, "contact": contact, "outcome": "no_answer"}),
        "verify" => json!({"op": op, "alarm": alarm, "contact": contact, "code": "000000"}),
        "recall" => json!({"op": op, "alarm": alarm, "minutes": 10}),
        "close" => json!({"op": op, "alarm": alarm, "disposition": "dispatched"}),
        "bulk_acknowledge" => json!({"op": op, "alarms": [bulk_target], "reason": "storm: mass event"}),
        "bulk_close" => {
            json!({"op": op, "alarms": [bulk_target], "disposition": "technical_fault", "reason": "storm: mass event"})
        }
        "search" => json!({"op": op, "query": "Proefstraat"}),
        "handover_add" => json!({"op": op, "text": "keyholder of S-1001 on holiday until Friday"}),
        "reset_code" => json!({"op": op, "contact": "0".repeat(32)}),
        "extend" => json!({"op": op, "site": "S-1001", "until_ms": TWO_HOURS_ON, "reason": "we stay late tonight"}),
        "service" => json!({"op": op, "site": "S-1001", "mode": "test", "until_ms": TWO_HOURS_ON,
                            "reason": "installer replaces the back door detector"}),
        "service_end" => json!({"op": op, "account": "2345"}),
        _ => json!({"op": op}),
    }
}

fn outcome(r: &Value) -> String {
    if r["ok"] == json!(true) {
        "ok".into()
    } else {
        r["error"]["kind"].as_str().unwrap_or("?").to_string()
    }
}

#[tokio::test]
async fn every_operation_against_every_role_and_object_class() {
    let mut d = daemon_with_operators().await;
    crate::common::import(&d.cfg, SCHEDULE);
    let path = socket(&d);
    let mut objects = Objects::new(&d);
    let contact: String = objects
        .conn
        .query_row("SELECT public_id FROM contacts WHERE ref = 'K-1001-1'", [], |r| {
            r.get(0)
        })
        .expect("contact");
    // Every request the API knows is in the table, for every role.
    let ops: HashSet<&str> = EXPECTED.iter().map(|e| e.0).collect();
    for op in Op::ALL {
        if op == Op::Login {
            continue;
        }
        assert!(ops.contains(op.as_str()), "{} is not in the table", op.as_str());
        for (role, _) in LOGIN {
            assert!(
                EXPECTED.iter().any(|e| e.0 == op.as_str() && e.1 == *role),
                "{} for {role} is not in the table",
                op.as_str()
            );
        }
    }
    let mut failures = Vec::new();
    for (op, role, expected) in EXPECTED {
        let name = LOGIN.iter().find(|l| l.0 == *role).map(|l| l.1).expect("role");
        for (class, want) in CLASSES.iter().zip(expected) {
            if *want == "-" {
                continue;
            }
            // A fresh session and fresh objects per case: an action changes its object, and
            // logout ends its session.
            let mut api = Api::connect(&path).await;
            assert_eq!(api.login(name, PASSWORD).await["ok"], true);
            let alarm = objects.make(class);
            let bulk_target = objects.make("own");
            let r = api.call(request(op, &alarm, &contact, &bulk_target)).await;
            let got = outcome(&r);
            if got != *want {
                failures.push(format!("{op} by {role} on {class}: expected {want}, got {got}: {r}"));
            }
            // The answer has the result type of its request (the console reads it so).
            if got == "ok" {
                let parsed: Op = serde_json::from_value(json!(op)).expect("op");
                let reply = parsed.decode(r["result"].clone());
                assert!(reply.is_ok(), "{op}: {r}");
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Every refusal on an alarm is audited with who tried.
    let refused: i64 = objects
        .conn
        .query_row(
            "SELECT count(*) FROM audit_log WHERE actor = 'olga' AND result LIKE 'refused: not_found%'",
            [],
            |r| r.get(0),
        )
        .expect("audit");
    assert!(refused >= 10, "refusals audited: {refused}");
    d.stop().await;
}

/// The finding as reported: an operator closes away the lockout alert about themselves.
#[tokio::test]
async fn an_operator_cannot_act_on_a_supervisor_item_it_cannot_read() {
    let mut d = daemon_with_operators().await;
    let mut objects = Objects::new(&d);
    let item = objects.make("supervisor");
    let mut api = Api::connect(&socket(&d)).await;
    assert_eq!(api.login("olga", PASSWORD).await["ok"], true);
    for req in [
        json!({"op": "alarm", "alarm": item}),
        json!({"op": "note", "alarm": item, "text": "nothing to see"}),
        json!({"op": "acknowledge", "alarm": item}),
        json!({"op": "start", "alarm": item}),
        json!({"op": "close", "alarm": item, "disposition": "other", "note": "gone"}),
    ] {
        let r = api.call(req.clone()).await;
        assert_eq!(r["error"]["kind"], "not_found", "{req}: {r}");
    }
    let state: String = objects
        .conn
        .query_row("SELECT state FROM alarms WHERE public_id = ?1", [&item], |r| r.get(0))
        .expect("state");
    assert_eq!(state, "new", "the item is untouched");
    d.stop().await;
}
