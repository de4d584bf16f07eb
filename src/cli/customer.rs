//! `meldkamer customer show ACCOUNT`: a customer as an operator reads it. Never a secret.

use std::io::Write;
use std::time::Duration;

use crate::config::Config;
use crate::view::{customer_card, render_card, render_transmitter, sites_of_account};

/// Errors of `customer show`.
#[derive(Debug, thiserror::Error)]
pub enum CustomerError {
    /// The database could not be read.
    #[error("reading the database {path}")]
    Store {
        /// File.
        path: String,
        /// Why.
        #[source]
        source: crate::store::StoreError,
    },
    /// No such account.
    #[error("no account {0} in the database")]
    NotFound(String),
}

/// Print every site the account belongs to (and its transmitters without a site).
pub fn show(cfg: &Config, account: &str, json: bool, out: &mut dyn Write) -> Result<(), CustomerError> {
    let path = cfg.store.path.display().to_string();
    let store = |source: crate::store::StoreError| CustomerError::Store {
        path: path.clone(),
        source,
    };
    if !cfg.store.path.exists() {
        return Err(CustomerError::NotFound(account.to_string()));
    }
    let conn =
        crate::store::open_read(&cfg.store.path, Duration::from_millis(cfg.store.busy_timeout_ms)).map_err(store)?;
    let (sites, orphans) = sites_of_account(&conn, account).map_err(|e| store(e.into()))?;
    if sites.is_empty() && orphans.is_empty() {
        return Err(CustomerError::NotFound(account.to_string()));
    }
    let mut cards = Vec::new();
    for s in sites {
        if let Some(c) = customer_card(&conn, s).map_err(|e| store(e.into()))? {
            cards.push(c);
        }
    }
    if json {
        let doc = serde_json::json!({ "sites": cards, "transmitters_without_site": orphans });
        let _ = writeln!(out, "{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return Ok(());
    }
    for c in &cards {
        let _ = writeln!(out, "{}", render_card(c));
    }
    if !orphans.is_empty() {
        let _ = writeln!(
            out,
            "Transmitters without a customer record (their events go to the supervisor):"
        );
        for t in &orphans {
            let _ = writeln!(out, "  {}", render_transmitter(t));
        }
    }
    Ok(())
}
