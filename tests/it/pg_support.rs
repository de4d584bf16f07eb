//! A real PostgreSQL server for the tests, started by the tests themselves: `initdb` into a
//! temporary directory, `pg_ctl start` on a free loopback port, stopped by its postmaster PID
//! and removed when dropped. No mock: what the PostgreSQL store is tested against is the server
//! it runs on in production (the Debian `postgresql-15` package; `.ci/run` installs it).
//!
//! `initdb` and `postgres` refuse to run as root. When the tests run as root (CI, the
//! development machines), every server command runs as `nobody` through `setpriv`, in a
//! directory chowned to it; as any other user they run directly.

#![allow(dead_code)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The role `initdb` creates (the superuser of the test cluster; auth `trust` on loopback).
pub const USER: &str = "meldkamer";
/// The database each server has besides `postgres`.
pub const DB: &str = "meldkamer";

/// One running test server.
pub struct PgServer {
    dir: Option<tempfile::TempDir>,
    bin: PathBuf,
    port: u16,
    pid: u32,
}

/// The directory with `initdb`, `pg_ctl` and `postgres`: the highest
/// `/usr/lib/postgresql/N/bin`, else `pg_config --bindir`. Panics (failing the test, never
/// skipping it) when there is none.
pub fn bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return bin;
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && bin.join("initdb").exists() {
            return bin;
        }
    }
    panic!(
        "the PostgreSQL tests need the PostgreSQL server binaries (initdb, pg_ctl, postgres) and found none in \
         /usr/lib/postgresql/*/bin nor through pg_config: install them with `apt-get install postgresql-15` \
         (.ci/run does this)"
    );
}

/// Root runs the server commands as `nobody`.
fn as_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// A command for one of the server binaries, as the unprivileged user when we are root.
fn server_command(bin: &Path, program: &str) -> Command {
    if as_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
            .arg(bin.join(program));
        c
    } else {
        Command::new(bin.join(program))
    }
}

fn run(mut c: Command, what: &str) -> Output {
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run it ({e}); is setpriv (util-linux) installed?"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("addr").port()
}

impl PgServer {
    /// initdb, start, create the database [`DB`]. Panics with the server's log when it fails.
    pub fn start() -> PgServer {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("meldkamer-pg-")
            .tempdir()
            .expect("tempdir");
        if as_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.arg("nobody:nogroup").arg(dir.path());
                    c
                },
                "chown of the test directory",
            );
        }
        let data = dir.path().join("data");
        let mut initdb = server_command(&bin, "initdb");
        initdb
            .args(["-A", "trust", "-U", USER, "--no-sync", "-E", "UTF8", "--locale=C", "-D"])
            .arg(&data);
        run(initdb, "initdb");
        // A port taken between free_port() and the bind is retried with another.
        for attempt in 0..5 {
            let port = free_port();
            let mut ctl = server_command(&bin, "pg_ctl");
            ctl.arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(dir.path().join("server.log"))
                .arg("-o")
                .arg(format!(
                    "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=on -c shared_buffers=16MB \
                     -c max_connections=30",
                    dir.path().display()
                ))
                .args(["-w", "-t", "60", "start"]);
            let out = ctl.output().expect("pg_ctl runs");
            if !out.status.success() {
                let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
                if attempt < 4 && log.contains("could not bind") {
                    continue;
                }
                panic!(
                    "pg_ctl start failed: {}\n{}\nserver log:\n{log}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let pid = postmaster_pid(&data);
            let server = PgServer {
                dir: Some(dir),
                bin,
                port,
                pid,
            };
            server.wait_ready();
            server.createdb(DB);
            return server;
        }
        unreachable!("five attempts return or panic")
    }

    /// `pg_ctl -w` waited for the server; this also waits for it to answer a connection on
    /// its TCP port (what the code under test uses).
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut c = Command::new(self.bin.join("pg_isready"));
            c.args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                USER,
                "-d",
                "postgres",
            ]);
            if c.output().map(|o| o.status.success()).unwrap_or(false) {
                return;
            }
            assert!(Instant::now() < deadline, "the test server does not accept connections");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Create a database (owned by [`USER`]).
    pub fn createdb(&self, name: &str) {
        let mut c = Command::new(self.bin.join("createdb"));
        c.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER, name]);
        run(c, "createdb");
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The postmaster's PID.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `postgres://meldkamer@127.0.0.1:PORT/DB`.
    pub fn url(&self) -> String {
        self.url_for(DB)
    }

    /// The URL of another database on this server.
    pub fn url_for(&self, db: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{db}", self.port)
    }

    /// Run SQL with psql as the superuser (for what the code under test must never do itself:
    /// disabling a trigger, altering a row behind its back). Panics when it fails.
    pub fn psql(&self, sql: &str) -> String {
        let mut c = Command::new(self.bin.join("psql"));
        c.args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            USER,
            "-d",
            DB,
            "-c",
            sql,
        ]);
        String::from_utf8_lossy(&run(c, &format!("psql -c {sql:?}")).stdout)
            .trim()
            .to_string()
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.as_ref().map(|d| d.path().join("data")).unwrap_or_default()
    }

    /// Stop the server by its PID and wait for it to be gone. SIGINT is PostgreSQL's fast
    /// shutdown (open sessions are ended; SIGTERM's smart shutdown would wait for every client
    /// of the test to disconnect first); SIGQUIT after 30 s if it is still there.
    pub fn stop(&mut self) {
        if self.pid == 0 {
            return;
        }
        let signal = |sig: &str| {
            let _ = Command::new("kill").args([sig, &self.pid.to_string()]).status();
        };
        let gone = |pid: u32| !Path::new(&format!("/proc/{pid}")).exists() || zombie(pid);
        signal("-INT");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !gone(self.pid) {
            if Instant::now() > deadline {
                signal("-QUIT");
                std::thread::sleep(Duration::from_secs(1));
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.pid = 0;
    }
}

/// A process that exited but was not reaped by its parent (the postmaster's parent is init
/// after pg_ctl returned, which reaps it soon; until then it only looks alive).
fn zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// The first line of `postmaster.pid`.
fn postmaster_pid(data: &Path) -> u32 {
    let text = std::fs::read_to_string(data.join("postmaster.pid")).expect("postmaster.pid after start");
    text.lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("a PID on the first line of postmaster.pid")
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
        // The directory goes with the TempDir.
        self.dir.take();
    }
}

/// The harness itself: a server starts, answers on loopback as the test user, and is gone
/// (process and directory) after the drop.
#[test]
fn a_test_server_starts_answers_and_is_removed() {
    let pg = PgServer::start();
    let (pid, dir) = (pg.pid(), pg.data_dir());
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    assert_eq!(
        pg.psql("SELECT current_user || ' ' || current_setting('fsync')"),
        "meldkamer on"
    );
    assert_eq!(pg.psql("SHOW listen_addresses"), "127.0.0.1");
    drop(pg);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists() || zombie(pid),
        "the postmaster is stopped"
    );
    assert!(!dir.exists(), "the data directory is removed");
}
