//! The PostgreSQL schema and its migrations, numbered like SQLite's (`store::schema`): a
//! PostgreSQL database at version N has the tables, columns, constraints and indexes of a SQLite
//! database at version N. The first step builds version 19 at once (PostgreSQL arrived then);
//! every later SQLite migration needs its twin here, or the schema test fails.
//!
//! The version is kept in the table `schema_version`, one row per step applied. Each step runs
//! in its own transaction under an advisory lock, so two receivers starting at once on one
//! database migrate it once; a database from a newer version is refused rather than guessed at.

use tokio_postgres::Client;

use super::PgError;

/// A step: the version it produces and its SQL.
struct Step {
    version: i64,
    sql: &'static str,
}

/// The steps, in order.
const MIGRATIONS: &[Step] = &[Step {
    version: 19,
    sql: include_str!("schema_19.sql"),
}];

/// The advisory lock migrations hold (any number, fixed: "mk" "sc" in ASCII).
const MIGRATION_LOCK: i64 = 0x6d6b_7363;

/// The table that records the steps applied.
pub const VERSION_TABLE: &str = "schema_version";

/// The schema version this program writes.
pub fn current_version() -> i64 {
    MIGRATIONS.last().map_or(0, |s| s.version)
}

/// The version of the database (0: no schema yet).
pub async fn version(client: &Client) -> Result<i64, PgError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(0);
    }
    Ok(client
        .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])
        .await?
        .get(0))
}

/// Bring the schema up to the current version. Returns the version found before.
pub async fn migrate(client: &mut Client) -> Result<i64, PgError> {
    let supported = current_version();
    let mut before = None;
    for step in MIGRATIONS {
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_version (
                 version     BIGINT PRIMARY KEY,
                 applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
             )",
        )
        .await?;
        let found: i64 = tx
            .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])
            .await?
            .get(0);
        before.get_or_insert(found);
        if found > supported {
            return Err(PgError::TooNew { found, supported });
        }
        if found >= step.version {
            tx.commit().await?;
            continue;
        }
        let first = MIGRATIONS.first().map_or(0, |s| s.version);
        if found != 0 && found < first {
            return Err(PgError::Migration {
                version: step.version,
                why: format!("the database is at version {found}, before the first PostgreSQL schema ({first})"),
            });
        }
        if found == 0 {
            let tables: i64 = tx
                .query_one(
                    "SELECT count(*) FROM information_schema.tables
                     WHERE table_schema = current_schema() AND table_name <> 'schema_version'",
                    &[],
                )
                .await?
                .get(0);
            if tables > 0 {
                return Err(PgError::Migration {
                    version: step.version,
                    why: format!(
                        "the database has {tables} table(s) but no meldkamer schema version: use an empty database"
                    ),
                });
            }
        }
        tx.batch_execute(step.sql).await.map_err(|e| PgError::Migration {
            version: step.version,
            why: super::describe(&e),
        })?;
        tx.execute("INSERT INTO schema_version (version) VALUES ($1)", &[&step.version])
            .await?;
        tx.commit().await?;
    }
    Ok(before.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    /// Each SQLite version has a PostgreSQL twin (the tables themselves are compared against
    /// a real server by the integration test `pg_schema_matches_sqlite`).
    #[test]
    fn the_postgres_schema_is_at_sqlites_version() {
        assert_eq!(super::current_version(), crate::store::schema::current_version());
    }
}
