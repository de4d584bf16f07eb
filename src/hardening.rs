//! Files owner-only, and a process that leaves no copy of its memory behind.
//!
//! Every file meldkamer writes holds something an outsider should not read: the database (events,
//! customers, sealed keys), its `-wal` and `-shm`, the key files, the event stream, recorded
//! traffic, the published audit heads. So:
//!
//! - each such file is created with mode 0600 and each directory with 0700, explicitly, so the
//!   result does not depend on the umask the process was started with ([`private_file`],
//!   [`private_dir_all`], [`precreate_private`]). SQLite creates the `-wal` and `-shm` with the
//!   database file's own mode (and `fchmod`s them to it, whatever the umask), so pre-creating the
//!   database 0600 makes all three owner-only;
//! - every command sets the umask to 0o077 at start ([`restrict_umask`]), for whatever else a
//!   library may create;
//! - `serve` marks itself not dumpable and sets its core file limit to zero ([`no_core_dumps`])
//!   before it loads a key, a pepper or a password: no core file, and no `ptrace` or
//!   `/proc/PID/mem` for another process of the same user.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

/// Mode of every file meldkamer creates.
pub const FILE_MODE: u32 = 0o600;
/// Mode of every directory meldkamer creates.
pub const DIR_MODE: u32 = 0o700;

/// Set the process umask to 0o077 (group and others get nothing). Returns the previous one.
#[cfg(unix)]
pub fn restrict_umask() -> u32 {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077)).as_raw_mode()
}

/// Set the process umask (no-op where there is none).
#[cfg(not(unix))]
pub fn restrict_umask() -> u32 {
    0
}

/// Not dumpable (`PR_SET_DUMPABLE` 0: no core file, no `ptrace` attach or `/proc/PID/mem` for
/// other processes of the same user) and a core file limit of zero, soft and hard.
#[cfg(target_os = "linux")]
pub fn no_core_dumps() -> std::io::Result<()> {
    use rustix::process::{DumpableBehavior, Resource, Rlimit, set_dumpable_behavior, setrlimit};
    setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    )?;
    set_dumpable_behavior(DumpableBehavior::NotDumpable)?;
    Ok(())
}

/// A core file limit of zero (other Unix systems have no `PR_SET_DUMPABLE`).
#[cfg(all(unix, not(target_os = "linux")))]
pub fn no_core_dumps() -> std::io::Result<()> {
    use rustix::process::{Resource, Rlimit, setrlimit};
    setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    )?;
    Ok(())
}

/// Nothing to do where there are no core files.
#[cfg(not(unix))]
pub fn no_core_dumps() -> std::io::Result<()> {
    Ok(())
}

/// Options that create a file with mode 0600 (the mode applies only when the file is created).
pub fn private_file() -> OpenOptions {
    let mut o = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(FILE_MODE);
    }
    o
}

/// Create a directory and its missing parents, each new one with mode 0700.
pub fn private_dir_all(path: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(DIR_MODE);
    }
    b.create(path)
}

/// Create an empty file with mode 0600 unless it exists. Returns whether it was created.
pub fn precreate_private(path: &Path) -> std::io::Result<bool> {
    match private_file().write(true).create_new(true).open(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Replace `path` with `bytes` through a temporary file beside it (mode 0600), so a reader
/// never sees half a file.
pub fn write_private_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f: File = private_file().write(true).create(true).truncate(true).open(&tmp)?;
    f.write_all(bytes)?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// The permission bits of a file others (group or world) may use, if any.
#[cfg(unix)]
pub fn others_may_use(meta: &std::fs::Metadata) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o7777;
    (mode & 0o077 != 0).then_some(mode)
}

/// The permission bits of a file others may use (never, where there are none).
#[cfg(not(unix))]
pub fn others_may_use(_: &std::fs::Metadata) -> Option<u32> {
    None
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).expect("meta").permissions().mode() & 0o7777
    }

    /// Reads the effect back from the kernel. Harmless to the test process: it makes no core
    /// files and nobody attaches to it.
    #[cfg(target_os = "linux")]
    #[test]
    fn no_core_dumps_makes_the_process_undumpable_without_core_files() {
        use rustix::process::{DumpableBehavior, Resource, dumpable_behavior, getrlimit};
        no_core_dumps().expect("hardening applies");
        assert_eq!(dumpable_behavior().expect("prctl"), DumpableBehavior::NotDumpable);
        let core = getrlimit(Resource::Core);
        assert_eq!((core.current, core.maximum), (Some(0), Some(0)));
    }

    /// Explicit modes, whatever the umask (the test process keeps its own, usually 0o022).
    #[test]
    fn files_and_directories_are_created_owner_only() {
        rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
        let dir = tempfile::tempdir().expect("dir");
        let d = dir.path().join("a/b");
        private_dir_all(&d).expect("dirs");
        assert_eq!(mode(&dir.path().join("a")), DIR_MODE);
        assert_eq!(mode(&d), DIR_MODE);
        let f = d.join("f");
        assert!(precreate_private(&f).expect("create"));
        assert!(!precreate_private(&f).expect("exists"));
        assert_eq!(mode(&f), FILE_MODE);
        let g = d.join("g.toml");
        write_private_atomically(&g, b"x").expect("write");
        assert_eq!(mode(&g), FILE_MODE);
        assert_eq!(std::fs::read(&g).expect("read"), b"x");
        assert!(others_may_use(&std::fs::metadata(&g).expect("meta")).is_none());
        std::fs::set_permissions(&g, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert_eq!(others_may_use(&std::fs::metadata(&g).expect("meta")), Some(0o644));
    }
}
