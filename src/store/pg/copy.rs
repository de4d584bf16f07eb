//! `meldkamer store copy --from sqlite:PATH --to postgres://…`: an installation moved to
//! PostgreSQL, everything included, idempotent.
//!
//! - **Consistent and read-only.** The SQLite file is opened read-only and read inside one read
//!   transaction: every table comes from the same snapshot (WAL), while a daemon keeps writing.
//! - **Every table, in dependency order.** The order comes from SQLite's own foreign keys, so
//!   a referenced row is on PostgreSQL before the rows that reference it. Ids are kept; each
//!   identity sequence is moved past the largest id afterwards (and past SQLite's
//!   AUTOINCREMENT counter, which may be beyond it), so new rows never take a copied id.
//! - **Batches in transactions.** A batch is sent with `COPY … FROM STDIN BINARY` into a
//!   temporary table and merged into the real one with `INSERT … ON CONFLICT`; each batch
//!   commits by itself, so an interrupted copy keeps what it did and the next run goes on.
//! - **Idempotent.** A row already on PostgreSQL as it is in SQLite is not written again; a
//!   row changed in SQLite since (an alarm closed, an account's last poll) is updated; a new
//!   one is inserted. A second run copies nothing and says so. The audit log is append-only:
//!   its rows are only ever inserted. Tables without a primary key (a few small ones) are
//!   compared whole and replaced when they differ. Rows that SQLite no longer has (pruned
//!   since an earlier copy) are left on PostgreSQL and counted in the report.
//! - **One schema level.** The target is migrated first; a source at another level than the
//!   target (an older SQLite file not yet upgraded by this meldkamer, or a newer one) is refused.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use sha2::{Digest, Sha256};
use tokio_postgres::Client;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};

use super::{DbUrl, PgError};

/// Failures of a copy.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The SQLite side.
    #[error("reading the SQLite database {path}")]
    Sqlite {
        /// File.
        path: String,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// The PostgreSQL side.
    #[error(transparent)]
    Pg(#[from] PgError),
    /// The two schemas are not at one level.
    #[error(
        "the SQLite database is at schema version {source_version}, PostgreSQL at {target_version} (this program: \
         {supported}); {hint}"
    )]
    Level {
        /// SQLite's `user_version`.
        source_version: i64,
        /// PostgreSQL's, after migrating.
        target_version: i64,
        /// This program's.
        supported: i64,
        /// What to do.
        hint: &'static str,
    },
    /// A table or its columns differ between the two.
    #[error("table {table}: {why}")]
    Schema {
        /// Table.
        table: String,
        /// What differs.
        why: String,
    },
    /// A value cannot be carried over.
    #[error("table {table}, column {column}: {why}")]
    Value {
        /// Table.
        table: String,
        /// Column.
        column: String,
        /// Why.
        why: String,
    },
    /// PostgreSQL refused a batch.
    #[error("table {table}: PostgreSQL refused a batch: {why}")]
    Batch {
        /// Table.
        table: String,
        /// The server's message.
        why: String,
    },
}

/// One value, as SQLite stores it and as PostgreSQL takes it (BIGINT, TEXT, BYTEA).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    /// NULL.
    Null,
    /// INTEGER / BIGINT.
    Int(i64),
    /// TEXT.
    Text(String),
    /// BLOB / BYTEA.
    Blob(Vec<u8>),
}

impl ToSql for Cell {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match (self, ty) {
            (Cell::Null, _) => Ok(IsNull::Yes),
            (Cell::Int(v), &Type::INT8) => v.to_sql(ty, out),
            (Cell::Text(s), &Type::TEXT) => s.to_sql(ty, out),
            (Cell::Blob(b), &Type::BYTEA) => b.to_sql(ty, out),
            (v, ty) => Err(format!("SQLite holds {} where PostgreSQL wants {ty}", v.kind()).into()),
        }
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::INT8 | Type::TEXT | Type::BYTEA)
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for Cell {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(match *ty {
            Type::INT8 => Cell::Int(i64::from_sql(ty, raw)?),
            Type::TEXT => Cell::Text(String::from_sql(ty, raw)?),
            _ => Cell::Blob(Vec::<u8>::from_sql(ty, raw)?),
        })
    }

    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Cell::Null)
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::INT8 | Type::TEXT | Type::BYTEA)
    }
}

impl Cell {
    fn kind(&self) -> &'static str {
        match self {
            Cell::Null => "NULL",
            Cell::Int(_) => "an integer",
            Cell::Text(_) => "text",
            Cell::Blob(_) => "a blob",
        }
    }

    fn from_sqlite(v: ValueRef<'_>) -> Result<Cell, String> {
        Ok(match v {
            ValueRef::Null => Cell::Null,
            ValueRef::Integer(i) => Cell::Int(i),
            ValueRef::Real(r) => return Err(format!("SQLite holds a real number ({r}), which no column here takes")),
            ValueRef::Text(t) => Cell::Text(
                String::from_utf8(t.to_vec()).map_err(|_| "SQLite holds text that is not UTF-8".to_string())?,
            ),
            ValueRef::Blob(b) => Cell::Blob(b.to_vec()),
        })
    }

    fn feed(&self, h: &mut Sha256) {
        match self {
            Cell::Null => h.update([0]),
            Cell::Int(i) => {
                h.update([1]);
                h.update(i.to_be_bytes());
            }
            Cell::Text(s) => {
                h.update([2]);
                h.update((s.len() as u64).to_be_bytes());
                h.update(s.as_bytes());
            }
            Cell::Blob(b) => {
                h.update([3]);
                h.update((b.len() as u64).to_be_bytes());
                h.update(b);
            }
        }
    }
}

/// The count and a digest of a table's rows, independent of their order: the sorted SHA-256
/// of each row's cells, hashed. Equal on both sides when they hold the same rows.
pub fn digest(rows: &[Vec<Cell>]) -> (u64, [u8; 32]) {
    let mut each: Vec<[u8; 32]> = rows
        .iter()
        .map(|r| {
            let mut h = Sha256::new();
            for c in r {
                c.feed(&mut h);
            }
            h.finalize().into()
        })
        .collect();
    each.sort_unstable();
    let mut h = Sha256::new();
    for d in &each {
        h.update(d);
    }
    (each.len() as u64, h.finalize().into())
}

/// Every row of a SQLite table, columns in table order.
pub fn sqlite_rows(conn: &Connection, table: &str) -> Result<Vec<Vec<Cell>>, rusqlite::Error> {
    let n = sqlite_columns(conn, table)?.len();
    let mut stmt = conn.prepare(&format!("SELECT * FROM {}", ident(table)))?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let mut row = Vec::with_capacity(n);
        for i in 0..n {
            row.push(
                Cell::from_sqlite(r.get_ref(i)?)
                    .map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into()))?,
            );
        }
        out.push(row);
    }
    Ok(out)
}

/// Every row of a PostgreSQL table, columns in table order.
pub async fn pg_rows(client: &Client, table: &str) -> Result<Vec<Vec<Cell>>, PgError> {
    let rows = client.query(&format!("SELECT * FROM {}", ident(table)), &[]).await?;
    Ok(rows
        .iter()
        .map(|r| (0..r.len()).map(|i| r.get::<_, Cell>(i)).collect())
        .collect())
}

/// A quoted identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A column of a SQLite table.
#[derive(Debug, Clone)]
pub struct SqliteColumn {
    /// Name.
    pub name: String,
    /// Position in the primary key (1-based), 0 when not in it.
    pub pk: i64,
}

/// The columns of a SQLite table in order (`PRAGMA table_info`).
pub fn sqlite_columns(conn: &Connection, table: &str) -> Result<Vec<SqliteColumn>, rusqlite::Error> {
    let mut stmt = conn.prepare("SELECT name, pk FROM pragma_table_info(?1) ORDER BY cid")?;
    let v = stmt
        .query_map([table], |r| {
            Ok(SqliteColumn {
                name: r.get(0)?,
                pk: r.get(1)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(v)
}

/// The tables of a SQLite database, SQLite's own excluded, in creation order.
pub fn sqlite_tables(conn: &Connection) -> Result<Vec<String>, rusqlite::Error> {
    let mut stmt = conn.prepare(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY rowid",
    )?;
    let v = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    Ok(v)
}

/// The tables of the PostgreSQL schema, the version table excluded, with their columns in order
/// (name, type, is an identity).
pub async fn pg_tables(client: &Client) -> Result<BTreeMap<String, Vec<(String, String, bool)>>, PgError> {
    let rows = client
        .query(
            "SELECT table_name::text, column_name::text, data_type::text, is_identity::text = 'YES'
             FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name <> $1
             ORDER BY table_name, ordinal_position",
            &[&super::schema::VERSION_TABLE],
        )
        .await?;
    let mut out: BTreeMap<String, Vec<(String, String, bool)>> = BTreeMap::new();
    for r in rows {
        out.entry(r.get(0)).or_default().push((r.get(1), r.get(2), r.get(3)));
    }
    Ok(out)
}

/// The tables in an order where each comes after every table it references (SQLite's foreign
/// keys); ties keep creation order.
fn dependency_order(conn: &Connection, tables: &[String]) -> Result<Vec<String>, CopyError> {
    let mut deps: HashMap<&str, Vec<String>> = HashMap::new();
    for t in tables {
        let mut stmt = conn
            .prepare("SELECT DISTINCT \"table\" FROM pragma_foreign_key_list(?1)")
            .map_err(|source| sqlite_err(conn, source))?;
        let refs: Vec<String> = stmt
            .query_map([t], |r| r.get(0))
            .and_then(|m| m.collect::<Result<_, _>>())
            .map_err(|source| sqlite_err(conn, source))?;
        deps.insert(t, refs.into_iter().filter(|r| r != t).collect());
    }
    let mut done: Vec<String> = Vec::new();
    while done.len() < tables.len() {
        let next = tables
            .iter()
            .find(|t| !done.contains(t) && deps[t.as_str()].iter().all(|d| done.contains(d)));
        match next {
            Some(t) => done.push(t.clone()),
            None => {
                let left: Vec<&str> = tables
                    .iter()
                    .filter(|t| !done.contains(t))
                    .map(String::as_str)
                    .collect();
                return Err(CopyError::Schema {
                    table: left.join(", "),
                    why: "these tables reference each other (or a table that does not exist): no order to copy them in"
                        .into(),
                });
            }
        }
    }
    Ok(done)
}

fn sqlite_err(conn: &Connection, source: rusqlite::Error) -> CopyError {
    CopyError::Sqlite {
        path: conn.path().unwrap_or("").to_string(),
        source,
    }
}

/// What a copy did with one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableReport {
    /// Table.
    pub table: String,
    /// Rows in SQLite's snapshot.
    pub source_rows: u64,
    /// Rows inserted on PostgreSQL.
    pub inserted: u64,
    /// Rows updated on PostgreSQL (changed in SQLite since an earlier copy), or for a table
    /// without a primary key, rows written when it was replaced.
    pub updated: u64,
    /// Rows PostgreSQL has that SQLite's snapshot does not (pruned since an earlier copy).
    pub only_on_target: u64,
}

/// What a copy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    /// Per table, in the order copied.
    pub tables: Vec<TableReport>,
    /// PostgreSQL's schema version before this copy migrated it (0: empty database).
    pub migrated_from: i64,
    /// The schema version of both.
    pub version: i64,
    /// How long it took.
    pub elapsed: Duration,
}

impl CopyReport {
    /// Rows written (inserted or updated).
    pub fn written(&self) -> u64 {
        self.tables.iter().map(|t| t.inserted + t.updated).sum()
    }
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A bar per table on stderr (a terminal).
    Bar,
    /// A line per table on the output.
    Lines,
}

/// Options of a copy.
#[derive(Debug, Clone, Copy)]
pub struct CopyOptions {
    /// Rows per batch (one transaction each).
    pub batch_rows: usize,
    /// How progress is shown.
    pub progress: Progress,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            batch_rows: 10_000,
            progress: Progress::Lines,
        }
    }
}

/// Open the SQLite file read-only and start the read transaction every table is read in.
pub fn open_snapshot(path: &Path) -> Result<Connection, CopyError> {
    let err = |source| CopyError::Sqlite {
        path: path.display().to_string(),
        source,
    };
    if !path.exists() {
        return Err(err(rusqlite::Error::InvalidPath(path.to_path_buf())));
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(err)?;
    conn.busy_timeout(Duration::from_secs(10)).map_err(err)?;
    // The snapshot starts with the first read inside the transaction.
    conn.execute_batch("BEGIN DEFERRED").map_err(err)?;
    let _: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(err)?;
    Ok(conn)
}

/// Copy the SQLite database at `from` into the PostgreSQL database at `to` (migrated first).
pub async fn copy(from: &Path, to: &DbUrl, opts: CopyOptions, out: &mut dyn Write) -> Result<CopyReport, CopyError> {
    let started = Instant::now();
    let conn = open_snapshot(from)?;
    let sq = |source| CopyError::Sqlite {
        path: from.display().to_string(),
        source,
    };
    let source_version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(sq)?;
    let mut client = super::connect(to).await?;
    let migrated_from = super::schema::migrate(&mut client).await?;
    let target_version = super::schema::version(&client).await?;
    let supported = crate::store::schema::current_version();
    if source_version != target_version {
        return Err(CopyError::Level {
            source_version,
            target_version,
            supported,
            hint: if source_version < target_version {
                "open the SQLite database once with this meldkamer (`meldkamer check-config` does not; `meldkamer \
                 serve` or `import` does) to upgrade it, then copy again"
            } else {
                "the SQLite database was written by a newer meldkamer: copy with that version"
            },
        });
    }
    let tables = sqlite_tables(&conn).map_err(sq)?;
    let pg = pg_tables(&client).await?;
    for t in &tables {
        if !pg.contains_key(t) {
            return Err(CopyError::Schema {
                table: t.clone(),
                why: "in SQLite but not on PostgreSQL".into(),
            });
        }
    }
    if let Some(t) = pg.keys().find(|t| !tables.contains(t)) {
        return Err(CopyError::Schema {
            table: t.clone(),
            why: "on PostgreSQL but not in SQLite".into(),
        });
    }
    let _ = writeln!(
        out,
        "copying {} (schema version {source_version}) to {to}{}",
        from.display(),
        match migrated_from {
            0 => " (schema created)".to_string(),
            v if v < target_version => format!(" (schema upgraded from version {v})"),
            _ => String::new(),
        }
    );
    let sequences: HashMap<String, i64> = {
        let exists: bool = conn
            .query_row(
                "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'sqlite_sequence'",
                [],
                |r| r.get(0),
            )
            .map_err(sq)?;
        if exists {
            let mut stmt = conn.prepare("SELECT name, seq FROM sqlite_sequence").map_err(sq)?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .and_then(|m| m.collect::<Result<_, _>>())
                .map_err(sq)?
        } else {
            HashMap::new()
        }
    };
    let mut report = CopyReport {
        tables: Vec::new(),
        migrated_from,
        version: target_version,
        elapsed: Duration::ZERO,
    };
    for table in dependency_order(&conn, &tables)? {
        let t0 = Instant::now();
        let cols = sqlite_columns(&conn, &table).map_err(sq)?;
        let pg_cols = &pg[&table];
        let names: Vec<&str> = cols.iter().map(|c| c.name.as_str()).collect();
        let pg_names: Vec<&str> = pg_cols.iter().map(|c| c.0.as_str()).collect();
        if names != pg_names {
            return Err(CopyError::Schema {
                table,
                why: format!(
                    "columns differ: SQLite ({}), PostgreSQL ({})",
                    names.join(", "),
                    pg_names.join(", ")
                ),
            });
        }
        let types: Vec<Type> = pg_cols
            .iter()
            .map(|(c, ty, _)| match ty.as_str() {
                "bigint" => Ok(Type::INT8),
                "text" => Ok(Type::TEXT),
                "bytea" => Ok(Type::BYTEA),
                other => Err(CopyError::Value {
                    table: table.clone(),
                    column: c.clone(),
                    why: format!("PostgreSQL type {other} is not one the copy carries (bigint, text, bytea)"),
                }),
            })
            .collect::<Result<_, _>>()?;
        let source_rows: u64 = conn
            .query_row(&format!("SELECT count(*) FROM {}", ident(&table)), [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(sq)? as u64;
        let bar = (opts.progress == Progress::Bar).then(|| {
            let b = indicatif::ProgressBar::new(source_rows);
            b.set_style(
                indicatif::ProgressStyle::with_template("{msg:24} [{bar:30}] {pos}/{len} rows, {per_sec}, {eta} left")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            b.set_message(table.clone());
            b
        });
        let mut tr = TableReport {
            table: table.clone(),
            source_rows,
            inserted: 0,
            updated: 0,
            only_on_target: 0,
        };
        let mut pk: Vec<(i64, usize)> = cols
            .iter()
            .enumerate()
            .filter(|(_, c)| c.pk > 0)
            .map(|(i, c)| (c.pk, i))
            .collect();
        pk.sort();
        let pk: Vec<usize> = pk.into_iter().map(|(_, i)| i).collect();
        if pk.is_empty() {
            replace_if_different(&conn, &mut client, &table, &names, &types, &mut tr, &bar).await?;
        } else {
            merge_batches(
                &conn,
                &mut client,
                &table,
                &names,
                &types,
                &pk,
                opts.batch_rows,
                &mut tr,
                &bar,
            )
            .await?;
        }
        let on_target: i64 = client
            .query_one(&format!("SELECT count(*) FROM {}", ident(&table)), &[])
            .await
            .map_err(PgError::from)?
            .get(0);
        tr.only_on_target = (on_target as u64).saturating_sub(source_rows);
        if let Some((id, _, _)) = pg_cols.iter().find(|c| c.2) {
            move_sequence(&client, &table, id, sequences.get(&table).copied().unwrap_or(0)).await?;
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        let _ = writeln!(
            out,
            "{table}: {} rows, {}{} ({:.1} s)",
            tr.source_rows,
            match (tr.inserted, tr.updated) {
                (0, 0) => "nothing new".to_string(),
                (i, 0) => format!("{i} copied"),
                (i, u) if pk.is_empty() => format!("{} copied (table replaced)", i + u),
                (i, u) => format!("{i} copied, {u} updated"),
            },
            if tr.only_on_target > 0 {
                format!(
                    ", {} only on PostgreSQL (no longer in SQLite; left in place)",
                    tr.only_on_target
                )
            } else {
                String::new()
            },
            t0.elapsed().as_secs_f64()
        );
        report.tables.push(tr);
    }
    let _ = conn.execute_batch("COMMIT");
    report.elapsed = started.elapsed();
    let written = report.written();
    if written == 0 {
        let _ = writeln!(
            out,
            "nothing to copy: PostgreSQL already had every row ({} tables, {:.1} s)",
            report.tables.len(),
            report.elapsed.as_secs_f64()
        );
    } else {
        let secs = report.elapsed.as_secs_f64().max(1e-9);
        let read: u64 = report.tables.iter().map(|t| t.source_rows).sum();
        let inserted: u64 = report.tables.iter().map(|t| t.inserted).sum();
        let _ = writeln!(
            out,
            "copied {written} rows ({inserted} new, {} updated or replaced) of {} tables; {read} rows read and \
             compared in {secs:.1} s ({:.0} rows/s)",
            written - inserted,
            report.tables.len(),
            read as f64 / secs
        );
    }
    Ok(report)
}

/// A table with a primary key: SQLite's rows in key order, batch by batch (keyset pages),
/// each batch sent in binary to a temporary table and merged into the table in one transaction.
#[allow(clippy::too_many_arguments)]
async fn merge_batches(
    conn: &Connection,
    client: &mut Client,
    table: &str,
    names: &[&str],
    types: &[Type],
    pk: &[usize],
    batch_rows: usize,
    tr: &mut TableReport,
    bar: &Option<indicatif::ProgressBar>,
) -> Result<(), CopyError> {
    let stage = ident(&format!("copy_stage_{table}"));
    let cols = names.iter().map(|n| ident(n)).collect::<Vec<_>>().join(", ");
    let key_cols = pk.iter().map(|&i| ident(names[i])).collect::<Vec<_>>().join(", ");
    client
        .batch_execute(&format!(
            "CREATE TEMP TABLE IF NOT EXISTS {stage} AS SELECT {cols} FROM {} WITH NO DATA",
            ident(table)
        ))
        .await
        .map_err(PgError::from)?;
    let non_key: Vec<String> = (0..names.len())
        .filter(|i| !pk.contains(i))
        .map(|i| ident(names[i]))
        .collect();
    // The audit log is append-only (its triggers refuse an update), and a table that is all key
    // has nothing to update.
    let on_conflict = if table == "audit_log" || non_key.is_empty() {
        "DO NOTHING".to_string()
    } else {
        format!(
            "DO UPDATE SET {} WHERE ({}) IS DISTINCT FROM ({})",
            non_key
                .iter()
                .map(|c| format!("{c} = EXCLUDED.{c}"))
                .collect::<Vec<_>>()
                .join(", "),
            non_key
                .iter()
                .map(|c| format!("{}.{c}", ident(table)))
                .collect::<Vec<_>>()
                .join(", "),
            non_key
                .iter()
                .map(|c| format!("EXCLUDED.{c}"))
                .collect::<Vec<_>>()
                .join(", "),
        )
    };
    let merge = format!(
        "WITH merged AS (
             INSERT INTO {t} ({cols}) SELECT {cols} FROM {stage} ON CONFLICT ({key_cols}) {on_conflict}
             RETURNING (xmax = 0) AS inserted)
         SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM merged",
        t = ident(table)
    );
    let key_list = pk.iter().map(|&i| ident(names[i])).collect::<Vec<_>>().join(", ");
    let placeholders = (1..=pk.len()).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ");
    let first_page = format!(
        "SELECT {cols} FROM {} ORDER BY {key_list} LIMIT {batch_rows}",
        ident(table)
    );
    let next_page = format!(
        "SELECT {cols} FROM {} WHERE ({key_list}) > ({placeholders}) ORDER BY {key_list} LIMIT {batch_rows}",
        ident(table)
    );
    let mut last_key: Option<Vec<rusqlite::types::Value>> = None;
    loop {
        let batch = read_page(
            conn,
            table,
            names,
            if last_key.is_some() { &next_page } else { &first_page },
            &last_key,
        )?;
        if batch.is_empty() {
            break;
        }
        last_key = batch.last().map(|r| {
            pk.iter()
                .map(|&i| match &r[i] {
                    Cell::Null => rusqlite::types::Value::Null,
                    Cell::Int(v) => rusqlite::types::Value::Integer(*v),
                    Cell::Text(s) => rusqlite::types::Value::Text(s.clone()),
                    Cell::Blob(b) => rusqlite::types::Value::Blob(b.clone()),
                })
                .collect()
        });
        let batch_err = |e: tokio_postgres::Error| CopyError::Batch {
            table: table.to_string(),
            why: super::describe(&e),
        };
        let tx = client.transaction().await.map_err(batch_err)?;
        tx.batch_execute(&format!("TRUNCATE {stage}"))
            .await
            .map_err(batch_err)?;
        let sink = tx
            .copy_in(&format!("COPY {stage} ({cols}) FROM STDIN BINARY"))
            .await
            .map_err(batch_err)?;
        let writer = BinaryCopyInWriter::new(sink, types);
        futures_util::pin_mut!(writer);
        for row in &batch {
            let refs: Vec<&(dyn ToSql + Sync)> = row.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
            writer.as_mut().write(&refs).await.map_err(batch_err)?;
        }
        writer.finish().await.map_err(batch_err)?;
        let counts = tx.query_one(&merge, &[]).await.map_err(batch_err)?;
        tx.commit().await.map_err(batch_err)?;
        tr.inserted += counts.get::<_, i64>(0) as u64;
        tr.updated += counts.get::<_, i64>(1) as u64;
        if let Some(b) = bar {
            b.inc(batch.len() as u64);
        }
    }
    Ok(())
}

/// One page of SQLite rows.
fn read_page(
    conn: &Connection,
    table: &str,
    names: &[&str],
    sql: &str,
    after: &Option<Vec<rusqlite::types::Value>>,
) -> Result<Vec<Vec<Cell>>, CopyError> {
    let sq = |source| sqlite_err(conn, source);
    let mut stmt = conn.prepare_cached(sql).map_err(sq)?;
    let mut rows = match after {
        Some(k) => stmt.query(rusqlite::params_from_iter(k.iter())),
        None => stmt.query([]),
    }
    .map_err(sq)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(sq)? {
        let mut row = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let v = r.get_ref(i).map_err(sq)?;
            row.push(Cell::from_sqlite(v).map_err(|why| CopyError::Value {
                table: table.to_string(),
                column: name.to_string(),
                why,
            })?);
        }
        out.push(row);
    }
    Ok(out)
}

/// A table without a primary key (small ones: procedure steps, priority rules, schedule
/// windows, the poll log): compared whole, and replaced in one transaction when it differs.
async fn replace_if_different(
    conn: &Connection,
    client: &mut Client,
    table: &str,
    names: &[&str],
    types: &[Type],
    tr: &mut TableReport,
    bar: &Option<indicatif::ProgressBar>,
) -> Result<(), CopyError> {
    let cols = names.iter().map(|n| ident(n)).collect::<Vec<_>>().join(", ");
    let rows = read_page(
        conn,
        table,
        names,
        &format!("SELECT {cols} FROM {}", ident(table)),
        &None,
    )?;
    let target = pg_rows(client, table).await?;
    if digest(&rows) == digest(&target) {
        if let Some(b) = bar {
            b.inc(rows.len() as u64);
        }
        return Ok(());
    }
    let batch_err = |e: tokio_postgres::Error| CopyError::Batch {
        table: table.to_string(),
        why: super::describe(&e),
    };
    let tx = client.transaction().await.map_err(batch_err)?;
    tx.batch_execute(&format!("DELETE FROM {}", ident(table)))
        .await
        .map_err(batch_err)?;
    let sink = tx
        .copy_in(&format!("COPY {} ({cols}) FROM STDIN BINARY", ident(table)))
        .await
        .map_err(batch_err)?;
    let writer = BinaryCopyInWriter::new(sink, types);
    futures_util::pin_mut!(writer);
    for row in &rows {
        let refs: Vec<&(dyn ToSql + Sync)> = row.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
        writer.as_mut().write(&refs).await.map_err(batch_err)?;
    }
    writer.finish().await.map_err(batch_err)?;
    tx.commit().await.map_err(batch_err)?;
    // Replaced: every row was written (those that were there already included).
    tr.updated = rows.len() as u64;
    if let Some(b) = bar {
        b.inc(rows.len() as u64);
    }
    Ok(())
}

/// Move the identity sequence of `table.column` past the largest id there, and past `floor`
/// (SQLite's AUTOINCREMENT counter: ids of deleted rows are not handed out again).
async fn move_sequence(client: &Client, table: &str, column: &str, floor: i64) -> Result<(), CopyError> {
    let top: i64 = client
        .query_one(
            &format!(
                "SELECT greatest(coalesce(max({}), 0), $1) FROM {}",
                ident(column),
                ident(table)
            ),
            &[&floor],
        )
        .await
        .map_err(PgError::from)?
        .get(0);
    client
        .execute(
            "SELECT CASE WHEN $2::bigint > 0 THEN setval(pg_get_serial_sequence($1, $3), $2::bigint, true)
                         ELSE setval(pg_get_serial_sequence($1, $3), 1, false) END",
            &[&ident(table), &top, &column],
        )
        .await
        .map_err(PgError::from)?;
    Ok(())
}
