//! Reload without a restart (`systemctl reload meldkamer`, SIGHUP).
//!
//! A reload reads the configuration file again, compares every setting with the one in
//! effect, applies those that can change while the daemon runs and names the others, which
//! keep their running value until a restart; then it imports the records files again
//! (`[records] files`, all or none, through the store writer) and loads the account table at
//! once. Each step says in the log what it did:
//!
//! - `setting changed, applied` (key, from, to) for a live setting;
//! - `setting changed, needs a restart` (a warning) for every other one, at every reload
//!   until the restart;
//! - `configuration not reloaded` (an error) when the file does not validate: nothing of it
//!   is taken, the records are still re-read with the running list;
//! - `records re-read` with what was imported, or `records not re-read` with the file and line;
//! - `reload done` with how many settings were applied and which need a restart.
//!
//! - `TLS certificate reloaded` (with its SHA-256 fingerprint), `unchanged`, or `not reloaded`
//!   (the one in use stays) while the operator API's TLS port is on.
//!
//! Live today: [`LIVE`], and [`LIVE_WITH_TLS`] while the TLS port is on. Everything else is
//! wired into listeners, the writer or tasks at start.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

use crate::config::Config;
use crate::daemon::Reloader;
use crate::records::{ImportError, Records};

/// The settings a reload applies; every other one needs a restart.
pub const LIVE: &[&str] = &["log.level", "records.files"];

/// Live too while the operator API's TLS port is on: the certificate files are read again at
/// every reload (a renewal at the same paths needs no change here).
pub const LIVE_WITH_TLS: &[&str] = &["operator.tls_cert", "operator.tls_key"];

/// One setting whose value in the file differs from the one in effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// `section.key`.
    pub key: String,
    /// In effect (TOML).
    pub from: String,
    /// In the file (TOML).
    pub to: String,
}

impl Change {
    /// Whether a reload applies it (`tls`: the operator API's TLS port is on).
    pub fn live(&self, tls: bool) -> bool {
        LIVE.contains(&self.key.as_str()) || (tls && LIVE_WITH_TLS.contains(&self.key.as_str()))
    }
}

/// Every setting that differs between `running` and `file`, as `section.key`, in order.
pub fn diff(running: &Config, file: &Config) -> Vec<Change> {
    let flat = |c: &Config| -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Ok(toml::Value::Table(sections)) = toml::Value::try_from(c) {
            for (section, v) in sections {
                match v {
                    toml::Value::Table(keys) => {
                        for (k, v) in keys {
                            out.push((format!("{section}.{k}"), v.to_string()));
                        }
                    }
                    other => out.push((section, other.to_string())),
                }
            }
        }
        out.sort();
        out
    };
    let (a, b) = (flat(running), flat(file));
    let mut changes = Vec::new();
    for (key, to) in &b {
        let from = a
            .iter()
            .find(|(k, _)| k == key)
            .map_or("(unset)".to_string(), |(_, v)| v.clone());
        if &from != to {
            changes.push(Change {
                key: key.clone(),
                from,
                to: to.clone(),
            });
        }
    }
    changes
}

/// How the log filter is swapped (set by `serve`'s logging setup).
type LevelSwap = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;
static LEVEL: OnceLock<LevelSwap> = OnceLock::new();

/// Register how to swap the log filter (once, by the logging setup).
pub fn on_log_level(swap: impl Fn(EnvFilter) -> Result<(), String> + Send + Sync + 'static) {
    let _ = LEVEL.set(Box::new(swap));
}

/// Set `[log] level` on the running logger.
fn set_log_level(level: &str) -> Result<(), String> {
    if std::env::var_os("RUST_LOG").is_some() {
        return Err("RUST_LOG is set and overrides [log] level".into());
    }
    let swap = LEVEL.get().ok_or("the logger cannot change its level")?;
    swap(EnvFilter::new(format!("meldkamer={level}")))
}

/// Every file's records, validated, in one set (all or none).
pub fn parse_records(files: &[PathBuf]) -> Result<Records, ImportError> {
    let mut records = Records::default();
    for f in files {
        records.extend(crate::records::parse_file(f)?);
    }
    Ok(records)
}

/// An error with its causes, on one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(c) = source {
        s.push_str(": ");
        s.push_str(&c.to_string());
        source = c.source();
    }
    // One log line: an import report's problems (file, line, field) are joined, not broken
    // over lines that a log reader would take for entries of their own.
    s.replace(":\n", ": ").replace('\n', "; ")
}

/// The reload of one daemon: its configuration file and the settings in effect.
pub struct Reload {
    path: Option<PathBuf>,
    in_effect: Config,
    daemon: Reloader,
}

impl Reload {
    /// `path`: the `--config` file (`None`: the embedded default, nothing to re-read);
    /// `in_effect`: the configuration the daemon started with.
    pub fn new(path: Option<&Path>, in_effect: Config, daemon: Reloader) -> Reload {
        Reload {
            path: path.map(Path::to_path_buf),
            in_effect,
            daemon,
        }
    }

    /// Reload once; logs every step.
    pub async fn run(&mut self) {
        info!("reload requested");
        let mut applied = 0usize;
        let mut restart: Vec<String> = Vec::new();
        match &self.path {
            None => info!("no configuration file (the embedded default): no settings to re-read"),
            Some(path) => match Config::load(path) {
                Err(e) => error!(
                    error = %chain(&e),
                    "configuration not reloaded: the file does not validate; the running settings stay"
                ),
                Ok(file) => {
                    let changes = diff(&self.in_effect, &file);
                    if changes.is_empty() {
                        info!(file = %path.display(), "settings unchanged");
                    }
                    let tls = self.daemon.tls_cert().is_some();
                    for c in changes {
                        if !c.live(tls) {
                            warn!(
                                key = %c.key, from = %c.from, to = %c.to,
                                "setting changed, needs a restart (systemctl restart meldkamer); the running value stays"
                            );
                            restart.push(c.key);
                            continue;
                        }
                        match self.apply(&c.key, &file) {
                            Ok(()) => {
                                info!(key = %c.key, from = %c.from, to = %c.to, "setting changed, applied");
                                applied += 1;
                            }
                            Err(why) => warn!(key = %c.key, to = %c.to, "setting changed, not applied: {why}"),
                        }
                    }
                }
            },
        }
        if let Some(cert) = self.daemon.tls_cert() {
            let (c, k) = (&self.in_effect.operator.tls_cert, &self.in_effect.operator.tls_key);
            match cert.reload(Path::new(c), Path::new(k)) {
                Ok(true) => {
                    info!(fingerprint = %cert.fingerprint(), cert = %c, "TLS certificate reloaded: new connections get it")
                }
                Ok(false) => info!(fingerprint = %cert.fingerprint(), cert = %c, "TLS certificate unchanged"),
                Err(e) => {
                    error!(error = %e, fingerprint = %cert.fingerprint(), "TLS certificate not reloaded; the one in use stays")
                }
            }
        }
        let files = self.in_effect.records.files.clone();
        if files.is_empty() {
            info!("no records files configured ([records] files): records come from `meldkamer import`");
        } else {
            match self.daemon.import(&files).await {
                Ok(report) => info!(files = files.len(), "records re-read: {report}"),
                Err(e) => error!(
                    error = %chain(&e),
                    "records not re-read; the records stay as they were"
                ),
            }
        }
        if let Err(e) = self.daemon.reload_accounts().await {
            warn!(error = %e, "account reload failed; keeping the current table");
        }
        info!(
            applied,
            need_restart = restart.len(),
            restart_keys = %restart.join(", "),
            "reload done"
        );
    }

    /// Apply the live setting `key` from `file` and keep it as in effect.
    fn apply(&mut self, key: &str, file: &Config) -> Result<(), String> {
        match key {
            "log.level" => {
                set_log_level(&file.log.level)?;
                self.in_effect.log.level = file.log.level.clone();
            }
            "records.files" => self.in_effect.records.files = file.records.files.clone(),
            // Read (and checked) below, with the certificate files.
            "operator.tls_cert" => self.in_effect.operator.tls_cert = file.operator.tls_cert.clone(),
            "operator.tls_key" => self.in_effect.operator.tls_key = file.operator.tls_key.clone(),
            _ => return Err("not a live setting".into()),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A records file with two problems gives one log line naming both.
    #[test]
    fn an_import_report_is_one_log_line() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("records.toml");
        std::fs::write(&path, "[[account]]\naccount = \n\n[[site]]\nref = \n").expect("write");
        let e = parse_records(std::slice::from_ref(&path)).expect_err("does not validate");
        let line = chain(&e);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.starts_with("nothing was imported: "), "{line}");
        assert!(line.contains("records.toml"), "{line}");
    }

    /// Every changed setting is named with both values, and only the live ones are live.
    #[test]
    fn diff_names_each_changed_setting() {
        let running = Config::default();
        let mut file = Config::default();
        assert!(diff(&running, &file).is_empty());
        file.log.level = "debug".into();
        file.receiver.max_frame_bytes = 4096;
        file.records.files = vec!["/etc/meldkamer/records.toml".into()];
        let changes = diff(&running, &file);
        let keys: Vec<(&str, bool)> = changes.iter().map(|c| (c.key.as_str(), c.live(false))).collect();
        assert_eq!(
            keys,
            [
                ("log.level", true),
                ("receiver.max_frame_bytes", false),
                ("records.files", true)
            ]
        );
        assert_eq!(changes[0].from, "\"info\"");
        assert_eq!(changes[0].to, "\"debug\"");
        assert_eq!(changes[1].from, "2048");
        // The certificate's paths are live only while the TLS port is on.
        file.operator.tls_cert = "/etc/meldkamer/tls/api.crt".into();
        let tls = diff(&running, &file)
            .into_iter()
            .find(|c| c.key == "operator.tls_cert")
            .expect("named");
        assert!(tls.live(true) && !tls.live(false));
        assert_eq!(changes[1].to, "4096");
    }
}
