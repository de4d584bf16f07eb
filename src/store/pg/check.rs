//! What `meldkamer check-config` says about a PostgreSQL store: which host answered, whether
//! it takes writes, its schema version against this program's, and what an ACK will mean
//! there (`synchronous_commit`, synchronous standbys). A failure makes check-config fail; a
//! warning is said and does not.

use tokio_postgres::Client;

use super::{DbUrl, PgError, describe};

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// As it should be.
    Ok,
    /// Works, but not as an ARC would want it (said, does not fail the check).
    Warn,
    /// The daemon could not work on this database.
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// How serious.
    pub level: Level,
    /// What was checked: `reachable`, `writable`, `schema`, `synchronous_commit`, `standby`.
    pub what: &'static str,
    /// What was found, in words.
    pub text: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tag = match self.level {
            Level::Ok => "ok  ",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        };
        write!(f, "{tag} database {}: {}", self.what, self.text)
    }
}

fn finding(level: Level, what: &'static str, text: impl Into<String>) -> Finding {
    Finding {
        level,
        what,
        text: text.into(),
    }
}

/// What `synchronous_commit` means for the ACK a panel gets after the commit returns.
pub fn synchronous_commit_meaning(value: &str, standby: bool) -> (Level, String) {
    let with_standby = |s: &str| if standby { s.to_string() } else { String::new() };
    match value {
        "on" => (
            Level::Ok,
            format!(
                "on: a commit returns once its WAL is flushed to disk{}, so an ACK means the event survives a crash \
                 of the server",
                with_standby(" here and on the synchronous standby")
            ),
        ),
        "remote_apply" => (
            Level::Ok,
            format!(
                "remote_apply: a commit returns once its WAL is flushed here{}, so an ACK means the event is durable{}",
                with_standby(" and applied on the synchronous standby"),
                with_standby(" on two machines and readable on both")
            ),
        ),
        "remote_write" => (
            Level::Ok,
            format!(
                "remote_write: a commit returns once its WAL is flushed here{}; an ACKed event survives a crash of \
                 either server, but not an operating-system crash of both at once",
                with_standby(" and written (not yet flushed) by the synchronous standby")
            ),
        ),
        "local" => (
            Level::Warn,
            "local: a commit waits for the local flush only, never for a standby, so an ACK means the event is on \
             this one server: a failover to the standby may lose ACKed events (set it to on)"
                .to_string(),
        ),
        "off" => (
            Level::Warn,
            "off: a commit returns before its WAL is flushed, so an ACKed event can be lost when the server crashes \
             (up to three times wal_writer_delay); an ARC must not ACK before the event is stored: set it to on"
                .to_string(),
        ),
        other => (Level::Warn, format!("{other}: a value this check does not know")),
    }
}

/// Check the database at `url`. Never fails itself: what goes wrong is a finding.
pub async fn check(url: &DbUrl) -> Vec<Finding> {
    let mut out = Vec::new();
    let client = match super::connect(url).await {
        Ok(c) => c,
        Err(e) => {
            let why = match &e {
                PgError::Connect { source, .. } => describe(source),
                other => other.to_string(),
            };
            out.push(finding(
                Level::Fail,
                "reachable",
                format!("no host of {url} answered: {why}"),
            ));
            return out;
        }
    };
    if let Err(e) = checks(&client, &mut out).await {
        out.push(finding(Level::Fail, "query", format!("the checks stopped: {e}")));
    }
    out
}

async fn checks(client: &Client, out: &mut Vec<Finding>) -> Result<(), PgError> {
    let addr = super::server_address(client).await?;
    let row = client
        .query_one(
            "SELECT current_setting('server_version'), current_user::text, current_database()::text,
                    pg_is_in_recovery()",
            &[],
        )
        .await?;
    let (version, user, db, standby): (String, String, String, bool) = (row.get(0), row.get(1), row.get(2), row.get(3));
    out.push(finding(
        Level::Ok,
        "reachable",
        format!("{addr} answered (PostgreSQL {version}, database {db}, user {user})"),
    ));
    let schema = super::schema::version(client).await?;
    // A write that is rolled back: a row in `meta` when the schema is there, else a table (the
    // first start creates the schema).
    let probe = if schema > 0 {
        "INSERT INTO meta (key, value) VALUES ('check_config_probe', 'rolled back') \
         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
    } else {
        "CREATE TABLE meldkamer_check_config_probe (x BIGINT)"
    };
    let written = async {
        client.batch_execute("BEGIN").await?;
        let r = client.batch_execute(probe).await;
        client.batch_execute("ROLLBACK").await?;
        r
    }
    .await;
    match written {
        Ok(()) => out.push(finding(
            Level::Ok,
            "writable",
            format!(
                "{} (in a transaction rolled back)",
                if schema > 0 { "a row written" } else { "a table created" }
            ),
        )),
        Err(e) => out.push(finding(
            Level::Fail,
            "writable",
            format!(
                "a test write was refused: {}{}",
                describe(&e),
                if standby {
                    " (this server is a standby in recovery: give the URL every host and \
                     target_session_attrs=read-write)"
                } else {
                    ""
                }
            ),
        )),
    }
    let supported = super::schema::current_version();
    out.push(match schema {
        0 => finding(
            Level::Ok,
            "schema",
            format!("empty: the first start or `meldkamer store copy` creates version {supported}"),
        ),
        v if v == supported => finding(Level::Ok, "schema", format!("version {v}, this program's")),
        v if v < supported => finding(
            Level::Ok,
            "schema",
            format!("version {v}: this program upgrades it to {supported} when it opens it"),
        ),
        v => finding(
            Level::Fail,
            "schema",
            format!("version {v} is newer than this program's ({supported}): run the meldkamer that wrote it"),
        ),
    });
    let names: String = client
        .query_one("SELECT current_setting('synchronous_standby_names')", &[])
        .await?
        .get(0);
    let sync: String = client
        .query_one("SELECT current_setting('synchronous_commit')", &[])
        .await?
        .get(0);
    let has_standby = !names.trim().is_empty();
    let (level, text) = synchronous_commit_meaning(&sync, has_standby);
    out.push(finding(level, "synchronous_commit", text));
    if has_standby {
        let connected: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum')",
                &[],
            )
            .await?
            .get(0);
        out.push(if connected > 0 {
            finding(
                Level::Ok,
                "standby",
                format!("synchronous_standby_names = '{names}', {connected} synchronous standby(s) streaming"),
            )
        } else {
            finding(
                Level::Warn,
                "standby",
                format!(
                    "synchronous_standby_names = '{names}', but no synchronous standby is seen streaming (or this \
                     user may not see pg_stat_replication: grant pg_monitor): while none is, every commit waits, and \
                     so does every ACK"
                ),
            )
        });
    } else {
        out.push(finding(
            Level::Warn,
            "standby",
            "no synchronous standby (synchronous_standby_names is empty): an ACKed event is on this one server, which \
             is a single point of failure",
        ));
    }
    Ok(())
}
