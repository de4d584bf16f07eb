//! The operator API over its Unix socket: login and sessions, authorisation by role (refusals
//! audited), alarm actions, the two-factor rule, and the queue subscription.

use std::path::Path;
use std::time::Duration;

use meldkamer::operator::Role;
use meldkamer::operator::protocol::{Envelope, Op, Reply, Request, ServerMessage, Typed};
use meldkamer::protocol::frame::Token;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::common::*;

pub struct Api {
    lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    write: tokio::net::unix::OwnedWriteHalf,
    next: u64,
    pub token: Option<String>,
    pub pushes: Vec<Value>,
}

impl Api {
    pub async fn connect(path: &Path) -> Api {
        let s = UnixStream::connect(path).await.expect("connect to the operator socket");
        Api::from_stream(s)
    }

    pub fn from_stream(s: UnixStream) -> Api {
        let (r, w) = s.into_split();
        Api {
            lines: BufReader::new(r).lines(),
            write: w,
            next: 1,
            token: None,
            pushes: Vec::new(),
        }
    }

    pub async fn call(&mut self, mut req: Value) -> Value {
        let id = self.next;
        self.next += 1;
        req["id"] = json!(id);
        if let Some(t) = &self.token
            && req.get("token").is_none()
        {
            req["token"] = json!(t);
        }
        self.write
            .write_all(format!("{req}\n").as_bytes())
            .await
            .expect("write");
        loop {
            let line = tokio::time::timeout(Duration::from_secs(10), self.lines.next_line())
                .await
                .expect("response in time")
                .expect("read")
                .expect("line");
            let v: Value = serde_json::from_str(&line).expect("json");
            if v.get("push").is_some() {
                self.pushes.push(v);
                continue;
            }
            assert_eq!(v["id"], json!(id));
            return v;
        }
    }

    /// One request, or `None` if the connection closes (or nothing comes in 30 s).
    pub async fn try_call(&mut self, mut req: Value) -> Option<Value> {
        let id = self.next;
        self.next += 1;
        req["id"] = json!(id);
        self.write.write_all(format!("{req}\n").as_bytes()).await.ok()?;
        loop {
            let line = tokio::time::timeout(Duration::from_secs(30), self.lines.next_line())
                .await
                .ok()?
                .ok()??;
            let v: Value = serde_json::from_str(&line).ok()?;
            if v.get("push").is_none() {
                return Some(v);
            }
        }
    }

    pub async fn next_push(&mut self, wait: Duration) -> Option<Value> {
        if !self.pushes.is_empty() {
            return Some(self.pushes.remove(0));
        }
        let line = tokio::time::timeout(wait, self.lines.next_line()).await.ok()?.ok()??;
        serde_json::from_str(&line).ok()
    }

    pub async fn login(&mut self, name: &str, password: &str) -> Value {
        let r = self
            .call(json!({"op": "login", "name": name, "password": password}))
            .await;
        if r["ok"] == json!(true) {
            self.token = r["result"]["token"].as_str().map(str::to_string);
        }
        r
    }
}

pub const PASSWORD: &str = "correct horse battery staple";

pub async fn daemon_with_operators() -> TestDaemon {
    daemon_with_operators_and(|_| {}).await
}

/// [`daemon_with_operators`] with more settings changed.
pub async fn daemon_with_operators_and(tweak: impl FnOnce(&mut meldkamer::config::Config)) -> TestDaemon {
    let records = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/records/scenarios.toml"))
        .expect("records");
    let d = TestDaemon::start_with(&records, |c| {
        c.operator.socket = "api.sock".into();
        tweak(c);
    })
    .await;
    let conn = rusqlite::Connection::open(d.db_path()).expect("db");
    for (name, role) in [
        ("olga", Role::Operator),
        ("otto", Role::Operator),
        ("sam", Role::Supervisor),
        ("ada", Role::Admin),
    ] {
        meldkamer::operator::accounts::add(&conn, &hasher(&d), name, role, PASSWORD, 0).expect("add operator");
    }
    d
}

/// The running daemon's pepper-keyed hasher (operators' passwords are peppered).
pub fn hasher(d: &TestDaemon) -> std::sync::Arc<meldkamer::verify::Hasher> {
    d.running.as_ref().expect("running").api.verifier.hasher().clone()
}

pub fn socket(d: &TestDaemon) -> std::path::PathBuf {
    d.running
        .as_ref()
        .and_then(|r| r.api_socket.clone())
        .expect("api socket")
}

#[tokio::test]
async fn socket_is_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let mut d = daemon_with_operators().await;
    let mode = std::fs::metadata(socket(&d)).expect("socket").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    d.stop().await;
}

#[tokio::test]
async fn authorisation() {
    let mut d = daemon_with_operators().await;
    let mut api = Api::connect(&socket(&d)).await;
    // No session.
    let r = api.call(json!({"op": "queue"})).await;
    assert_eq!(r["error"]["kind"], "unauthorized");
    let r = api.call(json!({"op": "queue", "token": "00".repeat(32)})).await;
    assert_eq!(r["error"]["kind"], "unauthorized");
    // Wrong password: refused (and the same answer as an unknown name).
    let r = api.login("olga", "wrong password!!").await;
    assert_eq!(r["error"]["kind"], "unauthorized");
    let r2 = api.login("nobody", "wrong password!!").await;
    assert_eq!(r2["error"], r["error"]);
    // An operator may not reset codes or list operators: refused and audited.
    assert_eq!(api.login("olga", PASSWORD).await["ok"], true);
    let r = api.call(json!({"op": "reset_code", "contact": "0".repeat(32)})).await;
    assert_eq!(r["error"]["kind"], "forbidden");
    let r = api.call(json!({"op": "operators"})).await;
    assert_eq!(r["error"]["kind"], "forbidden");
    // A supervisor may reset (the contact here does not exist: not found, not forbidden).
    let mut sup = Api::connect(&socket(&d)).await;
    assert_eq!(sup.login("sam", PASSWORD).await["ok"], true);
    let r = sup.call(json!({"op": "reset_code", "contact": "0".repeat(32)})).await;
    assert_eq!(r["error"]["kind"], "not_found");
    // The session expires.
    d.clock.advance(time::Duration::hours(11));
    let r = api.call(json!({"op": "queue"})).await;
    assert_eq!(r["error"]["kind"], "unauthorized", "expired token refused");
    d.stop().await;
    let conn = rusqlite::Connection::open(d.db_path()).expect("db");
    let refused: i64 = conn
        .query_row(
            "SELECT count(*) FROM audit_log WHERE actor = 'olga' AND result LIKE 'refused: forbidden%'",
            [],
            |r| r.get(0),
        )
        .expect("audit");
    assert_eq!(refused, 2, "both forbidden requests are audited");
    let logins: i64 = conn
        .query_row("SELECT count(*) FROM audit_log WHERE action = 'login'", [], |r| {
            r.get(0)
        })
        .expect("audit");
    assert_eq!(logins, 4);
    let report = meldkamer::verify::audit::verify_chain(&conn, None).expect("chain");
    assert!(report.ok(), "audit chain intact");
}

/// An operator logged in on `d`'s socket and subscribed to the queue.
async fn subscribed_operator(d: &TestDaemon) -> Api {
    let mut api = Api::connect(&socket(d)).await;
    assert_eq!(api.login("olga", PASSWORD).await["ok"], true);
    assert_eq!(api.call(json!({"op": "subscribe"})).await["ok"], true);
    api
}

/// A burst of changes reaches a subscriber complete (every new alarm in some push) but read
/// at most once per gap (`PUSH_MIN_GAP`, 20 ms), not once per commit.
#[tokio::test]
async fn a_burst_of_changes_is_pushed_complete_and_coalesced() {
    let mut d = daemon_with_operators().await;
    let mut api = subscribed_operator(&d).await;
    let started = std::time::Instant::now();
    let n = 40u16;
    for z in 1..=n {
        let f = plain(Token::SiaDcs, z, "1234", &format!("#1234|Nri1/BA{:02}", z + 10), None);
        assert_eq!(
            tcp_exchange(d.tcp(), &f).await.as_deref().map(token_of).as_deref(),
            Some("ACK")
        );
    }
    let mut seen = std::collections::HashSet::new();
    let (mut pushes, mut last) = (0u32, started);
    while let Some(push) = api.next_push(Duration::from_millis(500)).await {
        pushes += 1;
        last = std::time::Instant::now();
        for a in push["changed"].as_array().expect("changed") {
            seen.insert(a["id"].as_str().unwrap_or_default().to_string());
        }
    }
    assert_eq!(seen.len(), usize::from(n), "every new alarm was pushed: {seen:?}");
    let bound = (last - started).as_millis() / 20 + 2;
    assert!(
        u128::from(pushes) <= bound,
        "{pushes} pushes in {:?}: more than one read per 20 ms",
        last - started
    );
    d.stop().await;
}

/// Each push carries what changed since the one before, and nothing else: an event that joins
/// an open alarm (counted before the writer folds it into the alarm's row) pushes that alarm
/// with its new count, a commit that changes no alarm pushes nothing, and a new alarm is pushed
/// alone.
#[tokio::test]
async fn a_push_carries_only_what_changed_since_the_last_one() {
    let mut d = daemon_with_operators().await;
    let mut api = subscribed_operator(&d).await;
    let send = |seq: u16, token: Token, data: &'static str| {
        let addr = d.tcp();
        async move {
            let f = plain(token, seq, "1234", data, None);
            let r = tcp_exchange(addr, &f).await;
            assert_eq!(r.as_deref().map(token_of).as_deref(), Some("ACK"), "frame {seq}");
        }
    };
    let wait = Duration::from_secs(5);

    send(1, Token::SiaDcs, "#1234|Nri1/BA03").await;
    let push = api.next_push(wait).await.expect("the new alarm is pushed");
    let changed = push["changed"].as_array().expect("changed");
    assert_eq!(changed.len(), 1);
    let id = changed[0]["id"].clone();
    assert_eq!(changed[0]["events"], 1);

    // The same zone again joins the alarm: pushed with two events. The test daemon's clock does
    // not move, so this event has the same time as the first: only its id is newer.
    send(2, Token::SiaDcs, "#1234|Nri1/BA03").await;
    let push = api.next_push(wait).await.expect("the joined alarm is pushed");
    assert_eq!(push["changed"].as_array().map(Vec::len), Some(1));
    assert_eq!(push["changed"][0]["id"], id);
    assert_eq!(push["changed"][0]["events"], 2);

    // A link test is committed (every subscriber re-reads) but changes no alarm: no push.
    send(3, Token::Null, "").await;
    let none = api.next_push(Duration::from_millis(300)).await;
    assert!(none.is_none(), "nothing changed, nothing pushed: {none:?}");

    // Another zone opens a second alarm: pushed alone.
    send(4, Token::SiaDcs, "#1234|Nri1/BA04").await;
    let push = api.next_push(wait).await.expect("the second alarm is pushed");
    let changed = push["changed"].as_array().expect("changed");
    assert_eq!(changed.len(), 1, "only the new alarm: {push}");
    assert_ne!(changed[0]["id"], id);
    d.stop().await;
}

/// An alert that joins an open alarm without an event row (here an unknown account calling
/// again) is pushed with its new time, even in the millisecond of a change already pushed.
#[tokio::test]
async fn an_alert_joining_an_alarm_without_an_event_is_pushed() {
    let mut d = daemon_with_operators().await;
    let mut sup = Api::connect(&socket(&d)).await;
    assert_eq!(sup.login("sam", PASSWORD).await["ok"], true);
    assert_eq!(sup.call(json!({"op": "subscribe"})).await["ok"], true);
    let send = |seq: u16, account: &'static str, answer: &'static str| {
        let addr = d.tcp();
        async move {
            let f = plain(Token::SiaDcs, seq, account, &format!("#{account}|Nri1/BA03"), None);
            let r = tcp_exchange(addr, &f).await;
            assert_eq!(r.as_deref().map(token_of).as_deref(), Some(answer), "frame {seq}");
        }
    };
    let wait = Duration::from_secs(5);

    send(1, "9999", "DUH").await;
    let push = sup
        .next_push(wait)
        .await
        .expect("the unknown account's alarm is pushed");
    let unknown = push["changed"][0].clone();
    assert_eq!(unknown["queue"], "supervisor");
    let first_ms = unknown["last_event_ms"].as_i64().expect("time");

    // A second later a burglary opens another alarm: pushed, and now the newest time of all.
    d.clock.advance(time::Duration::seconds(1));
    send(2, "1234", "ACK").await;
    let push = sup.next_push(wait).await.expect("the burglary is pushed");
    assert_eq!(push["changed"].as_array().map(Vec::len), Some(1));
    assert_ne!(push["changed"][0]["id"], unknown["id"]);

    // In that same millisecond the unknown account calls again: no event row, no new event
    // time beyond what was pushed; its alarm's time moves, and that is pushed.
    send(3, "9999", "DUH").await;
    let push = sup.next_push(wait).await.expect("the repeated alert is pushed");
    assert_eq!(push["changed"].as_array().map(Vec::len), Some(1), "{push}");
    assert_eq!(push["changed"][0]["id"], unknown["id"]);
    assert_eq!(push["changed"][0]["last_event_ms"].as_i64(), Some(first_ms + 1_000));

    // The alarm's history records the repeat.
    let detail = sup.call(json!({"op": "alarm", "alarm": unknown["id"]})).await;
    let log = detail["result"]["log"].as_array().expect("log");
    assert!(log.iter().any(|l| l["action"] == "repeated"), "{detail}");
    d.stop().await;
}

#[tokio::test]
async fn alarm_handling_and_the_queue_subscription() {
    let mut d = daemon_with_operators().await;
    let mut api = subscribed_operator(&d).await;
    let queue = api.call(json!({"op": "queue"})).await;
    assert_eq!(queue["result"]["alarms"].as_array().map(Vec::len), Some(0));

    // A burglary arrives over DC-09: the subscription pushes it.
    let f = plain(Token::SiaDcs, 1, "1234", "#1234|Nri1/BA03", None);
    assert_eq!(
        tcp_exchange(d.tcp(), &f).await.as_deref().map(token_of).as_deref(),
        Some("ACK")
    );
    let push = api
        .next_push(Duration::from_secs(5))
        .await
        .expect("a push for the new alarm");
    assert_eq!(push["push"], "queue");
    let alarm = push["changed"][0].clone();
    assert_eq!(alarm["category"], "burglary");
    let id = alarm["id"].as_str().expect("id").to_string();
    assert_eq!(id.len(), 32, "opaque 128-bit id");

    let detail = api.call(json!({"op": "alarm", "alarm": id})).await;
    let r = &detail["result"];
    assert_eq!(r["zone_description"], "Back door, ground floor");
    assert_eq!(r["customer"]["site_ref"], "S-1001");
    assert_eq!(r["contacts"][0]["name"], "P. Voorbeeld (synthetic)");
    assert_eq!(r["procedure"].as_array().map(Vec::len), Some(3));
    assert_eq!(r["events"].as_array().map(Vec::len), Some(1));

    assert_eq!(api.call(json!({"op": "acknowledge", "alarm": id})).await["ok"], true);
    let again = api.call(json!({"op": "acknowledge", "alarm": id})).await;
    assert_eq!(again["error"]["kind"], "conflict");
    assert_eq!(
        api.call(json!({"op": "note", "alarm": id, "text": "called keyholder 1"}))
            .await["ok"],
        true
    );
    assert_eq!(
        api.call(json!({"op": "step", "alarm": id, "step": 1, "done": true}))
            .await["ok"],
        true
    );
    let detail = api.call(json!({"op": "alarm", "alarm": id})).await;
    assert_eq!(detail["result"]["procedure"][0]["done_by"], "olga");

    // One factor (the panel disarm by user 5) is not enough to cancel.
    let open = plain(Token::AdmCid, 2, "1234", "#1234|1401 01 005", None);
    assert_eq!(
        tcp_exchange(d.tcp(), &open).await.as_deref().map(token_of).as_deref(),
        Some("ACK")
    );
    let r = api
        .call(json!({"op": "close", "alarm": id, "disposition": "cancelled_by_customer"}))
        .await;
    assert_eq!(r["error"]["kind"], "conflict");
    assert!(r["error"]["message"].as_str().expect("msg").contains("phone"), "{r}");
    // Unknown ids are simply not found.
    let r = api.call(json!({"op": "acknowledge", "alarm": "f".repeat(32)})).await;
    assert_eq!(r["error"]["kind"], "not_found");
    // Closing as dispatched works and leaves the queue.
    assert_eq!(
        api.call(json!({"op": "close", "alarm": id, "disposition": "dispatched"}))
            .await["ok"],
        true
    );
    let queue = api.call(json!({"op": "queue"})).await;
    assert_eq!(queue["result"]["alarms"].as_array().map(Vec::len), Some(0));
    // The supervisor queue is not shown to operators.
    let unknown = plain(Token::SiaDcs, 3, "9999", "#9999|Nri1/BA01", None);
    tcp_exchange(d.tcp(), &unknown).await;
    let queue = api.call(json!({"op": "queue"})).await;
    assert_eq!(queue["result"]["alarms"].as_array().map(Vec::len), Some(0));
    let mut sup = Api::connect(&socket(&d)).await;
    sup.login("sam", PASSWORD).await;
    let queue = sup.call(json!({"op": "queue"})).await;
    assert_eq!(queue["result"]["alarms"][0]["queue"], "supervisor");
    // The same zone again after the close: a new alarm (the writer remembers open alarms per
    // zone; the closed one must not be joined).
    for seq in [4, 5] {
        let again = plain(Token::SiaDcs, seq, "1234", "#1234|Nri1/BA03", None);
        assert_eq!(
            tcp_exchange(d.tcp(), &again).await.as_deref().map(token_of).as_deref(),
            Some("ACK")
        );
    }
    let queue = api.call(json!({"op": "queue"})).await;
    let alarms = queue["result"]["alarms"].as_array().expect("alarms");
    assert_eq!(alarms.len(), 1, "{queue}");
    assert_ne!(alarms[0]["id"], id.as_str(), "a new alarm");
    assert_eq!(alarms[0]["events"], 2, "both events joined the new alarm");
    d.stop().await;
    let conn = rusqlite::Connection::open(d.db_path()).expect("db");
    let actions: Vec<String> = conn
        .prepare("SELECT action FROM audit_log WHERE actor = 'olga' ORDER BY id")
        .expect("q")
        .query_map([], |r| r.get(0))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("all");
    for a in ["login", "acknowledge", "note", "step", "close"] {
        assert!(actions.iter().any(|x| x == a), "{a} audited: {actions:?}");
    }
}

/// The operator API over TCP only with TLS: the console's client connects with the server's
/// certificate as its trust anchor, logs in and reads the queue; a plain TCP client gets
/// nothing it can use.
#[tokio::test]
async fn the_api_over_tls() {
    use meldkamer::console::client::{Endpoint, NetEvent, run};
    let dir = tempfile::tempdir().expect("dir");
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
    let (cert, key) = (dir.path().join("api.crt"), dir.path().join("api.key"));
    std::fs::write(&cert, ck.cert.pem()).expect("cert");
    std::fs::write(&key, ck.signing_key.serialize_pem()).expect("key");
    let records = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/records/scenarios.toml"))
        .expect("records");
    let (c, k) = (cert.display().to_string(), key.display().to_string());
    let mut d = TestDaemon::start_with(&records, move |cfg| {
        cfg.operator.tcp_listen = "127.0.0.1:0".into();
        cfg.operator.tls_cert = c;
        cfg.operator.tls_key = k;
    })
    .await;
    {
        let conn = rusqlite::Connection::open(d.db_path()).expect("db");
        meldkamer::operator::accounts::add(&conn, &hasher(&d), "tina", Role::Operator, PASSWORD, 0).expect("operator");
    }
    let addr = d.running.as_ref().and_then(|r| r.api_tls_addr).expect("TLS address");

    let (out_tx, out_rx) = tokio::sync::mpsc::channel(8);
    let (net_tx, mut net_rx) = tokio::sync::mpsc::channel(8);
    let endpoint = Endpoint::Tls {
        addr: addr.to_string(),
        server_name: "localhost".into(),
        ca: cert.clone(),
    };
    let client = tokio::spawn(run(endpoint, out_rx, net_tx));
    assert!(matches!(next_event(&mut net_rx).await, NetEvent::Connected));
    out_tx
        .send(Envelope {
            id: Some(1),
            token: None,
            request: Request::Login {
                name: "tina".into(),
                password: Typed::new(PASSWORD),
            },
        })
        .await
        .expect("send");
    let NetEvent::Message(ServerMessage::Response(m)) = next_event(&mut net_rx).await else {
        panic!("a response")
    };
    assert!(m.ok, "{m:?}");
    let Ok(Reply::Login(login)) = Op::Login.decode(m.result.unwrap_or_default()) else {
        panic!("a login result")
    };
    out_tx
        .send(Envelope {
            id: Some(2),
            token: Some(login.token),
            request: Request::Queue,
        })
        .await
        .expect("send");
    let NetEvent::Message(ServerMessage::Response(m)) = next_event(&mut net_rx).await else {
        panic!("a response")
    };
    assert!(m.ok, "{m:?}");
    drop(out_tx);
    let _ = client.await;

    // Plain text on the TLS port gets no API answer.
    let mut plain = tokio::net::TcpStream::connect(addr).await.expect("connect");
    plain
        .write_all(b"{\"id\":1,\"op\":\"login\",\"name\":\"tina\",\"password\":\"x\"}\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut plain, &mut buf),
    )
    .await;
    assert!(
        !String::from_utf8_lossy(&buf).contains("\"ok\""),
        "no JSON over plain TCP"
    );
    d.stop().await;
}

#[test]
fn the_api_over_tcp_needs_tls() {
    let e = meldkamer::config::Config::from_toml("[operator]\ntcp_listen = \"127.0.0.1:9000\"\n", "t")
        .expect_err("TCP without TLS is refused");
    assert!(e.to_string().contains("TLS"), "{e}");
}

async fn next_event(
    rx: &mut tokio::sync::mpsc::Receiver<meldkamer::console::client::NetEvent>,
) -> meldkamer::console::client::NetEvent {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("in time")
        .expect("event")
}
