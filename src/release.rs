//! Support status of this release (see `SECURITY.md`). The last release of a line that reaches
//! end of life is built with `--features end-of-life`: it then says so at start-up and in
//! `--version`, so nobody runs an unsupported receiver without being told.

use std::sync::OnceLock;

/// This version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// This is the last release of its line: no more fixes, security fixes included.
pub const END_OF_LIFE: bool = cfg!(feature = "end-of-life");

/// What end of life means, in one line.
pub const END_OF_LIFE_NOTICE: &str = "END OF LIFE: this release gets no more fixes, security fixes included; \
     upgrade to a supported release (see SECURITY.md)";

/// The version line for a release with or without end of life.
pub fn version_line(end_of_life: bool) -> String {
    if end_of_life {
        format!("{VERSION} ({END_OF_LIFE_NOTICE})")
    } else {
        VERSION.to_string()
    }
}

/// The version line of this build (what `--version` prints after the program name).
pub fn version() -> &'static str {
    static LINE: OnceLock<String> = OnceLock::new();
    LINE.get_or_init(|| version_line(END_OF_LIFE))
}

/// Log the support status at start-up: a warning on an end-of-life release.
pub fn log_status() {
    if END_OF_LIFE {
        tracing::warn!(version = VERSION, "{END_OF_LIFE_NOTICE}");
    } else {
        tracing::info!(version = VERSION, "meldkamer starting");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_of_life_is_in_the_version_line() {
        assert_eq!(version_line(false), VERSION);
        let eol = version_line(true);
        assert!(eol.starts_with(VERSION));
        assert!(eol.contains("END OF LIFE"), "{eol}");
        assert!(eol.contains("SECURITY.md"), "{eol}");
        assert_eq!(version(), version_line(END_OF_LIFE));
    }
}
