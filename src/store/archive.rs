//! The retention archive: what pruning deletes is first written here, one file per UTC day of
//! compressed JSON Lines (`meldkamer-YYYY-MM-DD.jsonl.gz`), each with a manifest
//! (`meldkamer-YYYY-MM-DD.manifest.json`) and every day listed in `INDEX`.
//!
//! A day's file grows by one gzip member per pruning step (concatenated members are one valid
//! gzip stream: `zcat` reads the file whole). The manifest lists every member's length, row
//! count and SHA-256, and is replaced atomically after the member is on disk (fsync), so
//! [`verify`] finds a file that was altered, cut short, extended or removed, and a manifest
//! that is missing. A member the manifest never recorded (a stop between the two writes) is
//! cut off before the next append. Directory and files are owner-only.
//!
//! A line is `{"table": T, "row": {column: value…}}`: integers and text as JSON, blobs as
//! hex. A row can appear twice when the daemon stopped between the archive write and the
//! delete (the next step archives it again); readers take the `id` as the key.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The list of days in an archive directory.
pub const INDEX: &str = "INDEX";
const PREFIX: &str = "meldkamer-";
const DATA_SUFFIX: &str = ".jsonl.gz";
const MANIFEST_SUFFIX: &str = ".manifest.json";

/// Archive failures.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Reading or writing a file failed.
    #[error("archive file {path}")]
    Io {
        /// File.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A day's file is shorter than its manifest says: something removed data. Nothing more is
    /// appended (and nothing pruned) until an operator looks.
    #[error("archive file {path} is shorter than its manifest records ({found} of {expected} bytes)")]
    Damaged {
        /// File.
        path: String,
        /// Bytes found.
        found: u64,
        /// Bytes the manifest records.
        expected: u64,
    },
    /// A manifest does not parse.
    #[error("archive manifest {path} is not readable: {why}")]
    Manifest {
        /// File.
        path: String,
        /// Why.
        why: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// One gzip member of a day's file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Length in bytes.
    pub bytes: u64,
    /// JSON lines in it.
    pub lines: u64,
    /// SHA-256 of its bytes, hex.
    pub sha256: String,
}

/// A day's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version (1).
    pub format: u32,
    /// The data file's name.
    pub file: String,
    /// Its members, in order.
    pub members: Vec<Member>,
}

impl Manifest {
    /// The data file's length.
    pub fn bytes(&self) -> u64 {
        self.members.iter().map(|m| m.bytes).sum()
    }

    /// Rows in the file.
    pub fn lines(&self) -> u64 {
        self.members.iter().map(|m| m.lines).sum()
    }
}

/// The data file of a day (`YYYY-MM-DD`).
pub fn data_name(day: &str) -> String {
    format!("{PREFIX}{day}{DATA_SUFFIX}")
}

/// The manifest of a day.
pub fn manifest_name(day: &str) -> String {
    format!("{PREFIX}{day}{MANIFEST_SUFFIX}")
}

/// The UTC day (`YYYY-MM-DD`) of a Unix time in ms.
pub fn day_of(ms: i64) -> String {
    let t = crate::clock::from_unix_ms(ms);
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

/// Create a directory (and its parents) owner-only.
fn private_dir(dir: &Path) -> Result<(), ArchiveError> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir).map_err(io(dir))
}

fn private_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o
}

fn sync_dir(dir: &Path) -> Result<(), ArchiveError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

fn read_manifest(path: &Path) -> Result<Option<Manifest>, ArchiveError> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| ArchiveError::Manifest {
                path: path.display().to_string(),
                why: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path)(e)),
    }
}

/// An archive directory being written.
#[derive(Debug, Clone)]
pub struct Archive {
    dir: PathBuf,
}

impl Archive {
    /// The archive in `dir` (created owner-only on the first write).
    pub fn new(dir: PathBuf) -> Self {
        Archive { dir }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Append rows (JSON objects) to their days' files: `lines` maps a day to its lines. On
    /// return every line is on disk (fsync) and recorded in its day's manifest.
    pub fn append(&self, lines: &BTreeMap<String, Vec<String>>) -> Result<(), ArchiveError> {
        if lines.values().all(Vec::is_empty) {
            return Ok(());
        }
        private_dir(&self.dir)?;
        for (day, rows) in lines.iter().filter(|(_, r)| !r.is_empty()) {
            self.append_day(day, rows)?;
        }
        Ok(())
    }

    fn append_day(&self, day: &str, rows: &[String]) -> Result<(), ArchiveError> {
        let data = self.dir.join(data_name(day));
        let manifest_path = self.dir.join(manifest_name(day));
        let mut manifest = match read_manifest(&manifest_path)? {
            Some(m) => m,
            None => {
                self.index(day)?;
                Manifest {
                    format: 1,
                    file: data_name(day),
                    members: Vec::new(),
                }
            }
        };
        let mut member = Vec::new();
        {
            let mut gz = GzEncoder::new(&mut member, Compression::default());
            for r in rows {
                gz.write_all(r.as_bytes()).map_err(io(&data))?;
                gz.write_all(b"\n").map_err(io(&data))?;
            }
            gz.finish().map_err(io(&data))?;
        }
        let mut f = private_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&data)
            .map_err(io(&data))?;
        let recorded = manifest.bytes();
        let found = f.metadata().map_err(io(&data))?.len();
        if found < recorded {
            return Err(ArchiveError::Damaged {
                path: data.display().to_string(),
                found,
                expected: recorded,
            });
        }
        if found > recorded {
            // A member written before a stop that its manifest never recorded: cut it off (the
            // rows are still in the database and are archived again now).
            f.set_len(recorded).map_err(io(&data))?;
        }
        f.seek(SeekFrom::Start(recorded)).map_err(io(&data))?;
        f.write_all(&member).map_err(io(&data))?;
        f.sync_all().map_err(io(&data))?;
        manifest.members.push(Member {
            bytes: member.len() as u64,
            lines: rows.len() as u64,
            sha256: hex::encode(Sha256::digest(&member)),
        });
        let tmp = self.dir.join(format!("{}.tmp", manifest_name(day)));
        let text = serde_json::to_vec_pretty(&manifest).map_err(|e| ArchiveError::Manifest {
            path: manifest_path.display().to_string(),
            why: e.to_string(),
        })?;
        {
            let mut t = private_options()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)
                .map_err(io(&tmp))?;
            t.write_all(&text).map_err(io(&tmp))?;
            t.sync_all().map_err(io(&tmp))?;
        }
        std::fs::rename(&tmp, &manifest_path).map_err(io(&manifest_path))?;
        sync_dir(&self.dir)
    }

    /// Record a new day in the index (before its first file exists).
    fn index(&self, day: &str) -> Result<(), ArchiveError> {
        let path = self.dir.join(INDEX);
        if read_index(&self.dir)?.contains(day) {
            return Ok(());
        }
        let mut f = private_options()
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io(&path))?;
        writeln!(f, "{day}").map_err(io(&path))?;
        f.sync_all().map_err(io(&path))?;
        sync_dir(&self.dir)
    }
}

fn read_index(dir: &Path) -> Result<BTreeSet<String>, ArchiveError> {
    let path = dir.join(INDEX);
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(s
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeSet::new()),
        Err(e) => Err(io(&path)(e)),
    }
}

/// What [`verify`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Days whose file matches its manifest.
    pub days_ok: usize,
    /// Rows in those files.
    pub rows: u64,
    /// Each problem, naming the file.
    pub problems: Vec<String>,
}

/// Check every day of an archive directory: each day in `INDEX` has its data file and its
/// manifest, the file is exactly the members its manifest lists (length, SHA-256, row count),
/// and no data file or manifest is outside the index.
pub fn verify(dir: &Path) -> Result<Report, ArchiveError> {
    let mut report = Report::default();
    if !dir.join(INDEX).exists() {
        report.problems.push(format!(
            "{}: missing (the list of archived days)",
            dir.join(INDEX).display()
        ));
    }
    let days = read_index(dir)?;
    let mut seen = BTreeSet::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let name = entry.map_err(io(dir))?.file_name().to_string_lossy().into_owned();
        let day = name
            .strip_prefix(PREFIX)
            .and_then(|n| n.strip_suffix(DATA_SUFFIX).or_else(|| n.strip_suffix(MANIFEST_SUFFIX)));
        if let Some(day) = day {
            seen.insert(day.to_string());
            if !days.contains(day) {
                report
                    .problems
                    .push(format!("{}: not in {INDEX}", dir.join(&name).display()));
            }
        }
    }
    for day in days.iter().chain(seen.difference(&days)) {
        match verify_day(dir, day) {
            Ok(Ok(rows)) => {
                report.days_ok += 1;
                report.rows += rows;
            }
            Ok(Err(problem)) => report.problems.push(problem),
            Err(e) => report.problems.push(e.to_string()),
        }
    }
    Ok(report)
}

/// One day: `Ok(Ok(rows))`, or `Ok(Err(problem))` naming the file.
fn verify_day(dir: &Path, day: &str) -> Result<Result<u64, String>, ArchiveError> {
    let data = dir.join(data_name(day));
    let mpath = dir.join(manifest_name(day));
    let Some(manifest) = read_manifest(&mpath)? else {
        return Ok(Err(format!("{}: missing (manifest of {day})", mpath.display())));
    };
    let bytes = match std::fs::read(&data) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Err(format!("{}: missing (archive of {day})", data.display())));
        }
        Err(e) => return Err(io(&data)(e)),
    };
    if bytes.len() as u64 != manifest.bytes() {
        return Ok(Err(format!(
            "{}: altered ({} bytes, the manifest records {})",
            data.display(),
            bytes.len(),
            manifest.bytes()
        )));
    }
    let mut at = 0usize;
    for (i, m) in manifest.members.iter().enumerate() {
        let end = at + m.bytes as usize;
        let part = &bytes[at..end];
        if hex::encode(Sha256::digest(part)) != m.sha256 {
            return Ok(Err(format!(
                "{}: altered (member {} of {}, bytes {at}..{end}, does not match its SHA-256)",
                data.display(),
                i + 1,
                manifest.members.len()
            )));
        }
        let mut text = String::new();
        if MultiGzDecoder::new(part).read_to_string(&mut text).is_err() || text.lines().count() as u64 != m.lines {
            return Ok(Err(format!(
                "{}: member {} does not hold its {} rows",
                data.display(),
                i + 1,
                m.lines
            )));
        }
        at = end;
    }
    Ok(Ok(manifest.lines()))
}

/// Every row of one day's file, as written (the JSON lines).
pub fn read_day(dir: &Path, day: &str) -> Result<Vec<String>, ArchiveError> {
    let data = dir.join(data_name(day));
    let f = File::open(&data).map_err(io(&data))?;
    let mut text = String::new();
    MultiGzDecoder::new(std::io::BufReader::new(f))
        .read_to_string(&mut text)
        .map_err(io(&data))?;
    Ok(text.lines().map(String::from).collect())
}

/// The days listed in an archive's index.
pub fn days(dir: &Path) -> Result<Vec<String>, ArchiveError> {
    Ok(read_index(dir)?.into_iter().collect())
}
