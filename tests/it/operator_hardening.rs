//! Operator-side hardening (issue "Operator side hardening"): each test reproduces a finding
//! against the operator API and fails on the code before the fix.

use std::time::Duration;

use meldkamer::operator::Role;
use meldkamer::protocol::frame::Token;
use meldkamer::verify::codes::Kind;
use serde_json::{Value, json};

use crate::common::*;
use crate::operator::{Api, PASSWORD, daemon_with_operators, daemon_with_operators_and, socket};

/// Open a burglary alarm on account 1234 (zone `zone`) over DC-09; returns its id.
async fn burglary(d: &TestDaemon, api: &mut Api, seq: u16, zone: u32) -> String {
    let f = plain(Token::SiaDcs, seq, "1234", &format!("#1234|Nri1/BA{zone:02}"), None);
    assert_eq!(
        tcp_exchange(d.tcp(), &f).await.as_deref().map(token_of).as_deref(),
        Some("ACK")
    );
    let q = api.call(json!({"op": "queue"})).await;
    q["result"]["alarms"]
        .as_array()
        .expect("alarms")
        .iter()
        .find(|a| a["title"].as_str().is_some_and(|t| t.contains(&format!("zone {zone}"))))
        .and_then(|a| a["id"].as_str())
        .expect("the alarm is in the queue")
        .to_string()
}

fn set_code(d: &TestDaemon, contact: &str, kind: Kind, code: &str) {
    let mut input = std::io::Cursor::new(format!("{code}\n").into_bytes());
    meldkamer::cli::code::set(
        &d.cfg,
        contact,
        kind,
        meldkamer::cli::code::Source::Stdin(&mut input),
        "sup1",
        &mut Vec::new(),
    )
    .expect("code set");
}

fn contact_id(d: &TestDaemon, reference: &str) -> String {
    let conn = rusqlite::Connection::open(d.db_path()).expect("db");
    conn.query_row("SELECT public_id FROM contacts WHERE ref = ?1", [reference], |r| {
        r.get(0)
    })
    .expect("contact")
}

/// Finding 3: 300 parallel logins with made-up names grew the daemon to 9.7 GB, each running a
/// 19 MiB Argon2 computation at once. Now at most two run; the rest wait in a short queue or
/// are answered at once without hashing.
#[tokio::test]
async fn a_login_flood_hashes_at_most_two_passwords_at_once() {
    // Connection caps high enough to let the whole flood in: this is about the hashing.
    let mut d = daemon_with_operators_and(|c| {
        c.operator.max_connections = 1000;
        c.operator.max_connections_per_peer = 1000;
    })
    .await;
    let path = socket(&d);
    let mut tasks = Vec::new();
    for i in 0..300 {
        let path = path.clone();
        tasks.push(tokio::spawn(async move {
            let Ok(s) = tokio::net::UnixStream::connect(&path).await else {
                return "refused".to_string();
            };
            let mut api = Api::from_stream(s);
            let r = api
                .try_call(json!({"op": "login", "name": format!("intruder{i}"), "password": "guess guess guess"}))
                .await;
            match r {
                Some(r) => r["error"]["kind"].as_str().unwrap_or("ok").to_string(),
                None => "closed".to_string(),
            }
        }));
    }
    let mut kinds = std::collections::HashMap::<String, usize>::new();
    for t in tasks {
        *kinds.entry(t.await.expect("task")).or_default() += 1;
    }
    let api = d.running.as_ref().expect("running").api.clone();
    assert!(api.login.peak_hashing() <= 2, "peak {}", api.login.peak_hashing());
    assert!(
        kinds.get("rate_limited").copied().unwrap_or(0) > 0,
        "a flood is answered with back-off, not memory: {kinds:?}"
    );
    assert_eq!(kinds.get("ok"), None, "{kinds:?}");
    d.stop().await;
}

/// Finding 4: five wrong passwords from anyone who reached the port locked an operator out for
/// 15 minutes. Now the peer that fails is slowed down, and only that peer: the operator at the
/// local console logs in at once. Repeated failures for a name alert a supervisor.
#[tokio::test]
async fn failed_logins_slow_down_their_peer_and_never_lock_the_operator_out() {
    let mut d = daemon_with_operators().await;
    let state = d.running.as_ref().expect("running").api.clone();
    // Another peer (TLS from an address) fails again and again.
    for _ in 0..4 {
        let r = meldkamer::operator::server::handle(
            &state,
            "tls:203.0.113.66",
            serde_json::from_value(json!({"op": "login", "name": "olga", "password": "not the password"}))
                .expect("request"),
        )
        .await;
        assert_eq!(
            r.error.map(|e| e.kind),
            Some(meldkamer::operator::protocol::ErrorKind::Unauthorized)
        );
    }
    let r = meldkamer::operator::server::handle(
        &state,
        "tls:203.0.113.66",
        serde_json::from_value(json!({"op": "login", "name": "olga", "password": PASSWORD})).expect("request"),
    )
    .await;
    assert_eq!(
        r.error.map(|e| e.kind),
        Some(meldkamer::operator::protocol::ErrorKind::RateLimited),
        "that peer must wait, even with the right password"
    );
    // The local console is another peer: not locked out.
    let mut local = Api::connect(&socket(&d)).await;
    assert_eq!(local.login("olga", PASSWORD).await["ok"], true);
    // Ten failures of one name from several addresses alert a supervisor, once.
    for i in 0..12 {
        let _ = meldkamer::operator::server::handle(
            &state,
            &format!("tls:198.51.100.{i}"),
            serde_json::from_value(json!({"op": "login", "name": "olga", "password": "still wrong"})).expect("request"),
        )
        .await;
    }
    let alerts = d.query_i64(
        "SELECT count(*) FROM alarms WHERE queue = 'supervisor' AND join_key = 'login-failures:operator:olga'",
    );
    assert_eq!(alerts, 1);
    // An unknown name never reaches the audit log (it may be a password typed as a name).
    let _ = local.login("Tr0ub4dor&3", "x").await;
    let leaked =
        d.query_i64("SELECT count(*) FROM audit_log WHERE actor LIKE '%Tr0ub4dor%' OR subject LIKE '%Tr0ub4dor%'");
    assert_eq!(leaked, 0);
    assert!(
        d.query_i64("SELECT count(*) FROM audit_log WHERE action = 'login' AND actor LIKE 'name#%'") >= 1,
        "an unknown name is logged as its keyed pseudonym"
    );
    d.stop().await;
}

/// Finding 5: a disabled operator stayed logged in for the rest of a ten-hour session. Now
/// `operator disable` (from the CLI, while the daemon runs) ends the session at once: the next
/// request is refused, the queue subscription is told within a second or two, and the alarm
/// the operator handled goes back to the queue. A role change does the same.
#[tokio::test]
async fn disabling_an_operator_or_changing_its_role_ends_its_sessions_at_once() {
    let mut d = daemon_with_operators().await;
    let mut olga = Api::connect(&socket(&d)).await;
    assert_eq!(olga.login("olga", PASSWORD).await["ok"], true);
    let alarm = burglary(&d, &mut olga, 1, 3).await;
    assert_eq!(olga.call(json!({"op": "start", "alarm": alarm})).await["ok"], true);
    assert_eq!(olga.call(json!({"op": "subscribe"})).await["ok"], true);

    meldkamer::cli::operator::set_disabled(&d.cfg, "olga", true, &mut Vec::new()).expect("disable");
    let push = olga.next_push(Duration::from_secs(5)).await.expect("a push");
    assert_eq!(push["push"], "session_ended", "{push}");
    let r = olga.call(json!({"op": "queue"})).await;
    assert_eq!(r["error"]["kind"], "unauthorized", "{r}");
    assert!(
        r["error"]["message"].as_str().unwrap_or_default().contains("disabled"),
        "{r}"
    );
    let mut sam = Api::connect(&socket(&d)).await;
    assert_eq!(sam.login("sam", PASSWORD).await["ok"], true);
    let a = sam.call(json!({"op": "alarm", "alarm": alarm})).await;
    assert_eq!(a["result"]["alarm"]["owner"], Value::Null, "back in the queue: {a}");
    assert_eq!(a["result"]["alarm"]["state"], "acknowledged");
    assert!(
        a["result"]["log"]
            .as_array()
            .expect("log")
            .iter()
            .any(|l| l["action"] == "released"),
        "{a}"
    );
    // A role change ends the session too.
    meldkamer::cli::operator::set_role(&d.cfg, "sam", Role::Operator, &mut Vec::new()).expect("role");
    let r = sam.call(json!({"op": "queue"})).await;
    assert_eq!(r["error"]["kind"], "unauthorized", "{r}");
    d.stop().await;
}

/// Sessions survive a daemon restart (the console reconnects into the same session).
#[tokio::test]
async fn a_restart_keeps_the_session() {
    let mut d = daemon_with_operators().await;
    let mut api = Api::connect(&socket(&d)).await;
    assert_eq!(api.login("olga", PASSWORD).await["ok"], true);
    let token = api.token.clone();
    d.restart().await;
    let mut again = Api::connect(&socket(&d)).await;
    again.token = token;
    let r = again.call(json!({"op": "whoami"})).await;
    assert_eq!(r["result"]["name"], "olga", "{r}");
    // Only a hash of the token is stored.
    let t = again.token.clone().expect("token");
    let conn = rusqlite::Connection::open(d.db_path()).expect("db");
    let dump: Vec<u8> = conn
        .query_row("SELECT group_concat(hex(token_hash)) FROM sessions", [], |r| {
            r.get::<_, String>(0)
        })
        .expect("hashes")
        .into_bytes();
    assert!(!String::from_utf8_lossy(&dump).to_lowercase().contains(&t));
    d.stop().await;
}

/// Findings 6 and 11: while a customer was locked every verify answered `locked` and only
/// rejections counted toward the operator alert, so an insider could try duress codes without
/// limit or alert; and `attempts_left` told another customer's contact counter. Now every
/// attempt during a lockout is on a supervisor item, counts toward the operator alert, and an
/// operator is stopped after 30 verifications within the hour; `attempts_left` comes from the
/// attempt's own counter, alike for a contact that may not cancel this alarm.
#[tokio::test]
async fn guessing_codes_while_locked_is_counted_alerted_and_stopped() {
    let mut d = daemon_with_operators().await;
    set_code(&d, "K-1001-1", Kind::Cancel, "583947");
    set_code(&d, "K-1001-1", Kind::Duress, "906152");
    let k1 = contact_id(&d, "K-1001-1");
    let k2 = contact_id(&d, "K-1001-2"); // may not cancel
    let mut olga = Api::connect(&socket(&d)).await;
    assert_eq!(olga.login("olga", PASSWORD).await["ok"], true);
    let alarm = burglary(&d, &mut olga, 1, 3).await;
    let verify = |contact: &str, code: &str| json!({"op": "verify", "alarm": alarm, "contact": contact, "code": code});
    // A contact that may not cancel counts down like a real one, then locks.
    let mut left = Vec::new();
    for _ in 0..5 {
        let r = olga.call(verify(&k2, "111111")).await;
        assert_eq!(r["result"]["result"], "rejected", "{r}");
        left.push(r["result"]["attempts_left"].as_u64().expect("attempts left"));
    }
    assert_eq!(left, vec![4, 3, 2, 1, 0]);
    // Locked now: every further attempt answers locked, even the duress code, and each is
    // on the supervisor's item for the lock.
    for i in 0..10 {
        let r = olga.call(verify(&k1, &format!("90615{i}"))).await;
        assert_eq!(r["result"]["result"], "locked", "{r}");
    }
    let item = d.query_i64(
        "SELECT count(*) FROM alarm_log l JOIN alarms a ON a.id = l.alarm_id
         WHERE a.join_key = 'code-locked-attempts:customer:C-1001'",
    );
    assert!(item >= 10, "every attempt while locked is on the item: {item}");
    assert_eq!(
        d.query_i64("SELECT count(*) FROM alarms WHERE join_key = 'code-rejects:operator:olga'"),
        1,
        "attempts while locked count toward the operator alert"
    );
    // At 30 attempts within the hour, the operator is stopped before anything is hashed.
    let state = d.running.as_ref().expect("running").api.clone();
    let hashed = state.verifier.hasher().computations();
    for i in 15..30 {
        let r = olga.call(verify(&k1, &format!("90{i}00"))).await;
        assert_eq!(r["ok"], true, "attempt {i}: {r}");
    }
    let r = olga.call(verify(&k1, "906152")).await;
    assert_eq!(r["error"]["kind"], "rate_limited", "{r}");
    let after = state.verifier.hasher().computations();
    assert_eq!(after - hashed, 2 * 15, "the refused attempt hashed nothing");
    assert_eq!(
        d.query_i64("SELECT count(*) FROM alarms WHERE join_key = 'code-rate:operator:olga'"),
        1
    );
    assert_eq!(
        d.query_i64("SELECT count(*) FROM audit_log WHERE action = 'code_verify' AND result = 'refused: rate limited'"),
        1
    );
    d.stop().await;
}

/// Finding 12: a duress alarm could be closed by any operator. Now only a supervisor closes one.
#[tokio::test]
async fn only_a_supervisor_closes_a_duress_alarm() {
    let mut d = daemon_with_operators().await;
    let mut olga = Api::connect(&socket(&d)).await;
    assert_eq!(olga.login("olga", PASSWORD).await["ok"], true);
    // Contact ID 121: duress by user 5.
    let f = plain(Token::AdmCid, 1, "1234", "#1234|1121 01 005", None);
    assert_eq!(
        tcp_exchange(d.tcp(), &f).await.as_deref().map(token_of).as_deref(),
        Some("ACK")
    );
    let q = olga.call(json!({"op": "queue"})).await;
    let a = q["result"]["alarms"][0].clone();
    assert_eq!(a["category"], "duress", "{q}");
    let id = a["id"].as_str().expect("id").to_string();
    assert_eq!(olga.call(json!({"op": "start", "alarm": id})).await["ok"], true);
    for s in [1, 2] {
        assert_eq!(
            olga.call(json!({"op": "step", "alarm": id, "step": s, "done": true}))
                .await["ok"],
            true
        );
    }
    let r = olga
        .call(json!({"op": "close", "alarm": id, "disposition": "dispatched"}))
        .await;
    assert_eq!(r["error"]["kind"], "forbidden", "{r}");
    let mut sam = Api::connect(&socket(&d)).await;
    assert_eq!(sam.login("sam", PASSWORD).await["ok"], true);
    let r = sam
        .call(json!({"op": "close", "alarm": id, "disposition": "dispatched"}))
        .await;
    assert_eq!(
        r["error"]["kind"], "conflict",
        "olga handles it: take it over first: {r}"
    );
    let r = sam
        .call(json!({"op": "takeover", "alarm": id, "reason": "duress: supervisor closes"}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    let r = sam
        .call(json!({"op": "close", "alarm": id, "disposition": "dispatched"}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    d.stop().await;
}

/// Finding 2 (the connection's part): a connection that never logs in is closed after the
/// login deadline, one that stops asking after the idle timeout; a console's subscription
/// stays while its session lives.
#[tokio::test]
async fn unauthenticated_and_idle_connections_are_closed() {
    let mut d = daemon_with_operators_and(|c| {
        c.operator.login_timeout_secs = 1;
        c.operator.idle_timeout_secs = 2;
    })
    .await;
    let path = socket(&d);
    let started = std::time::Instant::now();
    let mut silent = Api::connect(&path).await;
    let last = silent.next_push(Duration::from_secs(5)).await.expect("a last word");
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("no login in time"),
        "{last}"
    );
    assert!(silent.next_push(Duration::from_secs(2)).await.is_none(), "closed");
    assert!(started.elapsed() < Duration::from_secs(4));
    let mut idle = Api::connect(&path).await;
    assert_eq!(idle.login("olga", PASSWORD).await["ok"], true);
    let mut console = Api::connect(&path).await;
    assert_eq!(console.login("otto", PASSWORD).await["ok"], true);
    assert_eq!(console.call(json!({"op": "subscribe"})).await["ok"], true);
    let last = idle.next_push(Duration::from_secs(5)).await.expect("a last word");
    assert!(
        last["error"]["message"].as_str().unwrap_or_default().contains("idle"),
        "{last}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        console.call(json!({"op": "whoami"})).await["result"]["name"],
        "otto",
        "the subscribed console is still connected"
    );
    d.stop().await;
}

/// Finding 7 (the operators' part): password hashes were plain Argon2id, so a copy of the
/// database allowed guessing them offline. Now they are keyed with the pepper (a file outside
/// the database); an unkeyed hash from before is re-hashed at the next login.
#[tokio::test]
async fn operator_passwords_are_peppered_and_old_hashes_upgrade_at_login() {
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};
    let mut d = daemon_with_operators().await;
    let hasher = crate::operator::hasher(&d);
    let conn = rusqlite::Connection::open(d.db_path()).expect("db");
    let (phc, pepper): (String, String) = conn
        .query_row(
            "SELECT password_phc, pepper_id FROM operators WHERE name = 'olga'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("olga");
    assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
    assert_eq!(pepper, hasher.current_pepper_id());
    let parsed = argon2::PasswordHash::new(&phc).expect("phc");
    assert!(
        argon2::Argon2::default()
            .verify_password(PASSWORD.as_bytes(), &parsed)
            .is_err(),
        "without the pepper the right password does not verify: the database alone is not enough"
    );
    // An operator from before the pepper: an unkeyed hash, no pepper id.
    let old = argon2::Argon2::default()
        .hash_password(PASSWORD.as_bytes())
        .expect("hash")
        .to_string();
    conn.execute(
        "UPDATE operators SET password_phc = ?1, pepper_id = NULL WHERE name = 'otto'",
        [&old],
    )
    .expect("old hash");
    let mut otto = Api::connect(&socket(&d)).await;
    assert_eq!(
        otto.login("otto", PASSWORD).await["ok"],
        true,
        "the old hash still works"
    );
    let (phc, pepper): (String, Option<String>) = conn
        .query_row(
            "SELECT password_phc, pepper_id FROM operators WHERE name = 'otto'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("otto");
    assert_ne!(phc, old, "re-hashed at the login");
    assert_eq!(pepper.as_deref(), Some(hasher.current_pepper_id()));
    assert_eq!(otto.login("otto", PASSWORD).await["ok"], true, "and the new one works");
    // A verifier under a pepper that is not loaded: refused, and `operator password` recovers.
    conn.execute(
        "UPDATE operators SET pepper_id = 'feedfeedfeedfeed' WHERE name = 'sam'",
        [],
    )
    .expect("lost pepper");
    let mut sam = Api::connect(&socket(&d)).await;
    assert_eq!(sam.login("sam", PASSWORD).await["ok"], false);
    let hasher = crate::operator::hasher(&d);
    {
        let mut c = rusqlite::Connection::open(d.db_path()).expect("db");
        let tx = c.transaction().expect("tx");
        meldkamer::operator::accounts::set_password(&tx, &hasher, "sam", "a brand new password", 0).expect("reset");
        tx.commit().expect("commit");
    }
    assert_eq!(sam.login("sam", "a brand new password").await["ok"], true);
    d.stop().await;
}
