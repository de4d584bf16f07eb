//! The operator's shift, over the operator API (issue "The operator's shift"): the most
//! dangerous alarm first, one owner per alarm, every action on the record, and what an
//! operator needs to finish an alarm. Each test fails on the code before the change.

use std::time::Duration;

use meldkamer::protocol::frame::Token;
use serde_json::{Value, json};

use crate::common::*;
use crate::operator::{Api, PASSWORD, daemon_with_operators, daemon_with_operators_and, socket};

async fn send(d: &TestDaemon, seq: u16, token: Token, data: &str) {
    let f = plain(token, seq, "1234", data, None);
    assert_eq!(
        tcp_exchange(d.tcp(), &f).await.as_deref().map(token_of).as_deref(),
        Some("ACK"),
        "frame {seq}: {data}"
    );
}

async fn logged_in(d: &TestDaemon, name: &str) -> Api {
    let mut api = Api::connect(&socket(d)).await;
    assert_eq!(api.login(name, PASSWORD).await["ok"], true);
    api
}

async fn queue(api: &mut Api) -> Vec<Value> {
    api.call(json!({"op": "queue"})).await["result"]["alarms"]
        .as_array()
        .expect("alarms")
        .clone()
}

async fn only_alarm(api: &mut Api, category: &str) -> String {
    queue(api)
        .await
        .iter()
        .find(|a| a["category"] == category)
        .and_then(|a| a["id"].as_str())
        .unwrap_or_else(|| panic!("a {category} alarm"))
        .to_string()
}

/// Safety defect 1: with ~120 older escalated priority-1 alarms open, a new duress alarm
/// landed at row ~122. Life-safety categories are a tier of their own that escalation never
/// reaches.
#[tokio::test]
async fn a_duress_alarm_is_first_behind_many_escalated_alarms() {
    let mut d = daemon_with_operators_and(|c| c.alarms.escalate_after_secs = 60).await;
    crate::common::import(&d.cfg, "[[priority_rule]]\ncategory = \"burglary\"\npriority = 2\n");
    // Wait for the daemon to see the rule (it reloads records every 2 s).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut olga = logged_in(&d, "olga").await;
    for z in 1..=120u16 {
        send(&d, z, Token::SiaDcs, &format!("#1234|Nri1/BA{z:03}")).await;
    }
    d.clock.advance(time::Duration::minutes(3));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let q = queue(&mut olga).await;
        if q.len() == 120 && q.iter().all(|a| a["priority"] == 1 && a["escalated"] == true) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not escalated: {:?}", q.first());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Contact ID 121: duress, user 5, opened after all the others.
    send(&d, 200, Token::AdmCid, "#1234|1121 01 005").await;
    let q = queue(&mut olga).await;
    assert_eq!(q.len(), 121);
    assert_eq!(q[0]["category"], "duress", "first: {}", q[0]);
    // A panic arriving now goes right behind it, still above every escalated burglary.
    send(&d, 201, Token::SiaDcs, "#1234|Nri1/PA201").await;
    let q = queue(&mut olga).await;
    assert_eq!(
        q.iter().take(2).map(|a| a["category"].clone()).collect::<Vec<_>>(),
        vec![json!("duress"), json!("panic")]
    );
    d.stop().await;
}

/// Safety defect 2: a hold-up folded into an open panic alarm of the same zone and kept the
/// panic procedure ("call the site"), which the hold-up procedure forbids.
#[tokio::test]
async fn a_hold_up_after_a_panic_runs_under_the_hold_up_procedure() {
    let mut d = daemon_with_operators().await;
    let mut olga = logged_in(&d, "olga").await;
    send(&d, 1, Token::SiaDcs, "#1234|Nri1/PA07").await;
    send(&d, 2, Token::SiaDcs, "#1234|Nri1/HA07").await;
    let q = queue(&mut olga).await;
    assert_eq!(q.len(), 2, "two alarms: {q:?}");
    let holdup = only_alarm(&mut olga, "holdup").await;
    assert_eq!(q[0]["id"], json!(holdup), "hold-up ranks above panic");
    let detail = olga.call(json!({"op": "alarm", "alarm": holdup})).await;
    let first = detail["result"]["procedure"][0]["instruction"]
        .as_str()
        .unwrap_or_default();
    assert!(first.contains("NOT call the site"), "{detail}");
    assert_eq!(detail["result"]["events"].as_array().map(Vec::len), Some(1));
    d.stop().await;
}

/// Safety defect 3: another operator closed an alarm someone was handling. Now starting an
/// alarm takes it: others read it but cannot act; a supervisor takes it over with a reason
/// (audited); when the owner's session ends it goes back to the queue.
#[tokio::test]
async fn an_alarm_has_one_handler() {
    let mut d = daemon_with_operators().await;
    let mut olga = logged_in(&d, "olga").await;
    let mut otto = logged_in(&d, "otto").await;
    send(&d, 1, Token::SiaDcs, "#1234|Nri1/BA03").await;
    let id = only_alarm(&mut olga, "burglary").await;
    assert_eq!(olga.call(json!({"op": "start", "alarm": id})).await["ok"], true);
    let q = queue(&mut otto).await;
    assert_eq!(q[0]["owner"], "olga", "the queue names the owner");
    for req in [
        json!({"op": "close", "alarm": id, "disposition": "dispatched"}),
        json!({"op": "note", "alarm": id, "text": "mine now"}),
        json!({"op": "start", "alarm": id}),
    ] {
        let r = otto.call(req).await;
        assert_eq!(r["error"]["kind"], "conflict", "{r}");
        assert!(
            r["error"]["message"].as_str().unwrap_or_default().contains("olga"),
            "{r}"
        );
    }
    let mut sam = logged_in(&d, "sam").await;
    let r = sam.call(json!({"op": "takeover", "alarm": id, "reason": ""})).await;
    assert_eq!(r["error"]["kind"], "invalid", "a takeover needs a reason: {r}");
    let r = sam
        .call(json!({"op": "takeover", "alarm": id, "reason": "olga is on another call"}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    let detail = olga.call(json!({"op": "alarm", "alarm": id})).await;
    assert_eq!(detail["result"]["alarm"]["owner"], "sam");
    assert!(
        detail["result"]["log"]
            .as_array()
            .expect("log")
            .iter()
            .any(|l| l["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("taken over from olga: olga is on another call")),
        "{detail}"
    );
    assert_eq!(
        d.query_i64("SELECT count(*) FROM audit_log WHERE actor = 'sam' AND action = 'takeover' AND result = 'ok'"),
        1
    );
    // The owner's session ends: the alarm is back in the queue for anyone.
    assert_eq!(sam.call(json!({"op": "logout"})).await["ok"], true);
    let q = queue(&mut otto).await;
    assert_eq!(q[0]["owner"], Value::Null, "{:?}", q[0]);
    assert_eq!(q[0]["state"], "acknowledged");
    assert_eq!(otto.call(json!({"op": "start", "alarm": id})).await["ok"], true);
    d.stop().await;
}

/// Safety defect 4 (the server's part): "other" and "false alarm" need a note, and a
/// category's mandatory steps must be ticked or the reason they were not given.
#[tokio::test]
async fn a_close_needs_its_note_and_its_mandatory_steps() {
    let mut d = daemon_with_operators().await;
    let mut olga = logged_in(&d, "olga").await;
    send(&d, 1, Token::SiaDcs, "#1234|Nri1/HA07").await;
    let id = only_alarm(&mut olga, "holdup").await;
    let r = olga
        .call(json!({"op": "close", "alarm": id, "disposition": "false_alarm"}))
        .await;
    assert_eq!(r["error"]["kind"], "conflict");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("needs a note"),
        "{r}"
    );
    let r = olga
        .call(json!({"op": "close", "alarm": id, "disposition": "false_alarm", "note": "button pressed by a cleaner"}))
        .await;
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("mandatory procedure step(s) 1, 2"),
        "{r}"
    );
    assert_eq!(
        olga.call(json!({"op": "step", "alarm": id, "step": 1, "done": true}))
            .await["ok"],
        true
    );
    let r = olga
        .call(
            json!({"op": "close", "alarm": id, "disposition": "false_alarm", "note": "button pressed by a cleaner",
                     "skipped_reason": "owner on site confirmed, police not needed"}),
        )
        .await;
    assert_eq!(r["ok"], true, "{r}");
    let detail = olga.call(json!({"op": "alarm", "alarm": id})).await;
    let log: Vec<String> = detail["result"]["log"]
        .as_array()
        .expect("log")
        .iter()
        .map(|l| {
            format!(
                "{} {}",
                l["action"].as_str().unwrap_or(""),
                l["detail"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert!(log.iter().any(|l| l == "note button pressed by a cleaner"), "{log:?}");
    assert!(
        log.iter()
            .any(|l| l.starts_with("steps_skipped mandatory step(s) 2 not done: owner on site")),
        "{log:?}"
    );
    d.stop().await;
}

/// What the operator still lacked, 9 and 10: calls with their outcome, the next contact to
/// call; an alarm put aside comes back by itself at its time.
#[tokio::test]
async fn calls_are_logged_and_a_put_aside_alarm_comes_back() {
    let mut d = daemon_with_operators().await;
    let mut olga = logged_in(&d, "olga").await;
    send(&d, 1, Token::SiaDcs, "#1234|Nri1/BA03").await;
    let id = only_alarm(&mut olga, "burglary").await;
    let detail = olga.call(json!({"op": "alarm", "alarm": id})).await;
    let k1 = detail["result"]["contacts"][0]["id"]
        .as_str()
        .expect("contact")
        .to_string();
    let phone = detail["result"]["contacts"][0]["phones"][1].clone();
    let r = olga
        .call(json!({"op": "call", "alarm": id, "contact": k1, "phone": phone, "outcome": "voicemail"}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    let r = olga
        .call(json!({"op": "call", "alarm": id, "contact": k1, "phone": "+31 0000", "outcome": "busy"}))
        .await;
    assert_eq!(r["error"]["kind"], "invalid", "not the contact's number: {r}");
    let detail = olga.call(json!({"op": "alarm", "alarm": id})).await;
    assert_eq!(detail["result"]["calls"][0]["outcome"], "voicemail");
    assert_eq!(detail["result"]["alarm"]["owner"], "olga", "calling took the alarm");
    // Put aside for 10 minutes: out of the queue's top, with its time; back at the time.
    let r = olga
        .call(json!({"op": "recall", "alarm": id, "minutes": 10, "note": "keyholder calls back"}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    let q = queue(&mut olga).await;
    assert!(q[0]["recall_ms"].is_i64(), "{:?}", q[0]);
    assert_eq!(q[0]["owner"], Value::Null);
    d.clock.advance(time::Duration::minutes(11));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while queue(&mut olga).await[0]["recall_ms"].is_i64() {
        assert!(std::time::Instant::now() < deadline, "the alarm did not come back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let detail = olga.call(json!({"op": "alarm", "alarm": id})).await;
    assert!(
        detail["result"]["log"]
            .as_array()
            .expect("log")
            .iter()
            .any(|l| l["action"] == "recalled" && l["detail"] == "back in the queue: keyholder calls back"),
        "{detail}"
    );
    d.stop().await;
}

/// 11: a supervisor acknowledges or closes a group with one reason, audited per alarm; a
/// life-safety alarm is never closed in bulk.
#[tokio::test]
async fn a_supervisor_closes_a_mass_event_but_never_a_life_safety_alarm_in_bulk() {
    let mut d = daemon_with_operators().await;
    let mut sam = logged_in(&d, "sam").await;
    for z in 1..=5u16 {
        send(&d, z, Token::SiaDcs, &format!("#1234|Nri1/TA{z:02}")).await;
    }
    send(&d, 9, Token::SiaDcs, "#1234|Nri1/FA09").await;
    let ids: Vec<Value> = queue(&mut sam).await.iter().map(|a| a["id"].clone()).collect();
    assert_eq!(ids.len(), 6);
    let r = sam
        .call(json!({"op": "bulk_close", "alarms": ids, "disposition": "technical_fault", "reason": "power cut in the area"}))
        .await;
    assert_eq!(r["result"]["done"].as_array().map(Vec::len), Some(5), "{r}");
    assert_eq!(r["result"]["skipped"].as_array().map(Vec::len), Some(1), "{r}");
    let left = queue(&mut sam).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["category"], "fire");
    assert_eq!(
        d.query_i64(
            "SELECT count(*) FROM audit_log WHERE action = 'bulk_close' AND result = 'ok: power cut in the area'"
        ),
        5
    );
    d.stop().await;
}

/// 10 and 14: a handover note is shown at the next login; the search finds customers, sites
/// and alarms by name or address.
#[tokio::test]
async fn handover_notes_at_login_and_a_search_over_customers_sites_and_alarms() {
    let mut d = daemon_with_operators().await;
    let mut olga = logged_in(&d, "olga").await;
    let r = olga
        .call(json!({"op": "handover_add", "text": "S-1001: keyholder 1 on holiday until Friday"}))
        .await;
    assert_eq!(r["ok"], true);
    send(&d, 1, Token::SiaDcs, "#1234|Nri1/BA03").await;
    let mut otto = Api::connect(&socket(&d)).await;
    let login = otto.login("otto", PASSWORD).await;
    assert_eq!(
        login["result"]["handover"][0]["text"], "S-1001: keyholder 1 on holiday until Friday",
        "{login}"
    );
    for query in ["proefstraat", "Bakkerij", "S-1001", "1234", "back door"] {
        let r = otto.call(json!({"op": "search", "query": query})).await;
        let found =
            r["result"]["sites"].as_array().map_or(0, Vec::len) + r["result"]["alarms"].as_array().map_or(0, Vec::len);
        assert!(found > 0, "{query}: {r}");
    }
    let r = otto.call(json!({"op": "search", "query": "1234"})).await;
    assert_eq!(
        r["result"]["events"].as_array().map(Vec::len),
        Some(1),
        "an account's events too"
    );
    let r = otto.call(json!({"op": "search", "query": "%"})).await;
    assert_eq!(
        r["result"]["sites"].as_array().map(Vec::len),
        Some(0),
        "% is a character, not a wildcard: {r}"
    );
    d.stop().await;
}

/// 12: the supervisor item of an unknown account shows what the panel sent, from where and
/// when; once the account is imported, the item says so.
#[tokio::test]
async fn an_unknown_account_item_shows_the_frame_and_a_later_import() {
    let mut d = daemon_with_operators().await;
    let mut sam = logged_in(&d, "sam").await;
    let f = plain(Token::SiaDcs, 7, "9999", "#9999|Nri1/BA02", None);
    assert_eq!(
        tcp_exchange(d.tcp(), &f).await.as_deref().map(token_of).as_deref(),
        Some("DUH")
    );
    let id = queue(&mut sam).await[0]["id"].as_str().expect("id").to_string();
    let detail = sam.call(json!({"op": "alarm", "alarm": id})).await;
    let src = &detail["result"]["source"];
    assert_eq!(src["transport"], "tcp", "{detail}");
    assert!(
        src["peer"].as_str().unwrap_or_default().starts_with("127.0.0.1"),
        "{src}"
    );
    assert!(
        src["raw"].as_str().unwrap_or_default().contains("#9999|Nri1/BA02"),
        "{src}"
    );
    assert_eq!(src["decoded"], "SIA-DCS seq 7 account 9999: #9999|Nri1/BA02", "{src}");
    assert!(src["verdict"].as_str().unwrap_or_default().contains("DUH"), "{src}");
    assert_eq!(src["imported"], Value::Null);
    crate::common::import(&d.cfg, "[[account]]\naccount = \"9999\"\nsite = \"S-1001\"\n");
    let detail = sam.call(json!({"op": "alarm", "alarm": id})).await;
    assert_eq!(
        detail["result"]["source"]["imported"], "imported since: site S-1001 (C-1001, Bakkerij Voorbeeld (synthetic))",
        "{detail}"
    );
    d.stop().await;
}
