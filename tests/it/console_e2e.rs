//! End to end: the real daemon and the real console binary in a terminal (tmux). Log in, see
//! an alarm arrive, open it, acknowledge, the panel is disarmed by user 5, verify the caller's
//! phone code, close as cancelled by the customer; then the database and the audit log must
//! show exactly that.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meldkamer::protocol::frame::Token;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_meldkamer");
const CODE: &str = "739164";
const PASSWORD: &str = "console e2e password";

struct Tmux {
    socket: String,
}

/// One console in the tmux server: a session of its own.
struct Console<'a> {
    tmux: &'a Tmux,
    target: &'a str,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Start `cmd` in a new session `name` of `w`×`h`.
    fn start<'a>(&'a self, name: &'a str, w: u16, h: u16, cmd: &str) -> Console<'a> {
        let (w, h) = (w.to_string(), h.to_string());
        self.run(&["new-session", "-d", "-s", name, "-x", &w, "-y", &h, cmd]);
        // Deliver Escape at once (not as the start of an Alt- sequence).
        self.run(&["set-option", "-s", "escape-time", "0"]);
        Console {
            tmux: self,
            target: name,
        }
    }
}

impl Console<'_> {
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", self.target];
        args.extend_from_slice(keys);
        self.tmux.run(&args);
    }

    fn text(&self, s: &str) {
        self.tmux.run(&["send-keys", "-t", self.target, "-l", s]);
    }

    fn screen(&self) -> String {
        self.tmux.run(&["capture-pane", "-p", "-t", self.target])
    }

    fn wait_gone(&self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.screen().contains(what) {
            assert!(
                Instant::now() < deadline,
                "{}: waited for {what:?} to go away:\n{}",
                self.target,
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_for(&self, what: &str) -> String {
        self.wait_for_up_to(what, Duration::from_secs(20))
    }

    fn wait_for_up_to(&self, what: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let s = self.screen();
            if s.contains(what) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{}: waited for {what:?}; the screen shows:\n{s}",
                self.target
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Log in and wait for the queue.
    fn login(&self, name: &str) {
        self.wait_for("Log in");
        self.text(name);
        self.keys(&["Tab"]);
        self.text(PASSWORD);
        self.keys(&["Enter"]);
        self.wait_for(&format!("{name} ("));
        self.wait_for("Alarm queue");
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // Our own tmux server (its own socket name), not anyone else's.
        let _ = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
    }
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn meldkamer(config: &Path, args: &[&str], stdin: Option<&str>) {
    let mut c = Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    if let Some(s) = stdin {
        c.stdin.take().expect("stdin").write_all(s.as_bytes()).expect("write");
    }
    let out = c.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Start `meldkamer serve` and wait for its ready line; returns it with its TCP address.
fn serve(config: &Path) -> (Daemon, std::net::SocketAddr) {
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve");
    let stdout = child.stdout.take().expect("stdout");
    let daemon = Daemon(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("ready line");
    let tcp = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("tcp="))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no tcp address in {line:?}"));
    (daemon, tcp)
}

fn send_to(rt: &tokio::runtime::Runtime, tcp: std::net::SocketAddr, frame: Vec<u8>) -> Option<Vec<u8>> {
    rt.block_on(tcp_exchange(tcp, &frame))
}

/// A daemon's files in a temporary directory: the configuration (with `extra` appended), the
/// scenario records imported, and operators added with [`PASSWORD`].
struct Site {
    dir: tempfile::TempDir,
    config: PathBuf,
    db: PathBuf,
    sock: PathBuf,
}

fn site(extra: &str, operators: &[(&str, &str)]) -> Site {
    if Command::new("tmux").arg("-V").output().is_err() {
        panic!("tmux is needed for the console end-to-end test (.ci/run installs it)");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let db: PathBuf = dir.path().join("e2e.db");
    let sock = dir.path().join("api.sock");
    let config = dir.path().join("meldkamer.toml");
    std::fs::write(
        &config,
        format!(
            "[receiver]\ntcp_listen = \"127.0.0.1:0\"\nudp_listen = \"\"\n[store]\npath = \"{}\"\nload_demo_data = false\n\
             [metrics]\nlisten = \"\"\n[operator]\nsocket = \"{}\"\n{extra}",
            db.display(),
            sock.display()
        ),
    )
    .expect("config");
    let records = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/records/scenarios.toml");
    meldkamer(&config, &["import", records], None);
    for (name, role) in operators {
        meldkamer(
            &config,
            &["operator", "add", name, "--role", role, "--password-stdin"],
            Some(&format!("{PASSWORD}\n")),
        );
    }
    Site { dir, config, db, sock }
}

#[test]
fn operator_cancels_an_alarm_with_both_factors_from_the_console() {
    let Site {
        dir: _dir,
        config,
        db,
        sock,
    } = site("", &[("olga", "operator")]);
    meldkamer(
        &config,
        &["code", "set", "--contact", "K-1001-1", "--stdin"],
        Some(&format!("{CODE}\n")),
    );

    let (daemon, tcp) = serve(&config);

    let tmux = Tmux {
        socket: format!("meldkamer-e2e-{}", std::process::id()),
    };
    let cmd = format!("{BIN} console --socket {}", sock.display());
    let console = tmux.start("console", 120, 40, &cmd);
    console.login("olga");
    console.wait_for("No open alarms");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let send = |frame: Vec<u8>| send_to(&rt, tcp, frame);
    let ack = send(plain(Token::SiaDcs, 1, "1234", "#1234|Nri1/BA03", None));
    assert_eq!(ack.as_deref().map(token_of).as_deref(), Some("ACK"));
    // The alarm appears without a key press.
    console.wait_for("BURGLARY");
    console.keys(&["Enter"]);
    console.wait_for("Back door, ground floor");
    console.keys(&["a"]);
    console.wait_for("acknowledge: ok");
    // The panel is disarmed by user 5: the keypad factor.
    let ack = send(plain(Token::AdmCid, 2, "1234", "#1234|1401 01 005", None));
    assert_eq!(ack.as_deref().map(token_of).as_deref(), Some("ACK"));
    console.wait_for("Panel disarm ✓");
    // The caller gives the phone code.
    console.keys(&["v"]);
    console.wait_for("Verify phone cancellation code");
    console.text(CODE);
    let s = console.screen();
    assert!(!s.contains(CODE), "the code is never on screen:\n{s}");
    console.keys(&["Enter"]);
    console.wait_for("ACCEPTED");
    console.keys(&["Escape"]);
    console.wait_gone("Verify phone cancellation code");
    console.wait_for("Phone code   ✓");
    console.keys(&["c"]);
    console.wait_for("Cancelled by customer");
    console.keys(&["Enter"]);
    // Closing is deliberate: it asks first.
    console.wait_for("Close as Cancelled by customer (both factors)? y/n");
    console.keys(&["y"]);
    console.wait_for("close: ok");
    console.keys(&["Escape"]);
    console.wait_for("No open alarms");

    // The daemon goes away: the console shows it and keeps retrying; when the daemon is back
    // the console is in the same session (sessions survive a restart). Never a crash.
    drop(daemon);
    console.wait_for("CONNECTION LOST");
    let (daemon, tcp) = serve(&config);
    console.wait_for(" connected ");
    // Still logged in: a new alarm reaches the queue without a login.
    let ack = send_to(&rt, tcp, plain(Token::SiaDcs, 3, "1234", "#1234|Nri1/BA07", None));
    assert_eq!(ack.as_deref().map(token_of).as_deref(), Some("ACK"));
    let s = console.wait_for("olga (operator)");
    assert!(!s.contains("Log in"), "no login after a restart:\n{s}");
    console.wait_for("1 open");
    console.keys(&["Escape"]);
    drop(tmux);
    drop(daemon);

    let conn = rusqlite::Connection::open(&db).expect("db");
    let (state, disposition, closed_by, ack_by, keypad, phone): (String, String, String, String, String, bool) = conn
        .query_row(
            "SELECT state, disposition, closed_by, acknowledged_by, keypad_factor_user, phone_factor_ms IS NOT NULL
             FROM alarms WHERE category = 'burglary'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
        )
        .expect("the alarm");
    assert_eq!(
        (
            state.as_str(),
            disposition.as_str(),
            closed_by.as_str(),
            ack_by.as_str(),
            keypad.as_str(),
            phone
        ),
        ("closed", "cancelled_by_customer", "olga", "olga", "5", true)
    );
    let audit: Vec<(String, String)> = conn
        .prepare("SELECT action, result FROM audit_log WHERE actor = 'olga' ORDER BY id")
        .expect("q")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("all");
    let actions: Vec<&str> = audit.iter().map(|(a, _)| a.as_str()).collect();
    for want in ["login", "acknowledge", "close"] {
        assert!(actions.contains(&want), "{want} in {audit:?}");
    }
    assert!(
        audit.iter().any(|(a, r)| a.contains("verify") && r == "accepted"),
        "the verification is audited: {audit:?}"
    );
    // The daemon keyed the chain with the audit key beside the database.
    let cfg = meldkamer::config::Config::load(&config).expect("config");
    meldkamer::verify::audit_key_from_config(&cfg).expect("audit key");
    let report = meldkamer::verify::audit::verify_chain(&conn, None).expect("chain");
    assert!(report.ok());
}

/// The first line of the queue below its column header.
fn top_row(screen: &str) -> &str {
    let mut lines = screen.lines().skip_while(|l| !l.contains("Pri Category"));
    lines.nth(1).unwrap_or_default()
}

/// The operator's shift with two operators and a supervisor, each in a console of their own:
/// a duress alarm behind many escalated burglaries is first and announced on every screen; a
/// hold-up after a panic runs under the hold-up procedure; the second operator is refused on
/// the first's alarm and told who handles it; a supervisor takes it over; an alarm put aside
/// comes back; its timeline shows every action taken; a daemon restart keeps the sessions.
#[test]
fn the_operators_shift_in_three_consoles() {
    let site = site(
        "[alarms]\nescalate_after_secs = 1\n",
        &[("olga", "operator"), ("otto", "operator"), ("sam", "supervisor")],
    );
    let rules = site.dir.path().join("rules.toml");
    std::fs::write(&rules, "[[priority_rule]]\ncategory = \"burglary\"\npriority = 2\n").expect("rules");
    meldkamer(&site.config, &["import", rules.to_str().expect("path")], None);
    let (daemon, tcp) = serve(&site.config);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let send = |tcp, seq: u16, token: Token, data: &str| {
        let ack = send_to(&rt, tcp, plain(token, seq, "1234", data, None));
        assert_eq!(ack.as_deref().map(token_of).as_deref(), Some("ACK"), "{data}");
    };

    let tmux = Tmux {
        socket: format!("meldkamer-e2e-shift-{}", std::process::id()),
    };
    let cmd = format!("{BIN} console --socket {}", site.sock.display());
    let olga = tmux.start("olga", 160, 50, &cmd);
    let otto = tmux.start("otto", 160, 50, &cmd);
    let sam = tmux.start("sam", 160, 50, &cmd);
    for (c, name) in [(&olga, "olga"), (&otto, "otto"), (&sam, "sam")] {
        c.login(name);
    }

    // Olga works a burglary: every action goes on its record; then she puts it aside for a
    // minute with a note, and it leaves the queue's top for a section of its own.
    send(tcp, 1, Token::SiaDcs, "#1234|Nri1/BA01");
    olga.wait_for("BURGLARY");
    olga.keys(&["Enter"]);
    olga.wait_for("Zone 1: Front door");
    olga.keys(&["a"]);
    olga.wait_for("acknowledge: ok");
    olga.keys(&["s"]);
    olga.wait_for("handled by you (olga)");
    olga.keys(&["n"]);
    olga.text("keyholder on the way");
    olga.keys(&["Enter"]);
    olga.wait_for("note: ok");
    olga.keys(&["1"]);
    olga.wait_for("Procedure 1/3 done");
    olga.keys(&["l"]);
    olga.wait_for("Log a call: whom?");
    olga.keys(&["Enter"]);
    olga.wait_for("Log a call: which number?");
    olga.keys(&["Enter"]);
    olga.wait_for("Log a call: how did it go?");
    olga.keys(&["Down", "Enter"]);
    olga.wait_for("call: ok");
    olga.wait_for("no answer");
    olga.keys(&["r"]);
    olga.wait_for("Put aside for");
    olga.keys(&["BSpace", "BSpace"]);
    olga.text("1");
    olga.keys(&["Tab"]);
    olga.text("keyholder calls back");
    olga.keys(&["Enter"]);
    olga.wait_for("recall: ok");
    olga.wait_for("Put aside (1)");
    olga.wait_for("1 put aside)");

    // Fifty burglaries escalate to priority 1 unacknowledged; then a duress alarm arrives.
    for z in 2..=51u16 {
        send(tcp, z, Token::SiaDcs, &format!("#1234|Nri1/BA{z:02}"));
    }
    let conn = rusqlite::Connection::open(&site.db).expect("db");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let escalated: i64 = conn
            .query_row(
                "SELECT count(*) FROM alarms WHERE escalated_ms IS NOT NULL AND priority = 1",
                [],
                |r| r.get(0),
            )
            .expect("count");
        if escalated >= 50 {
            break;
        }
        assert!(Instant::now() < deadline, "{escalated} of 50 escalated");
        std::thread::sleep(Duration::from_millis(100));
    }
    send(tcp, 100, Token::AdmCid, "#1234|1121 01 005");
    for c in [&olga, &otto, &sam] {
        let s = c.wait_for("DURESS NOT ACKNOWLEDGED");
        let top = top_row(&s);
        assert!(top.contains("DURESS"), "{}: the duress is first:\n{s}", c.target);
    }
    // The selection went to it: Enter opens it; acknowledged, the banner goes everywhere.
    olga.keys(&["Enter"]);
    olga.wait_for("DURESS: do not cancel");
    olga.keys(&["a"]);
    olga.wait_for("acknowledge: ok");
    for c in [&olga, &otto, &sam] {
        c.wait_gone("DURESS NOT ACKNOWLEDGED");
    }
    olga.keys(&["Escape"]);
    olga.wait_for("Pri Category");

    // A panic, then a hold-up at the same zone: the hold-up is its own alarm, under its own
    // procedure.
    send(tcp, 101, Token::SiaDcs, "#1234|Nri1/PA07");
    send(tcp, 102, Token::SiaDcs, "#1234|Nri1/HA07");
    for c in [&olga, &otto, &sam] {
        c.wait_for("HOLD-UP NOT ACKNOWLEDGED");
    }
    otto.keys(&["Enter"]);
    let s = otto.wait_for("Do NOT call the site");
    assert!(s.contains(" HOLD-UP "), "{s}");
    // Olga takes it from the queue; Otto, on it, is refused and told who handles it.
    olga.keys(&["s"]);
    olga.wait_for("handled by you (olga)");
    olga.wait_for("Do NOT call the site");
    otto.wait_for("handled by olga");
    otto.keys(&["n"]);
    otto.text("I will call the police");
    otto.keys(&["Enter"]);
    otto.wait_for("note refused: olga is handling this alarm");
    // Sam takes it over, with a reason.
    sam.keys(&["Enter"]);
    sam.wait_for("Do NOT call the site");
    sam.keys(&["t"]);
    sam.wait_for("Take this alarm over from olga");
    sam.text("olga is on another call");
    sam.keys(&["Enter"]);
    sam.wait_for("takeover: ok");
    sam.wait_for("handled by you (sam)");
    olga.wait_for("handled by sam");
    otto.wait_for("handled by sam");

    // The alarm put aside comes back by itself (a minute after it left).
    olga.keys(&["Escape"]);
    olga.wait_for("Pri Category");
    let deadline = Instant::now() + Duration::from_secs(100);
    // (The queue's title counts them; the section itself is below the screen by now.)
    while olga.screen().contains("1 put aside)") {
        assert!(Instant::now() < deadline, "the put-aside alarm did not come back");
        std::thread::sleep(Duration::from_millis(250));
    }
    // Found by its zone, opened: its timeline has every action, with who.
    olga.keys(&["3"]);
    olga.wait_for("Search sites, alarms and events");
    olga.text("Front door");
    olga.keys(&["Enter"]);
    olga.wait_for("Alarms (1)");
    olga.keys(&["Enter"]);
    let s = olga.wait_for("back in the queue: keyholder calls back");
    for want in [
        "olga     acknowledged",
        "olga     in progress  started",
        "olga     note         keyholder on the way",
        "olga     step done    step 1:",
        "olga     call         called P. Voorbeeld (synthetic) on +31 20 555 0101: no answer",
        "olga     recall set   put aside for 1 min by olga: keyholder calls back",
        "system   recalled",
    ] {
        assert!(s.contains(want), "{want:?} in the timeline:\n{s}");
    }

    // A daemon restart keeps every session.
    drop(daemon);
    for c in [&olga, &otto, &sam] {
        c.wait_for("CONNECTION LOST");
    }
    let (daemon, _tcp) = serve(&site.config);
    for (c, name) in [(&olga, "olga"), (&otto, "otto"), (&sam, "sam")] {
        let s = c.wait_for(" connected ");
        assert!(!s.contains("Log in") && s.contains(&format!("{name} (")), "{s}");
    }
    drop(tmux);
    drop(daemon);

    let audit = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).expect("audit") };
    assert_eq!(
        audit("SELECT count(*) FROM audit_log WHERE actor = 'sam' AND action = 'takeover' AND result = 'ok'"),
        1
    );
    assert_eq!(
        audit(
            "SELECT count(*) FROM audit_log WHERE actor = 'otto' AND action = 'note' \
             AND result LIKE 'refused: conflict: olga is handling%'"
        ),
        1
    );
}
