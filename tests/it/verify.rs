//! Phone cancellation codes (`src/verify`, `meldkamer code`, `meldkamer audit`): verification
//! verdicts, lockout, duress, bulk invalidation, the two-factor rule, the audit chain, the
//! equal work of every verification, the keypad-code-free schema, and the leak test.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use meldkamer::cli::code::{self as code_cli, Source};
use meldkamer::config::Config;
use meldkamer::correlate::alarms::{self, ActionError, AlarmSpec, Disposition, Queue};
use meldkamer::protocol::codes::Category;
use meldkamer::verify::attempt::{VerifyRequest, verify_blocking};
use meldkamer::verify::audit::{self, Break};
use meldkamer::verify::codes::{self, Kind, Selector};
use meldkamer::verify::{Answer, Code, Cost, Hasher, Limits, Verdict};
use rusqlite::{Connection, params};

use crate::common::{T0, TestDaemon, plain, tcp_exchange};

/// The fixed "now" of these tests, Unix ms.
/// `meldkamer code set` by supervisor sup1 with `stdin` as its standard input.
fn set_by_stdin(cfg: &Config, contact: &str, kind: Kind, stdin: &str) -> Result<(), code_cli::CodeError> {
    let mut input = std::io::Cursor::new(stdin.as_bytes().to_vec());
    code_cli::set(cfg, contact, kind, Source::Stdin(&mut input), "sup1", &mut Vec::new())
}

fn t0() -> i64 {
    meldkamer::clock::unix_ms(T0)
}

const RECORDS: &str = r#"
[[customer]]
ref = "C1"
name = "Synthetic BV"
[[customer]]
ref = "C2"
name = "Other BV"
[[site]]
ref = "S1"
customer = "C1"
address = "Teststraat 1"
[[site]]
ref = "S2"
customer = "C2"
address = "Teststraat 2"
[[account]]
account = "1234"
site = "S1"
[[account]]
account = "4321"
site = "S2"
[[zone]]
site = "S1"
number = "3"
description = "Back door"
[[user]]
site = "S1"
number = "5"
name = "A. Tester"
[[contact]]
ref = "K1"
customer = "C1"
name = "A. Keyholder"
phones = ["+31 20 000 0001"]
may_cancel = true
[[contact]]
ref = "K2"
customer = "C1"
name = "B. Keyholder"
phones = ["+31 20 000 0002"]
may_cancel = true
[[contact]]
ref = "K3"
customer = "C1"
name = "C. Neighbour"
phones = ["+31 20 000 0003"]
may_cancel = false
[[contact]]
ref = "K9"
customer = "C2"
name = "Z. Keyholder"
phones = ["+31 20 000 0009"]
may_cancel = true
"#;

/// Codes used by the tests (synthetic). None is a substring of the test times.
const CANCEL: &str = "583947";
const DURESS: &str = "906152";
const WRONG: &str = "719364";
const OTHER: &str = "274816";

struct Fixture {
    _dir: tempfile::TempDir,
    cfg: Config,
    conn: Connection,
    hasher: Hasher,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = TestDaemon::config(dir.path());
        cfg.codes.argon2_memory_kib = Cost::FLOOR.memory_kib;
        cfg.codes.argon2_iterations = Cost::FLOOR.iterations;
        crate::common::import(&cfg, RECORDS);
        let hasher = meldkamer::verify::hasher_from_config(&cfg).expect("hasher");
        let conn = meldkamer::store::open_write(&cfg.store.path, Duration::from_secs(5)).expect("db");
        Fixture {
            _dir: dir,
            cfg,
            conn,
            hasher,
        }
    }

    fn reopen(&mut self) {
        self.conn = meldkamer::store::open_write(&self.cfg.store.path, Duration::from_secs(5)).expect("db");
        self.hasher = meldkamer::verify::hasher_from_config(&self.cfg).expect("hasher");
    }

    fn id(&self, table: &str, reference: &str) -> i64 {
        self.conn
            .query_row(&format!("SELECT id FROM {table} WHERE ref = ?1"), [reference], |r| {
                r.get(0)
            })
            .expect("id")
    }

    fn public_id(&self, table: &str, reference: &str) -> String {
        self.conn
            .query_row(
                &format!("SELECT public_id FROM {table} WHERE ref = ?1"),
                [reference],
                |r| r.get(0),
            )
            .expect("public id")
    }

    /// Open a burglary alarm on a site; returns (row id, public id).
    fn alarm(&mut self, site: &str, zone: &str) -> (i64, String) {
        let site_id = self.id("sites", site);
        let tx = self.conn.transaction().expect("tx");
        let id = alarms::open_or_join(
            &tx,
            &AlarmSpec {
                queue: Queue::Operator,
                site_id: Some(site_id),
                account_id: None,
                account: if site == "S1" { "1234" } else { "4321" }.into(),
                join_key: format!("zone:{zone}"),
                category: Some(Category::Burglary),
                priority: 3,
                title: "Burglary".into(),
                zone: Some(zone.into()),
                area: None,
                duress: false,
                source_frame: None,
            },
            false,
            t0(),
        )
        .expect("alarm")
        .id;
        tx.commit().expect("commit");
        let pid = self
            .conn
            .query_row("SELECT public_id FROM alarms WHERE id = ?1", [id], |r| r.get(0))
            .expect("pid");
        (id, pid)
    }

    fn set(&self, contact: &str, kind: Kind, code: &str) {
        set_by_stdin(&self.cfg, contact, kind, &format!("{code}\n")).expect("set");
    }

    fn verify(&mut self, alarm: &str, contact: &str, candidate: &str) -> Verdict {
        self.verify_as("op1", alarm, contact, candidate)
    }

    fn verify_as(&mut self, op: &str, alarm: &str, contact: &str, candidate: &str) -> Verdict {
        let req = VerifyRequest {
            alarm: alarm.to_string(),
            contact: self.public_id("contacts", contact),
            operator: op.to_string(),
        };
        verify_blocking(
            &mut self.conn,
            &self.hasher,
            &Limits::default(),
            &req,
            Code::new(candidate),
            t0() + 1000,
        )
        .expect("verification runs")
    }

    fn i64(&self, sql: &str) -> i64 {
        self.conn.query_row(sql, [], |r| r.get(0)).expect("query")
    }
}

#[test]
fn right_code_is_accepted_and_wrong_code_rejected() {
    let mut f = Fixture::new();
    f.set("K1", Kind::Cancel, CANCEL);
    let (alarm_id, alarm) = f.alarm("S1", "3");
    assert_eq!(f.verify(&alarm, "K1", WRONG), Verdict::Rejected);
    assert_eq!(f.i64("SELECT consecutive FROM code_failures"), 1, "a reject is counted");
    assert_eq!(f.verify(&alarm, "K1", "58 39 47"), Verdict::Accepted);
    assert_eq!(
        f.i64("SELECT consecutive FROM code_failures"),
        0,
        "an accept ends the run"
    );
    let factors = alarms::factors(&f.conn, alarm_id).expect("factors");
    assert_eq!(factors.phone.map(|p| p.1), Some(Some(f.id("contacts", "K1"))));
    // Every attempt is audited, with the result and the failure count, never the candidate.
    let results: Vec<(String, Option<i64>)> = f
        .conn
        .prepare("SELECT result, failures FROM audit_log WHERE action = 'code_verify' ORDER BY id")
        .expect("stmt")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("collect");
    assert_eq!(
        results,
        vec![("rejected".into(), Some(1)), ("accepted".into(), Some(0))]
    );
    assert_eq!(Verdict::Accepted.answer(), Answer::Verified);
    assert_eq!(Verdict::Rejected.answer(), Answer::NotVerified);
}

#[test]
fn verification_needs_an_open_alarm_of_the_contacts_customer() {
    let mut f = Fixture::new();
    f.set("K1", Kind::Cancel, CANCEL);
    f.set("K9", Kind::Cancel, OTHER);
    let (a1_id, a1) = f.alarm("S1", "3");
    // K9 belongs to C2: on C1's alarm its right code is just a wrong code for nobody.
    assert_eq!(f.verify(&a1, "K9", OTHER), Verdict::Rejected);
    // K3 may not cancel.
    assert_eq!(f.verify(&a1, "K3", CANCEL), Verdict::Rejected);
    let k1 = f.public_id("contacts", "K1");
    let req = |alarm: &str| VerifyRequest {
        alarm: alarm.to_string(),
        contact: k1.clone(),
        operator: "op1".into(),
    };
    let r = req("0123456789abcdef0123456789abcdef");
    let e =
        verify_blocking(&mut f.conn, &f.hasher, &Limits::default(), &r, Code::new(CANCEL), t0()).expect_err("no alarm");
    assert!(matches!(e, meldkamer::verify::VerifyError::NoSuchAlarm), "{e}");
    let tx = f.conn.transaction().expect("tx");
    alarms::close(
        &tx,
        a1_id,
        "op1",
        Disposition::Dispatched,
        Default::default(),
        t0(),
        900_000,
    )
    .expect("close");
    tx.commit().expect("commit");
    let r = req(&a1);
    let before = f.hasher.computations();
    let e =
        verify_blocking(&mut f.conn, &f.hasher, &Limits::default(), &r, Code::new(CANCEL), t0()).expect_err("closed");
    assert!(matches!(e, meldkamer::verify::VerifyError::AlarmClosed), "{e}");
    assert_eq!(f.hasher.computations(), before, "nothing is hashed for a closed alarm");
}

#[test]
fn the_sixth_attempt_is_locked_even_with_the_right_code_and_after_a_restart() {
    let mut f = Fixture::new();
    f.set("K1", Kind::Cancel, CANCEL);
    f.set("K2", Kind::Cancel, OTHER);
    let (alarm_id, alarm) = f.alarm("S1", "3");
    for i in 1..=5 {
        assert_eq!(f.verify(&alarm, "K1", WRONG), Verdict::Rejected, "attempt {i}");
    }
    assert_eq!(f.verify(&alarm, "K1", CANCEL), Verdict::Locked, "6th, right code");
    // Locked for the whole customer, also for another contact with the right code.
    assert_eq!(f.verify(&alarm, "K2", OTHER), Verdict::Locked);
    f.reopen();
    assert_eq!(
        f.verify(&alarm, "K1", CANCEL),
        Verdict::Locked,
        "the lock survives a restart"
    );
    // The supervisor is told; the alarm says to handle it as real; handling is not blocked.
    assert_eq!(
        f.i64("SELECT count(*) FROM alarms WHERE queue = 'supervisor' AND join_key = 'code-lockout:customer:C1'"),
        1
    );
    assert_eq!(
        f.i64("SELECT count(*) FROM audit_log WHERE action = 'code_lockout' AND failures = 5"),
        1
    );
    assert!(f.i64("SELECT count(*) FROM alarm_log WHERE action = 'phone_code_locked'") == 1);
    assert_eq!(alarms::factors(&f.conn, alarm_id).expect("factors").phone, None);
    {
        let tx = f.conn.transaction().expect("tx");
        alarms::start_handling(&tx, alarm_id, alarms::Handler::named("op1"), t0()).expect("handling goes on");
        tx.commit().expect("commit");
    }
    // A supervisor resets the code: unlocked; the contact needs a new code.
    let mut out = Vec::new();
    code_cli::reset(&f.cfg, "K1", "sup1", &mut out).expect("reset");
    let text = String::from_utf8(out).expect("utf8");
    assert!(text.contains("unlocked"), "{text}");
    assert_eq!(
        f.verify(&alarm, "K1", CANCEL),
        Verdict::Rejected,
        "the old code is gone"
    );
    assert_eq!(f.verify(&alarm, "K2", OTHER), Verdict::Accepted);
    f.set("K1", Kind::Cancel, CANCEL);
    assert_eq!(f.verify(&alarm, "K1", CANCEL), Verdict::Accepted);
    assert_eq!(f.i64("SELECT count(*) FROM audit_log WHERE action = 'code_unlock'"), 1);
}

#[test]
fn an_operator_with_many_wrong_codes_alerts_the_supervisor() {
    let mut f = Fixture::new();
    f.set("K1", Kind::Cancel, CANCEL);
    f.set("K9", Kind::Cancel, OTHER);
    let (_, a1) = f.alarm("S1", "3");
    let (_, a2) = f.alarm("S2", "1");
    // 11 wrong codes over two customers and three contacts, no contact reaching its lockout.
    let tries = [
        ("K1", &a1),
        ("K2", &a1),
        ("K9", &a2),
        ("K1", &a1),
        ("K2", &a1),
        ("K9", &a2),
        ("K1", &a1),
        ("K2", &a1),
        ("K9", &a2),
        ("K1", &a1),
    ];
    for (k, a) in tries {
        assert_eq!(f.verify_as("op7", a, k, WRONG), Verdict::Rejected);
    }
    let alert = "SELECT count(*) FROM alarms WHERE queue = 'supervisor' AND join_key = 'code-rejects:operator:op7'";
    assert_eq!(f.i64(alert), 0, "ten is not more than ten");
    assert_eq!(f.verify_as("op7", &a1, "K2", WRONG), Verdict::Rejected);
    assert_eq!(f.i64(alert), 1, "the eleventh wrong code within the hour alerts");
    assert_eq!(
        f.i64("SELECT count(*) FROM audit_log WHERE action = 'supervisor_alert' AND subject = 'operator:op7'"),
        1
    );
    assert_eq!(f.i64("SELECT count(*) FROM code_lockouts"), 0, "no contact reached 5");
}

#[test]
fn duress_escalates_silently_and_can_never_be_a_cancellation() {
    let mut f = Fixture::new();
    f.set("K1", Kind::Cancel, CANCEL);
    f.set("K1", Kind::Duress, DURESS);
    let (alarm_id, alarm) = f.alarm("S1", "3");
    let v = f.verify(&alarm, "K1", DURESS);
    assert_eq!(v, Verdict::Duress);
    assert_eq!(v.answer(), Answer::Verified, "looks like the right code");
    let (duress, priority, category): (bool, i64, String) = f
        .conn
        .query_row(
            "SELECT duress, priority, category FROM alarms WHERE id = ?1",
            [alarm_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("alarm");
    assert!(duress);
    assert_eq!(priority, 1);
    assert_eq!(category, "duress");
    // Even the right code afterwards does not make it a cancellation.
    assert_eq!(f.verify(&alarm, "K1", CANCEL), Verdict::Accepted);
    let tx = f.conn.transaction().expect("tx");
    let e = alarms::close(
        &tx,
        alarm_id,
        "op1",
        Disposition::CancelledByCustomer,
        Default::default(),
        t0() + 2000,
        900_000,
    )
    .expect_err("never cancelled");
    assert_eq!(e, ActionError::Duress);
    alarms::close(
        &tx,
        alarm_id,
        "op1",
        Disposition::Dispatched,
        Default::default(),
        t0() + 2000,
        900_000,
    )
    .expect("dispatch");
    tx.commit().expect("commit");
    assert_eq!(
        f.i64("SELECT count(*) FROM audit_log WHERE action = 'code_verify' AND result = 'duress'"),
        1
    );
    // The duress code may not equal the cancellation code.
    let e = set_by_stdin(&f.cfg, "K1", Kind::Duress, &format!("{CANCEL}\n")).expect_err("same code");
    assert!(matches!(e, code_cli::CodeError::SameAsOther), "{e}");
}

#[test]
fn a_duress_code_escalates_even_when_locked_but_answers_locked() {
    let mut f = Fixture::new();
    f.set("K1", Kind::Cancel, CANCEL);
    f.set("K1", Kind::Duress, DURESS);
    let (alarm_id, alarm) = f.alarm("S1", "3");
    for _ in 0..5 {
        f.verify(&alarm, "K1", WRONG);
    }
    assert_eq!(f.verify(&alarm, "K1", DURESS), Verdict::Locked);
    let duress: bool = f
        .conn
        .query_row("SELECT duress FROM alarms WHERE id = ?1", [alarm_id], |r| r.get(0))
        .expect("alarm");
    assert!(duress, "silently escalated");
}

#[test]
fn invalidated_codes_answer_invalidated_until_set_again() {
    let mut f = Fixture::new();
    f.set("K1", Kind::Cancel, CANCEL);
    f.set("K9", Kind::Cancel, OTHER);
    let (_, a1) = f.alarm("S1", "3");
    let (_, a2) = f.alarm("S2", "1");
    let mut out = Vec::new();
    code_cli::invalidate(&f.cfg, &Selector::Account("1234".into()), "sup1", &mut out).expect("invalidate");
    let text = String::from_utf8(out).expect("utf8");
    assert!(text.contains("invalidated 1 code(s) of 1 contact(s)"), "{text}");
    assert_eq!(f.verify(&a1, "K1", CANCEL), Verdict::Invalidated);
    assert_eq!(f.verify(&a1, "K1", WRONG), Verdict::Invalidated);
    assert_eq!(Verdict::Invalidated.answer(), Answer::Invalidated);
    assert_eq!(
        f.i64("SELECT count(*) FROM code_failures WHERE consecutive > 0"),
        0,
        "not counted"
    );
    assert_eq!(
        f.verify(&a2, "K9", OTHER),
        Verdict::Accepted,
        "other customer untouched"
    );
    f.set("K1", Kind::Cancel, CANCEL);
    assert_eq!(f.verify(&a1, "K1", CANCEL), Verdict::Accepted);
    // Everything, then by customer.
    code_cli::invalidate(&f.cfg, &Selector::All, "sup1", &mut Vec::new()).expect("all");
    assert_eq!(f.verify(&a2, "K9", OTHER), Verdict::Invalidated);
    f.set("K9", Kind::Cancel, OTHER);
    code_cli::invalidate(&f.cfg, &Selector::Customer("C2".into()), "sup1", &mut Vec::new()).expect("customer");
    assert_eq!(f.verify(&a2, "K9", OTHER), Verdict::Invalidated);
    assert_eq!(
        f.i64("SELECT count(*) FROM audit_log WHERE action = 'code_bulk_invalidate'"),
        3
    );
    let e =
        code_cli::invalidate(&f.cfg, &Selector::Customer("NOPE".into()), "sup1", &mut Vec::new()).expect_err("unknown");
    assert!(e.to_string().contains("NOPE"));
}

#[test]
fn every_verification_computes_exactly_two_argon2id_hashes() {
    let mut f = Fixture::new();
    f.set("K1", Kind::Cancel, CANCEL);
    f.set("K1", Kind::Duress, DURESS);
    f.set("K2", Kind::Cancel, OTHER); // no duress code
    let (_, alarm) = f.alarm("S1", "3");
    let cost = |f: &mut Fixture, contact: &str, candidate: &str, expect: Verdict| {
        let before = f.hasher.computations();
        assert_eq!(f.verify(&alarm, contact, candidate), expect, "{contact}");
        f.hasher.computations() - before
    };
    let accepted = cost(&mut f, "K1", CANCEL, Verdict::Accepted);
    let rejected = cost(&mut f, "K1", WRONG, Verdict::Rejected);
    let no_duress_code = cost(&mut f, "K2", OTHER, Verdict::Accepted);
    let no_duress_rejected = cost(&mut f, "K2", WRONG, Verdict::Rejected);
    let not_allowed = cost(&mut f, "K3", CANCEL, Verdict::Rejected);
    let other_customer = cost(&mut f, "K9", CANCEL, Verdict::Rejected);
    let before = f.hasher.computations();
    let req = VerifyRequest {
        alarm: alarm.clone(),
        contact: "ffffffffffffffffffffffffffffffff".into(),
        operator: "op1".into(),
    };
    let v = verify_blocking(
        &mut f.conn,
        &f.hasher,
        &Limits::default(),
        &req,
        Code::new(CANCEL),
        t0(),
    )
    .expect("runs");
    assert_eq!(v, Verdict::Rejected);
    let unknown_contact = f.hasher.computations() - before;
    let duress = cost(&mut f, "K1", DURESS, Verdict::Duress);
    for (case, n) in [
        ("accepted", accepted),
        ("rejected", rejected),
        ("no duress code", no_duress_code),
        ("no duress code, rejected", no_duress_rejected),
        ("contact may not cancel", not_allowed),
        ("contact of another customer", other_customer),
        ("unknown contact", unknown_contact),
        ("duress", duress),
    ] {
        assert_eq!(n, 2, "{case}: {n} Argon2id computations");
    }
}

#[test]
fn codes_below_policy_are_rehashed_on_success() {
    let mut f = Fixture::new();
    f.set("K1", Kind::Cancel, CANCEL);
    let (_, alarm) = f.alarm("S1", "3");
    let k1 = f.id("contacts", "K1");
    let before = codes::stored(&f.conn, k1, Kind::Cancel).expect("read").expect("stored");
    assert!(before.phc.contains("m=19456,t=2,p=1"), "{}", before.phc);
    f.cfg.codes.argon2_memory_kib = 24576;
    f.reopen();
    let n = f.hasher.computations();
    assert_eq!(f.verify(&alarm, "K1", CANCEL), Verdict::Accepted);
    assert_eq!(f.hasher.computations() - n, 3, "two checks and one new verifier");
    let after = codes::stored(&f.conn, k1, Kind::Cancel).expect("read").expect("stored");
    assert!(after.phc.contains("m=24576,t=2,p=1"), "{}", after.phc);
    assert_eq!(f.verify(&alarm, "K1", CANCEL), Verdict::Accepted, "still the same code");
    assert_eq!(f.i64("SELECT count(*) FROM audit_log WHERE action = 'code_rehash'"), 1);
    // A wrong code never re-hashes.
    f.cfg.codes.argon2_memory_kib = 28672;
    f.reopen();
    assert_eq!(f.verify(&alarm, "K1", WRONG), Verdict::Rejected);
    let same = codes::stored(&f.conn, k1, Kind::Cancel).expect("read").expect("stored");
    assert_eq!(same.phc, after.phc);
}

#[test]
fn a_rotated_pepper_still_verifies_and_rehashes_with_the_new_one() {
    let mut f = Fixture::new();
    f.set("K1", Kind::Cancel, CANCEL);
    let (_, alarm) = f.alarm("S1", "3");
    let k1 = f.id("contacts", "K1");
    let old_id = codes::stored(&f.conn, k1, Kind::Cancel)
        .expect("read")
        .expect("stored")
        .pepper_id;
    // Rotate: a new pepper file; the old one retired.
    let old_file = f.cfg.codes.pepper_path(&f.cfg.store);
    f.cfg.codes.pepper_file = old_file.with_extension("pepper2");
    f.cfg.codes.retired_pepper_files = vec![old_file.clone()];
    f.reopen();
    assert_ne!(f.hasher.current_pepper_id(), old_id);
    assert_eq!(f.verify(&alarm, "K1", CANCEL), Verdict::Accepted);
    let now = codes::stored(&f.conn, k1, Kind::Cancel).expect("read").expect("stored");
    assert_eq!(
        now.pepper_id,
        f.hasher.current_pepper_id(),
        "re-hashed with the new pepper"
    );
    // Without the old pepper, while a code made with it is in use, nothing starts; a hasher
    // made without it anyway cannot check that code: invalidated, not rejected.
    f.set("K2", Kind::Cancel, OTHER);
    f.cfg.codes.pepper_file = old_file.with_extension("pepper3");
    f.cfg.codes.retired_pepper_files = vec![];
    assert!(matches!(
        meldkamer::verify::hasher_from_config(&f.cfg),
        Err(meldkamer::verify::SetupError::PepperLost { .. })
    ));
    f.hasher = Hasher::new(
        meldkamer::verify::PepperRing::new(meldkamer::verify::Pepper::from_bytes([9; 32])),
        Cost::FLOOR,
    )
    .expect("hasher");
    assert_eq!(f.verify(&alarm, "K2", OTHER), Verdict::Invalidated);
}

#[test]
fn weak_codes_are_refused_and_generated_codes_printed_once() {
    let mut f = Fixture::new();
    for weak in ["12345", "000000", "123456", "987654", "561234", "121212"] {
        let e = set_by_stdin(&f.cfg, "K1", Kind::Cancel, &format!("{weak}\n")).expect_err(weak);
        assert!(matches!(e, code_cli::CodeError::Weak(_)), "{weak}: {e}");
        assert!(!e.to_string().contains(weak), "{e}");
    }
    assert_eq!(
        f.i64("SELECT count(*) FROM audit_log WHERE action = 'code_set' AND result = 'refused'"),
        6
    );
    assert_eq!(f.i64("SELECT count(*) FROM code_verifiers"), 0);
    let e = set_by_stdin(&f.cfg, "K3", Kind::Cancel, "").expect_err("may not cancel");
    assert!(matches!(e, code_cli::CodeError::MayNotCancel(_)), "{e}");
    let mut out = Vec::new();
    code_cli::set(&f.cfg, "K1", Kind::Cancel, Source::Generate, "sup1", &mut out).expect("generate");
    let text = String::from_utf8(out).expect("utf8");
    let generated: String = text
        .lines()
        .next()
        .and_then(|l| l.rsplit(": ").next())
        .expect("code")
        .to_string();
    assert_eq!(generated.len(), 6, "{text}");
    assert!(generated.bytes().all(|b| b.is_ascii_digit()));
    assert_eq!(text.matches(&generated).count(), 1, "printed once");
    let (_, alarm) = f.alarm("S1", "3");
    assert_eq!(f.verify(&alarm, "K1", &generated), Verdict::Accepted);
}

#[tokio::test]
async fn one_factor_is_not_enough_and_both_close_the_alarm_as_cancelled() {
    let mut d = TestDaemon::start_with(RECORDS, |c| {
        c.codes.argon2_memory_kib = Cost::FLOOR.memory_kib;
    })
    .await;
    let cfg = d.cfg.clone();
    // The pepper was created beside the database, owner-only.
    let pepper = cfg.codes.pepper_path(&cfg.store);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&pepper).expect("pepper").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    set_by_stdin(&cfg, "K1", Kind::Cancel, &format!("{CANCEL}\n")).expect("set");
    let running = d.running.as_ref().expect("running");
    let hasher = meldkamer::verify::hasher_from_config(&cfg).expect("hasher");
    let service = meldkamer::verify::service_from_config(&cfg, hasher, running.shared.writer.clone(), d.clock.clone());
    // A burglary alarm by a real frame.
    let frame = plain(
        meldkamer::protocol::frame::Token::SiaDcs,
        1,
        "1234",
        "#1234|Nri1/BA03",
        None,
    );
    assert!(tcp_exchange(d.tcp(), &frame).await.is_some(), "ACK");
    let (alarm_id, alarm): (i64, String) = {
        let conn = Connection::open(d.db_path()).expect("db");
        conn.query_row(
            "SELECT id, public_id FROM alarms WHERE category = 'burglary'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("alarm")
    };
    let k1: String = {
        let conn = Connection::open(d.db_path()).expect("db");
        conn.query_row("SELECT public_id FROM contacts WHERE ref = 'K1'", [], |r| r.get(0))
            .expect("k1")
    };
    let close = |disposition| {
        let path = d.db_path();
        move || -> Result<(), ActionError> {
            let mut conn = meldkamer::store::open_write(&path, Duration::from_secs(5)).expect("db");
            let tx = conn.transaction().expect("tx");
            alarms::close(
                &tx,
                alarm_id,
                "op1",
                disposition,
                Default::default(),
                t0() + 60_000,
                900_000,
            )?;
            tx.commit().expect("commit");
            Ok(())
        }
    };
    // Phone factor only.
    let answer = service.verify_public(&alarm, &k1, CANCEL, "op1").await.expect("verify");
    assert_eq!(answer, Answer::Verified);
    match close(Disposition::CancelledByCustomer)() {
        Err(ActionError::MissingFactor { missing }) => {
            assert_eq!(missing.len(), 1, "{missing:?}");
            assert!(missing[0].contains("keypad"), "{missing:?}");
        }
        other => panic!("one factor closed the alarm: {other:?}"),
    }
    // The panel disarmed by user 5: both factors.
    let opening = plain(
        meldkamer::protocol::frame::Token::AdmCid,
        2,
        "1234",
        "#1234|1401 01 005",
        None,
    );
    assert!(tcp_exchange(d.tcp(), &opening).await.is_some(), "ACK");
    close(Disposition::CancelledByCustomer)().expect("both factors: cancelled");
    let disposition: String = {
        let conn = Connection::open(d.db_path()).expect("db");
        conn.query_row("SELECT disposition FROM alarms WHERE id = ?1", [alarm_id], |r| r.get(0))
            .expect("disposition")
    };
    assert_eq!(disposition, "cancelled_by_customer");
    d.stop().await;
}

#[tokio::test]
async fn concurrent_attempts_for_one_customer_are_serialised() {
    let d = TestDaemon::start_with(RECORDS, |c| {
        c.codes.argon2_memory_kib = Cost::FLOOR.memory_kib;
    })
    .await;
    let cfg = d.cfg.clone();
    set_by_stdin(&cfg, "K1", Kind::Cancel, &format!("{CANCEL}\n")).expect("set");
    let running = d.running.as_ref().expect("running");
    let hasher = meldkamer::verify::hasher_from_config(&cfg).expect("hasher");
    let service = Arc::new(meldkamer::verify::service_from_config(
        &cfg,
        hasher,
        running.shared.writer.clone(),
        d.clock.clone(),
    ));
    let frame = plain(
        meldkamer::protocol::frame::Token::SiaDcs,
        1,
        "1234",
        "#1234|Nri1/BA03",
        None,
    );
    assert!(tcp_exchange(d.tcp(), &frame).await.is_some());
    let conn = Connection::open(d.db_path()).expect("db");
    let alarm: String = conn
        .query_row("SELECT public_id FROM alarms", [], |r| r.get(0))
        .expect("alarm");
    let k1: String = conn
        .query_row("SELECT public_id FROM contacts WHERE ref = 'K1'", [], |r| r.get(0))
        .expect("k1");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (s, a, k) = (service.clone(), alarm.clone(), k1.clone());
        tasks.push(tokio::spawn(async move {
            s.verify_public(&a, &k, WRONG, "op1").await.expect("verify")
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.expect("task"));
    }
    let rejected = answers.iter().filter(|a| **a == Answer::NotVerified).count();
    let locked = answers.iter().filter(|a| **a == Answer::Locked).count();
    assert_eq!((rejected, locked), (5, 3), "{answers:?}");
    let n: i64 = conn
        .query_row("SELECT consecutive FROM code_failures", [], |r| r.get(0))
        .expect("count");
    assert_eq!(n, 5);
    assert_eq!(service.hasher().computations(), 16, "two per attempt");
}

#[tokio::test]
async fn a_pepper_file_others_can_read_stops_the_daemon() {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("dir");
        let cfg = TestDaemon::config(dir.path());
        let pepper = cfg.codes.pepper_path(&cfg.store);
        std::fs::write(&pepper, format!("{}\n", "ab".repeat(32))).expect("write");
        std::fs::set_permissions(&pepper, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let clock = Arc::new(meldkamer::clock::ManualClock::new(T0));
        let e = match meldkamer::daemon::start(cfg.clone(), clock).await {
            Ok(_) => panic!("started with a readable pepper"),
            Err(e) => e,
        };
        let mut chain = e.to_string();
        let mut s = std::error::Error::source(&e);
        while let Some(x) = s {
            chain.push_str(&format!(": {x}"));
            s = x.source();
        }
        assert!(chain.contains("0644"), "{chain}");
        assert!(!chain.contains(&"ab".repeat(32)), "{chain}");
    }
}

/// The pepper file is lost while codes are in use: the daemon does not start (and makes no new
/// pepper, under which the duress code would answer "rejected" and escalate nothing) and says
/// how to recover. `code invalidate --all` needs no pepper; after it the daemon starts with a
/// new one.
#[tokio::test]
async fn a_lost_pepper_stops_the_daemon_until_the_codes_are_invalidated() {
    let f = Fixture::new();
    f.set("K1", Kind::Cancel, CANCEL);
    f.set("K1", Kind::Duress, DURESS);
    let pepper = f.cfg.codes.pepper_path(&f.cfg.store);
    std::fs::remove_file(&pepper).expect("pepper lost");
    let start = || meldkamer::daemon::start(f.cfg.clone(), Arc::new(meldkamer::clock::ManualClock::new(T0)));
    let e = match start().await {
        Ok(_) => panic!("started without the pepper of the codes in use"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains("2 phone code(s)") && e.contains(&pepper.display().to_string()),
        "{e}"
    );
    assert!(e.contains("is missing") && e.contains("Restore the pepper file"), "{e}");
    assert!(e.contains("meldkamer code invalidate --all"), "{e}");
    assert!(!pepper.exists(), "no new pepper was made");
    // Another pepper in the file is refused the same way.
    std::fs::write(&pepper, format!("{}\n", "cd".repeat(32))).expect("another pepper");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pepper, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let e = match start().await {
        Ok(_) => panic!("started with another pepper than the codes in use"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("holds pepper"), "{e}");
    std::fs::remove_file(&pepper).expect("remove");
    let mut out = Vec::new();
    code_cli::invalidate(&f.cfg, &Selector::All, "sup1", &mut out).expect("invalidate without a pepper");
    assert!(!pepper.exists());
    let running = start().await.expect("starts once no code needs the lost pepper");
    assert!(pepper.exists(), "with a new pepper");
    running.shutdown();
    running.wait().await;
    assert_eq!(
        f.i64("SELECT count(*) FROM code_verifiers WHERE invalidated_ms IS NULL"),
        0,
        "every code answers invalidated until set again"
    );
}

// --- The audit chain -----------------------------------------------------------------------

fn audited(n: usize) -> (tempfile::TempDir, Config) {
    let dir = tempfile::tempdir().expect("dir");
    let cfg = TestDaemon::config(dir.path());
    let mut conn = meldkamer::store::open_write(&cfg.store.path, Duration::from_secs(5)).expect("db");
    meldkamer::verify::audit_key_from_config(&cfg).expect("audit key");
    let tx = conn.transaction().expect("tx");
    for i in 0..n {
        audit::append(
            &tx,
            t0() + i as i64,
            &audit::AuditRecord {
                actor: "op1",
                action: "code_verify",
                subject: &format!("contact:K{i}"),
                detail: "alarm:x",
                result: "rejected",
                failures: Some(i as i64),
            },
        )
        .expect("append");
    }
    tx.commit().expect("commit");
    (dir, cfg)
}

/// What an attacker with the file does first: remove the protection.
fn drop_triggers(conn: &Connection) {
    conn.execute_batch("DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete;")
        .expect("drop");
}

fn audit_cli(cfg: &Config) -> (Result<(), meldkamer::cli::audit::AuditError>, String) {
    let args = meldkamer::cli::audit::AuditArgs {
        config: None,
        db: None,
        command: meldkamer::cli::audit::AuditCommand::Verify {
            anchor: None,
            heads: None,
        },
    };
    let mut out = Vec::new();
    let r = meldkamer::cli::audit::run(cfg, &args, &mut out);
    (r, String::from_utf8(out).expect("utf8"))
}

#[test]
fn the_audit_chain_detects_an_edited_row() {
    let (_d, cfg) = audited(6);
    let (r, text) = audit_cli(&cfg);
    assert!(r.is_ok(), "{text}");
    assert!(text.contains("intact: 6 rows"), "{text}");
    let conn = Connection::open(&cfg.store.path).expect("db");
    conn.execute("UPDATE audit_log SET result = 'accepted' WHERE id = 4", [])
        .expect_err("the trigger refuses");
    drop_triggers(&conn);
    conn.execute("UPDATE audit_log SET result = 'accepted' WHERE id = 4", [])
        .expect("edited");
    let report = audit::verify_chain(&conn, None).expect("verify");
    assert_eq!(report.broken, Some(Break::Content { id: 4 }));
    assert!(!report.triggers_intact);
    let (r, text) = audit_cli(&cfg);
    assert!(r.is_err());
    assert!(text.contains("row #4"), "{text}");
}

#[test]
fn the_audit_chain_detects_a_deleted_row() {
    let (_d, cfg) = audited(6);
    let conn = Connection::open(&cfg.store.path).expect("db");
    conn.execute("DELETE FROM audit_log WHERE id = 3", [])
        .expect_err("the trigger refuses");
    drop_triggers(&conn);
    conn.execute("DELETE FROM audit_log WHERE id = 3", []).expect("deleted");
    let report = audit::verify_chain(&conn, None).expect("verify");
    assert_eq!(report.broken, Some(Break::Gap { id: 4, previous: 2 }));
    // Renumbering to hide the gap breaks the content hashes instead.
    conn.execute_batch(
        "UPDATE audit_log SET id = id - 1 WHERE id = 4; UPDATE audit_log SET id = id - 1 WHERE id = 5;
         UPDATE audit_log SET id = id - 1 WHERE id = 6;",
    )
    .expect("renumber");
    let report = audit::verify_chain(&conn, None).expect("verify");
    assert_eq!(report.broken.map(|b| b.row()), Some(3));
    // Cutting off the end is found with an anchor taken earlier.
    let (_d2, cfg2) = audited(6);
    let conn2 = Connection::open(&cfg2.store.path).expect("db");
    let head = audit::verify_chain(&conn2, None).expect("verify").head.expect("head");
    drop_triggers(&conn2);
    conn2.execute("DELETE FROM audit_log WHERE id = 6", []).expect("cut");
    let report = audit::verify_chain(&conn2, Some(head)).expect("verify");
    assert_eq!(report.broken, Some(Break::Cut { head: 6, last: 5 }));
}

#[test]
fn the_audit_chain_detects_an_inserted_row() {
    let (_d, cfg) = audited(6);
    let conn = Connection::open(&cfg.store.path).expect("db");
    drop_triggers(&conn);
    // Make room after row 2 and insert a well-formed row chained to row 2.
    for id in (3..=6).rev() {
        conn.execute("UPDATE audit_log SET id = id + 1 WHERE id = ?1", [id])
            .expect("shift");
    }
    let prev: Vec<u8> = conn
        .query_row("SELECT row_hash FROM audit_log WHERE id = 2", [], |r| r.get(0))
        .expect("prev");
    let rec = audit::AuditRecord {
        actor: "op1",
        action: "code_verify",
        subject: "contact:K1",
        detail: "alarm:x",
        result: "accepted",
        failures: Some(0),
    };
    let h = audit::row_hash(3, t0(), &rec, &prev);
    conn.execute(
        "INSERT INTO audit_log (id, at_ms, actor, action, subject, detail, result, failures, prev_hash, row_hash)
         VALUES (3, ?1, 'op1', 'code_verify', 'contact:K1', 'alarm:x', 'accepted', 0, ?2, ?3)",
        params![t0(), prev, h.to_vec()],
    )
    .expect("insert");
    let report = audit::verify_chain(&conn, None).expect("verify");
    assert_eq!(
        report.broken,
        Some(Break::Unkeyed { id: 3 }),
        "without the audit key a row can only be hashed the old, plain way, and that does not pass among keyed rows"
    );
    // A row appended with a made-up hash is found too.
    let (_d2, cfg2) = audited(3);
    let conn2 = Connection::open(&cfg2.store.path).expect("db");
    conn2
        .execute(
            "INSERT INTO audit_log (id, at_ms, actor, action, subject, detail, result, failures, prev_hash, row_hash)
             VALUES (4, 0, 'x', 'y', 'z', '', 'ok', NULL, zeroblob(32), zeroblob(32))",
            [],
        )
        .expect("insert");
    let report = audit::verify_chain(&conn2, None).expect("verify");
    assert_eq!(report.broken, Some(Break::Unkeyed { id: 4 }));
}

// --- No keypad codes, anywhere ---------------------------------------------------------------

#[test]
fn no_table_or_column_can_hold_a_keypad_code_and_import_refuses_one() {
    let f = Fixture::new();
    let tables: Vec<String> = f
        .conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .expect("stmt")
        .query_map([], |r| r.get(0))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("tables");
    assert!(tables.len() > 10);
    let forbidden = ["keypad", "pin", "passcode", "user_code", "usercode", "password"];
    // Columns allowed to say "code": SIA/Contact ID event codes and the Argon2id verifier.
    let allowed_code = [
        ("events", "code"),
        ("events", "code_format"),
        ("code_verifiers", "argon2_phc"),
    ];
    let mut checked = 0;
    for t in &tables {
        assert!(!forbidden.iter().any(|w| t.to_lowercase().contains(w)), "table {t}");
        let cols: Vec<String> = f
            .conn
            .prepare(&format!("SELECT name FROM pragma_table_info('{t}')"))
            .expect("stmt")
            .query_map([], |r| r.get(0))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("cols");
        for c in cols {
            checked += 1;
            let lc = c.to_lowercase();
            // keypad_factor_* record that the panel was disarmed (time and user number): the
            // effect of a keypad code, never the code.
            let factor = t == "alarms" && lc.starts_with("keypad_factor_");
            assert!(
                factor || !forbidden.iter().any(|w| lc.contains(w)) || (t == "operators" && lc.contains("password")),
                "{t}.{c} could hold a keypad code"
            );
            if lc.split('_').any(|w| w == "code" || w == "codes") && !factor {
                assert!(
                    allowed_code.contains(&(t.as_str(), lc.as_str())),
                    "{t}.{c}: a column named like a code"
                );
            }
            if t == "code_verifiers" {
                assert!(
                    [
                        "contact_id",
                        "kind",
                        "argon2_phc",
                        "pepper_id",
                        "set_ms",
                        "set_by",
                        "invalidated_ms"
                    ]
                    .contains(&lc.as_str()),
                    "code_verifiers.{c}: only the verifier and its metadata"
                );
            }
        }
    }
    assert!(checked > 50);
    // The records import has no field for one either.
    for (kind, text) in [
        (
            "user",
            "[[user]]\nsite = \"S1\"\nnumber = \"5\"\nname = \"X\"\nkeypad_code = \"1234\"\n",
        ),
        (
            "user",
            "[[user]]\nsite = \"S1\"\nnumber = \"5\"\nname = \"X\"\nuser_code = \"1234\"\n",
        ),
        (
            "contact",
            "[[contact]]\nref = \"K\"\ncustomer = \"C1\"\nname = \"X\"\npin = \"1234\"\n",
        ),
        (
            "contact",
            "[[contact]]\nref = \"K\"\ncustomer = \"C1\"\nname = \"X\"\ncancel_code = \"583947\"\n",
        ),
        (
            "site",
            "[[site]]\nref = \"S\"\ncustomer = \"C1\"\naddress = \"x\"\npasscode = \"1234\"\n",
        ),
    ] {
        let e = meldkamer::records::parse_toml(text, "f").expect_err(kind);
        assert!(!e.to_string().contains("583947"), "{e}");
    }
    let e = meldkamer::records::parse_csv("ref,customer,name,code\nK,C1,X,583947\n", "contacts.csv", "contacts")
        .expect_err("csv");
    assert!(!e.to_string().contains("583947"), "{e}");
}

// --- The leak test ---------------------------------------------------------------------------

/// Everything tracing emits in this test binary, at TRACE level, from the moment the leak test
/// starts.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_traces() -> Captured {
    static CAPTURED: OnceLock<Captured> = OnceLock::new();
    CAPTURED
        .get_or_init(|| {
            let c = Captured::default();
            let writer = c.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .finish();
            tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber in the tests");
            c
        })
        .clone()
}

fn hits(hay: &[u8], needle: &str) -> usize {
    let n = needle.as_bytes();
    hay.windows(n.len()).filter(|w| *w == n).count()
}

fn run_cli(cfg_file: &Path, args: &[&str], stdin: Option<&str>) -> (bool, Vec<u8>) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_meldkamer"));
    cmd.args(args);
    if args.first() != Some(&"print-config") {
        cmd.arg("--config").arg(cfg_file);
    }
    cmd.env("RUST_LOG", "trace")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn meldkamer");
    {
        let mut sin = child.stdin.take().expect("stdin");
        if let Some(s) = stdin {
            sin.write_all(s.as_bytes()).expect("write stdin");
        }
    }
    let out = child.wait_with_output().expect("run");
    let mut all = out.stdout;
    all.extend_from_slice(b"\n--stderr--\n");
    all.extend_from_slice(&out.stderr);
    (out.status.success(), all)
}

fn read_all(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_default()
}

fn wal_of(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push("-wal");
    PathBuf::from(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leak_test_no_code_appears_in_database_wal_logs_or_output() {
    let captured = capture_traces();
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("leak.db");
    let cfg_file = dir.path().join("meldkamer.toml");
    std::fs::write(
        &cfg_file,
        format!(
            "[receiver]\ntcp_listen = \"127.0.0.1:0\"\nudp_listen = \"127.0.0.1:0\"\n[metrics]\nlisten = \"\"\n\
             [operator]\nsocket = \"api.sock\"\n[store]\npath = {:?}\nload_demo_data = false\n[codes]\nargon2_memory_kib = 19456\n\
             [log]\nlevel = \"trace\"\n",
            db.display().to_string()
        ),
    )
    .expect("config");
    let cfg = Config::load(&cfg_file).expect("config parses");
    let records = dir.path().join("records.toml");
    std::fs::write(&records, RECORDS).expect("records");

    let mut outputs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut run = |name: &str, args: &[&str], stdin: Option<&str>, must_succeed: bool| -> Vec<u8> {
        let (ok, out) = run_cli(&cfg_file, args, stdin);
        assert_eq!(ok, must_succeed, "{name}: {}", String::from_utf8_lossy(&out));
        outputs.push((name.to_string(), out.clone()));
        out
    };
    let imported = run("import", &["import", records.to_str().expect("path")], None, true);
    let _ = imported;
    // Plant the codes.
    run(
        "set K1",
        &["code", "set", "--contact", "K1", "--stdin"],
        Some(&format!("{CANCEL}\n")),
        true,
    );
    run(
        "set K1 duress",
        &["code", "set", "--contact", "K1", "--duress", "--stdin"],
        Some(&format!("{DURESS}\n")),
        true,
    );
    run(
        "set K2",
        &["code", "set", "--contact", "K2", "--stdin"],
        Some(&format!("{OTHER}\n")),
        true,
    );
    run(
        "set K1 duress = cancel (refused)",
        &["code", "set", "--contact", "K1", "--duress", "--stdin"],
        Some(&format!("{CANCEL}\n")),
        false,
    );
    // The one output allowed to show a code: a generated one, once.
    let (ok, generated_out) = run_cli(
        &cfg_file,
        &["code", "set", "--contact", "K2", "--duress", "--generate"],
        None,
    );
    assert!(ok, "{}", String::from_utf8_lossy(&generated_out));
    let text = String::from_utf8_lossy(&generated_out).to_string();
    let generated = text
        .lines()
        .find(|l| l.starts_with("new duress code"))
        .and_then(|l| l.rsplit(": ").next())
        .expect("generated code")
        .to_string();
    assert_eq!(hits(&generated_out, &generated), 1, "printed exactly once: {text}");
    let secrets = [CANCEL, DURESS, OTHER, WRONG, generated.as_str()];

    // Verify through the running daemon's writer: accepted, rejected, duress, unknown contact.
    let clock = Arc::new(meldkamer::clock::ManualClock::new(T0));
    let running = meldkamer::daemon::start(cfg.clone(), clock.clone())
        .await
        .expect("daemon");
    let hasher = meldkamer::verify::hasher_from_config(&cfg).expect("hasher");
    let service = meldkamer::verify::service_from_config(&cfg, hasher, running.shared.writer.clone(), clock.clone());
    let frame = plain(
        meldkamer::protocol::frame::Token::SiaDcs,
        1,
        "1234",
        "#1234|Nri1/BA03",
        None,
    );
    let addr = running.tcp_addr.expect("tcp");
    assert!(tcp_exchange(addr, &frame).await.is_some());
    let (alarm, k1, k2) = {
        let conn = Connection::open(&db).expect("db");
        let q = |sql: &str| -> String { conn.query_row(sql, [], |r| r.get(0)).expect(sql) };
        (
            q("SELECT public_id FROM alarms"),
            q("SELECT public_id FROM contacts WHERE ref = 'K1'"),
            q("SELECT public_id FROM contacts WHERE ref = 'K2'"),
        )
    };
    let mut answers = Vec::new();
    for (contact, candidate) in [
        (&k1, CANCEL),
        (&k1, WRONG),
        (&k2, generated.as_str()),
        (&k2, OTHER),
        (&"00".repeat(16), CANCEL),
        (&k1, DURESS),
    ] {
        let a = service
            .verify_public(&alarm, contact, candidate, "op1")
            .await
            .expect("verify");
        answers.push(serde_json::to_string(&a).expect("json"));
    }
    assert_eq!(
        answers,
        [
            "\"verified\"",
            "\"not_verified\"",
            "\"verified\"",
            "\"verified\"",
            "\"not_verified\"",
            "\"verified\""
        ]
    );
    // The operator API: login, queue, the alarm in full, verification (right, wrong, duress),
    // supervision and search. Every response is searched too.
    {
        let conn = Connection::open(&db).expect("db");
        meldkamer::operator::accounts::add(
            &conn,
            running.api.verifier.hasher(),
            "leaky",
            meldkamer::operator::Role::Operator,
            "leak test password",
            0,
        )
        .expect("operator");
    }
    let mut api = crate::operator::Api::connect(&running.api_socket.clone().expect("api socket")).await;
    let mut api_out = vec![api.login("leaky", "leak test password").await];
    for req in [
        serde_json::json!({"op": "queue"}),
        serde_json::json!({"op": "alarm", "alarm": alarm}),
        serde_json::json!({"op": "verify", "alarm": alarm, "contact": k1, "code": CANCEL}),
        serde_json::json!({"op": "verify", "alarm": alarm, "contact": k1, "code": WRONG}),
        serde_json::json!({"op": "verify", "alarm": alarm, "contact": k2, "code": OTHER}),
        serde_json::json!({"op": "verify", "alarm": alarm, "contact": k1, "code": DURESS}),
        serde_json::json!({"op": "alarm", "alarm": alarm}),
        serde_json::json!({"op": "supervision"}),
        serde_json::json!({"op": "search", "query": "1234"}),
    ] {
        api_out.push(api.call(req).await);
    }
    assert_eq!(api_out[3]["result"]["result"], "accepted", "{api_out:#?}");
    assert_eq!(api_out[4]["result"]["result"], "rejected");
    assert_eq!(api_out[6]["result"]["result"], "duress", "the operator sees duress");
    let api_bytes = serde_json::to_vec(&api_out).expect("json");
    drop(api);
    // The WAL while the daemon runs (before any checkpoint on close).
    let wal_running = read_all(&wal_of(&db));
    // A canary the search must find: proves the database and WAL searches can see text.
    const CANARY: &str = "canary-5f3a9c";
    {
        let conn = Connection::open(&db).expect("db");
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('leak-test-canary', ?1)",
            [CANARY],
        )
        .expect("canary");
    }
    tracing::trace!(canary = CANARY, "leak test control line");
    running.shutdown();
    running.wait().await;

    // Every other command that shows or exports something.
    run("reset K2", &["code", "reset", "--contact", "K2"], None, true);
    run("invalidate all", &["code", "invalidate", "--all"], None, true);
    run(
        "invalidate account",
        &["code", "invalidate", "--account", "1234"],
        None,
        true,
    );
    run("customer show", &["customer", "show", "1234"], None, true);
    run(
        "customer show json",
        &["customer", "show", "1234", "--json"],
        None,
        true,
    );
    run("print-config", &["print-config"], None, true);
    run("audit verify", &["audit", "verify"], None, true);
    run("audit list", &["audit", "list", "--last", "200"], None, true);
    let outcome = {
        let conn = Connection::open(&db).expect("db");
        serde_json::to_vec(&meldkamer::replay::outcome::outcome(&conn).expect("outcome")).expect("json")
    };
    outputs.push(("replay outcome export".into(), outcome));
    outputs.push(("operator API responses".into(), api_bytes));

    // Search.
    let mut places: Vec<(String, Vec<u8>)> = vec![
        ("database".into(), read_all(&db)),
        ("WAL while running".into(), wal_running.clone()),
        ("WAL after".into(), read_all(&wal_of(&db))),
        (
            "traces".into(),
            captured.0.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        ),
    ];
    places.extend(outputs);
    let mut found = Vec::new();
    for (place, bytes) in &places {
        for s in secrets {
            let n = hits(bytes, s);
            if n > 0 {
                found.push(format!("{place}: {n} x a planted code"));
            }
        }
    }
    assert!(found.is_empty(), "codes leaked: {found:#?}");

    // The controls: the same search finds what was planted on purpose.
    let db_and_wal = [read_all(&db), read_all(&wal_of(&db)), wal_running].concat();
    assert!(hits(&db_and_wal, CANARY) > 0, "the database search can find text");
    let traces = captured.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert!(hits(&traces, CANARY) > 0, "trace capture works");
    let control = dir.path().join("control.txt");
    std::fs::write(&control, format!("on purpose: {CANCEL}\n")).expect("control");
    assert_eq!(hits(&read_all(&control), CANCEL), 1, "the search finds a planted code");
    // The stderr of the commands carried their logs (the CLI was at trace level).
    let set_out = &places.iter().find(|(n, _)| n == "set K1").expect("set").1;
    assert!(
        hits(set_out, "phone code set") > 0,
        "{}",
        String::from_utf8_lossy(set_out)
    );
}

#[test]
fn version_says_end_of_life_only_when_built_so() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meldkamer"))
        .arg("--version")
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(meldkamer::release::VERSION), "{text}");
    assert_eq!(text.contains("END OF LIFE"), meldkamer::release::END_OF_LIFE, "{text}");
}
