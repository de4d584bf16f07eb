//! PostgreSQL storage (issue 23), the foundation: connecting from a URL (several hosts and
//! `target_session_attrs=read-write` allowed), the schema and its migrations ([`schema`], the
//! twin of SQLite's), the audit log read back and its protection checked ([`audit`]), an
//! installation copied over from SQLite ([`copy`]) and the database checked for `check-config`
//! ([`check`]).
//!
//! Not built yet: serving from PostgreSQL (the writer, group commit, the readers). `meldkamer
//! serve` with `[store] backend = "postgres"` refuses to start and says so.
//!
//! A database URL may carry a password: it is held as a [`DbUrl`], which prints (`Debug`,
//! `Display`, every error) with the password starred.

pub mod audit;
pub mod check;
pub mod copy;
pub mod schema;

use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::{Client, NoTls};
use zeroize::Zeroizing;

/// A PostgreSQL connection URL (`postgres://user:password@host:port,host2:port2/db?…`) or
/// key/value string (`host=… password=…`). Printed with the password starred; the text itself
/// is wiped when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct DbUrl(Zeroizing<String>);

impl DbUrl {
    /// Check that the driver reads it. The error names the URL with the password starred.
    pub fn parse(text: &str) -> Result<DbUrl, PgError> {
        let url = DbUrl(Zeroizing::new(text.to_string()));
        url.config()?;
        Ok(url)
    }

    /// The driver's configuration, with a connect timeout of 10 s per host unless the URL
    /// sets one (a host that does not answer must not hold up the next one for minutes).
    pub fn config(&self) -> Result<tokio_postgres::Config, PgError> {
        let mut cfg = tokio_postgres::Config::from_str(&self.0).map_err(|e| PgError::Url {
            url: self.redacted(),
            why: e.to_string(),
        })?;
        if cfg.get_connect_timeout().is_none() {
            cfg.connect_timeout(Duration::from_secs(10));
        }
        if cfg.get_application_name().is_none() {
            cfg.application_name("meldkamer");
        }
        Ok(cfg)
    }

    /// The text with the password starred: in the user-info part of a URL, and as the value
    /// of a `password` parameter (URL query or key/value form).
    pub fn redacted(&self) -> String {
        redact(&self.0)
    }

    /// The URL as given, password included: only for handing to the driver.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Read as any text: the check is [`DbUrl::parse`], made by the configuration's validation,
/// whose error stars the password (a TOML error would quote the line, password and all).
impl<'de> serde::Deserialize<'de> for DbUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Zeroizing::new(<String as serde::Deserialize>::deserialize(d)?);
        Ok(DbUrl(Zeroizing::new(s.to_string())))
    }
}

/// Written with the password starred: a configuration written back out never carries it.
impl serde::Serialize for DbUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

impl std::fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("DbUrl").field(&self.redacted()).finish()
    }
}

impl std::fmt::Display for DbUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Star the password of a connection string (see [`DbUrl::redacted`]).
pub fn redact(text: &str) -> String {
    let star_params = |s: &str, sep: char| -> String {
        s.split(sep)
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.trim().eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_string(),
            })
            .collect::<Vec<_>>()
            .join(&sep.to_string())
    };
    let Some((scheme, rest)) = text.split_once("://") else {
        // Key/value form. A quoted value with spaces is starred up to its closing quote.
        let mut out = String::new();
        let lower = text.to_ascii_lowercase();
        let mut i = 0;
        while let Some(at) = lower[i..].find("password").map(|p| p + i) {
            let after = lower[at + 8..].trim_start();
            if !after.starts_with('=') {
                out.push_str(&text[i..at + 8]);
                i = at + 8;
                continue;
            }
            let eq = text.len() - after.len();
            let value = text[eq + 1..].trim_start();
            let start = text.len() - value.len();
            let end = if let Some(v) = value.strip_prefix('\'') {
                let mut end = start + 1;
                let mut escaped = false;
                for (j, c) in v.char_indices() {
                    end = start + 1 + j + c.len_utf8();
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '\'' {
                        break;
                    }
                }
                end
            } else {
                start + value.find(char::is_whitespace).unwrap_or(value.len())
            };
            out.push_str(&text[i..start]);
            out.push_str("***");
            i = end;
        }
        out.push_str(&text[i..]);
        return out;
    };
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let redacted_authority = match before_query.rfind('@') {
        Some(at) => {
            let (userinfo, host) = before_query.split_at(at);
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***{host}"),
                None => before_query.to_string(),
            }
        }
        None => before_query.to_string(),
    };
    match query {
        Some(q) => format!("{scheme}://{redacted_authority}?{}", star_params(q, '&')),
        None => format!("{scheme}://{redacted_authority}"),
    }
}

/// Failures of the PostgreSQL store.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The URL does not parse.
    #[error("the database URL {url} is not valid: {why}")]
    Url {
        /// Starred.
        url: String,
        /// The driver's reason.
        why: String,
    },
    /// No host of the URL could be connected to (or none was read-write when asked).
    #[error("cannot connect to {url}")]
    Connect {
        /// Starred.
        url: String,
        /// Why.
        #[source]
        source: tokio_postgres::Error,
    },
    /// PostgreSQL said no.
    #[error("PostgreSQL: {}", describe(.0))]
    Db(#[from] tokio_postgres::Error),
    /// The database was written by a newer meldkamer.
    #[error("PostgreSQL schema version {found} is newer than this program supports ({supported})")]
    TooNew {
        /// In the database.
        found: i64,
        /// Known here.
        supported: i64,
    },
    /// The database is not what a migration expects.
    #[error("PostgreSQL schema upgrade to version {version}: {why}")]
    Migration {
        /// The version the step produces.
        version: i64,
        /// What was wrong.
        why: String,
    },
}

/// The server's message (and detail) when there is one, else the driver's.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(d) => format!("{} ({d})", db.message()),
            None => db.message().to_string(),
        },
        None => e.to_string(),
    }
}

/// Connect to the first host of `url` that answers (and, with
/// `target_session_attrs=read-write`, takes writes). The connection runs on a task of the
/// current runtime; it ends when the client is dropped.
pub async fn connect(url: &DbUrl) -> Result<Client, PgError> {
    let (client, connection) = url.config()?.connect(NoTls).await.map_err(|source| PgError::Connect {
        url: url.redacted(),
        source,
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %describe(&e), "PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// The address and port of the server a client is connected to, as the server reports them
/// (`unix socket` for a local socket).
pub async fn server_address(client: &Client) -> Result<String, PgError> {
    let row = client
        .query_one("SELECT host(inet_server_addr()), inet_server_port()", &[])
        .await?;
    let host: Option<String> = row.get(0);
    let port: Option<i32> = row.get(1);
    Ok(match (host, port) {
        (Some(h), Some(p)) if h.contains(':') => format!("[{h}]:{p}"),
        (Some(h), Some(p)) => format!("{h}:{p}"),
        _ => "unix socket".to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_starred_in_every_form() {
        for (given, shown) in [
            (
                "postgres://arc:s3cret@db1:5432,db2:5432/meldkamer?target_session_attrs=read-write",
                "postgres://arc:***@db1:5432,db2:5432/meldkamer?target_session_attrs=read-write",
            ),
            ("postgresql://arc@db1/m", "postgresql://arc@db1/m"),
            ("postgres://arc:p%40ss@db1/m", "postgres://arc:***@db1/m"),
            (
                "postgres://arc@db1/m?password=s3cret&sslmode=disable",
                "postgres://arc@db1/m?password=***&sslmode=disable",
            ),
            (
                "host=db1 user=arc password=s3cret dbname=m",
                "host=db1 user=arc password=*** dbname=m",
            ),
            (
                "host=db1 password = 's3 c\\'ret' user=arc",
                "host=db1 password = *** user=arc",
            ),
        ] {
            let url = DbUrl(Zeroizing::new(given.to_string()));
            assert_eq!(url.redacted(), shown, "{given}");
            assert!(!format!("{url:?} {url}").contains("s3"), "{given}");
            assert!(!format!("{url:?}").contains("p%40ss"));
        }
    }

    #[test]
    fn a_bad_url_is_refused_without_its_password() {
        let e = DbUrl::parse("postgres://arc:s3cret@db1:notaport/m").expect_err("bad port");
        let text = format!("{e} {e:?}");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("arc:***@db1"), "{text}");
    }
}
