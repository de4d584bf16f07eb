//! The fixture trace format (`fixtures/README.md`): one directive per line.
//!
//! ```text
//! # comment
//! @title Burglary, then restore
//! @records records/basic.toml      customer data (relative to the trace), applied before start
//! @clock 2026-01-15T12:00:00Z      the virtual clock (receiver time)
//! @pad-seed 1                      pads of encrypted ACKs (deterministic mode)
//! @transport tcp | udp             (default tcp)
//! @transport cid-tcp | cid-udp     the Contact ID input (one-byte answers)
//! @transport automation            the runner is the automation software (Sur-Gard output)
//! @connect                         close the TCP connection and open a new one
//! @advance 91s                     move the virtual clock (ms, s, m, h); supervision runs
//! @restart                         stop the daemon and start it again on the same database
//! @stop / @start                   stop the daemon (time may pass), start it again
//! @in-process                      only meaningful in-process (`replay --target` skips it)
//! @outcome none                    no outcome file: only the responses are compared
//! @extend SITE UNTIL REASON        an operator's extension of a site's schedule (in-process)
//! @service MODE TARGET UNTIL REASON  a supervisor puts SITE or account:NUMBER on test or
//!                                  out_of_service (in-process); `@service end TARGET` ends it
//! > \n…\r                          bytes a panel sends (escapes \n \r \t \\ \xNN)
//! < \n…\r                          the response expected
//! < (none)                         no response expected
//! ```

use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use crate::protocol::escape::{escape, unescape};

/// TCP or UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceTransport {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// The Contact ID input over TCP (`src/replay/side.rs`).
    CidTcp,
    /// The Contact ID input over UDP.
    CidUdp,
    /// The Sur-Gard output: the runner is the automation software.
    Automation,
}

/// One directive.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Title.
    Title(String),
    /// Records file to import before start.
    Records(PathBuf),
    /// Set the virtual clock.
    Clock(OffsetDateTime),
    /// Seed the ACK pad source.
    PadSeed(u64),
    /// Switch transport.
    Transport(TraceTransport),
    /// New TCP connection.
    Connect,
    /// Move the clock.
    Advance(time::Duration),
    /// Restart the daemon.
    Restart,
    /// Stop the daemon.
    Stop,
    /// Start it again.
    Start,
    /// The trace only makes sense in-process (against a remote daemon it is skipped).
    InProcessOnly,
    /// No outcome file: only responses are compared (recordings).
    NoOutcome,
    /// Panel → receiver bytes.
    Send(Vec<u8>),
    /// Receiver → panel bytes expected (`None`: no response).
    Expect(Option<Vec<u8>>),
    /// What an operator does through the API (in-process only).
    Operator(OperatorStep),
}

/// An operator's action in a trace, done as the API does it (in-process only).
#[derive(Debug, Clone, PartialEq)]
pub enum OperatorStep {
    /// A one-off extension of a site's schedule (`@extend SITE UNTIL REASON`).
    Extend {
        /// Site reference.
        site: String,
        /// Until.
        until: OffsetDateTime,
        /// What the caller said.
        reason: String,
    },
    /// A site or account on test or out of service (`@service test|out_of_service TARGET UNTIL
    /// REASON`), or its period ended (`@service end TARGET`).
    Service {
        /// `test`, `out_of_service` or `end`.
        mode: String,
        /// A site reference, or `account:NUMBER`.
        target: String,
        /// Until (not for `end`).
        until: Option<OffsetDateTime>,
        /// Why.
        reason: String,
    },
}

/// A parsed trace, with its source lines (for rewriting expectations in place).
#[derive(Debug, Clone)]
pub struct Trace {
    /// The file.
    pub path: PathBuf,
    /// The source text, line by line.
    pub lines: Vec<String>,
    /// Directives with their 1-based line numbers.
    pub steps: Vec<(usize, Step)>,
}

/// A trace that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("{path}, line {line}: {problem}")]
pub struct TraceError {
    /// File.
    pub path: String,
    /// Line.
    pub line: usize,
    /// What is wrong.
    pub problem: String,
}

/// Parse a duration like `500ms`, `91s`, `10m`, `2h`.
pub fn parse_duration(s: &str) -> Option<time::Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: i64 = num.parse().ok()?;
    Some(match unit {
        "ms" => time::Duration::milliseconds(n),
        "s" => time::Duration::seconds(n),
        "m" => time::Duration::minutes(n),
        "h" => time::Duration::hours(n),
        _ => return None,
    })
}

impl Trace {
    /// Parse trace text.
    pub fn parse(text: &str, path: &Path) -> Result<Trace, TraceError> {
        let err = |line: usize, problem: String| TraceError {
            path: path.display().to_string(),
            line,
            problem,
        };
        let base = path.parent().unwrap_or(Path::new("."));
        let mut steps = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = raw.trim_end_matches('\r');
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let (head, rest) = line.split_once(' ').unwrap_or((line, ""));
            let bytes = |s: &str| unescape(s).map_err(|at| err(n, format!("bad escape at character {at}")));
            let step = match head {
                ">" => Step::Send(bytes(rest)?),
                "<" if rest.trim() == "(none)" => Step::Expect(None),
                "<" => Step::Expect(Some(bytes(rest)?)),
                "@title" => Step::Title(rest.trim().to_string()),
                "@records" => Step::Records(base.join(rest.trim())),
                "@clock" => Step::Clock(
                    OffsetDateTime::parse(rest.trim(), &time::format_description::well_known::Rfc3339)
                        .map_err(|e| err(n, format!("@clock needs an RFC 3339 time: {e}")))?,
                ),
                "@pad-seed" => Step::PadSeed(
                    rest.trim()
                        .parse()
                        .map_err(|_| err(n, "@pad-seed needs a number".into()))?,
                ),
                "@transport" => match rest.trim() {
                    "tcp" => Step::Transport(TraceTransport::Tcp),
                    "udp" => Step::Transport(TraceTransport::Udp),
                    "cid-tcp" => Step::Transport(TraceTransport::CidTcp),
                    "cid-udp" => Step::Transport(TraceTransport::CidUdp),
                    "automation" => Step::Transport(TraceTransport::Automation),
                    other => {
                        return Err(err(
                            n,
                            format!("@transport {other:?}: tcp, udp, cid-tcp, cid-udp or automation"),
                        ));
                    }
                },
                "@connect" => Step::Connect,
                "@advance" => Step::Advance(
                    parse_duration(rest)
                        .ok_or_else(|| err(n, "@advance needs a duration like 500ms, 91s, 10m".into()))?,
                ),
                "@restart" => Step::Restart,
                "@stop" => Step::Stop,
                "@start" => Step::Start,
                "@in-process" => Step::InProcessOnly,
                "@extend" => {
                    let mut parts = rest.trim().splitn(3, ' ');
                    let (site, until, reason) = (parts.next(), parts.next(), parts.next());
                    let (Some(site), Some(until), Some(reason)) = (site, until, reason) else {
                        return Err(err(n, "@extend needs a site, an RFC 3339 end and a reason".into()));
                    };
                    let until = OffsetDateTime::parse(until, &time::format_description::well_known::Rfc3339)
                        .map_err(|e| err(n, format!("@extend needs an RFC 3339 end: {e}")))?;
                    Step::Operator(OperatorStep::Extend {
                        site: site.to_string(),
                        until,
                        reason: reason.trim().to_string(),
                    })
                }
                "@service" => {
                    let mut parts = rest.trim().splitn(4, ' ');
                    let (mode, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                    let usage = "@service test|out_of_service TARGET UNTIL REASON, or @service end TARGET";
                    let step = match (mode, parts.next(), parts.next()) {
                        ("end", None, None) if !target.is_empty() => OperatorStep::Service {
                            mode: mode.into(),
                            target: target.into(),
                            until: None,
                            reason: String::new(),
                        },
                        ("test" | "out_of_service", Some(until), Some(reason)) if !target.is_empty() => {
                            let until = OffsetDateTime::parse(until, &time::format_description::well_known::Rfc3339)
                                .map_err(|e| err(n, format!("{usage}: {e}")))?;
                            OperatorStep::Service {
                                mode: mode.into(),
                                target: target.into(),
                                until: Some(until),
                                reason: reason.trim().into(),
                            }
                        }
                        _ => return Err(err(n, usage.into())),
                    };
                    Step::Operator(step)
                }
                "@outcome" => match rest.trim() {
                    "none" => Step::NoOutcome,
                    other => return Err(err(n, format!("@outcome {other:?}: only `@outcome none` is known"))),
                },
                other => return Err(err(n, format!("unknown directive {other:?}"))),
            };
            steps.push((n, step));
        }
        Ok(Trace {
            path: path.to_path_buf(),
            lines: text.lines().map(str::to_string).collect(),
            steps,
        })
    }

    /// Read and parse a trace file.
    pub fn load(path: &Path) -> Result<Trace, TraceError> {
        let text = std::fs::read_to_string(path).map_err(|e| TraceError {
            path: path.display().to_string(),
            line: 0,
            problem: e.to_string(),
        })?;
        Trace::parse(&text, path)
    }

    /// The text with the expectation on `line` replaced (for `--bless`).
    pub fn with_expectations(&self, actual: &[(usize, Option<Vec<u8>>)]) -> String {
        let mut lines = self.lines.clone();
        for (line, bytes) in actual {
            if let Some(l) = lines.get_mut(line - 1) {
                *l = expect_line(bytes.as_deref());
            }
        }
        let mut s = lines.join("\n");
        s.push('\n');
        s
    }

    /// True if the trace asks for no outcome comparison (`@outcome none`).
    pub fn compares_outcome(&self) -> bool {
        !self.steps.iter().any(|(_, s)| matches!(s, Step::NoOutcome))
    }

    /// The outcome file next to the trace: `NAME.outcome.json` for `NAME.trace`.
    pub fn outcome_path(&self) -> PathBuf {
        self.path.with_extension("outcome.json")
    }

    /// The title, or the file name.
    pub fn title(&self) -> String {
        self.steps
            .iter()
            .find_map(|(_, s)| match s {
                Step::Title(t) => Some(t.clone()),
                _ => None,
            })
            .unwrap_or_else(|| self.path.display().to_string())
    }
}

/// A `<` line for the given response.
pub fn expect_line(bytes: Option<&[u8]>) -> String {
    match bytes {
        Some(b) => format!("< {}", escape(b)),
        None => "< (none)".to_string(),
    }
}

/// A `>` line for the given bytes.
pub fn send_line(bytes: &[u8]) -> String {
    format!("> {}", escape(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_directive() {
        let text = "# c\n@title T\n@records r.toml\n@clock 2026-01-15T12:00:00Z\n@pad-seed 3\n@transport udp\n@connect\n@advance 91s\n@restart\n> \\nAB\\r\n< (none)\n< \\x00\n";
        let t = Trace::parse(text, Path::new("dir/x.trace")).expect("parses");
        assert_eq!(t.steps.len(), 11);
        assert_eq!(t.title(), "T");
        assert_eq!(t.steps[1].1, Step::Records(PathBuf::from("dir/r.toml")));
        assert_eq!(t.steps[6].1, Step::Advance(time::Duration::seconds(91)));
        assert_eq!(t.steps[8].1, Step::Send(b"\nAB\r".to_vec()));
        assert_eq!(t.steps[9].1, Step::Expect(None));
        assert_eq!(t.steps[10], (12, Step::Expect(Some(vec![0]))));
    }

    #[test]
    fn in_process_and_outcome_directives() {
        let t = Trace::parse("@in-process\n@outcome none\n", Path::new("dir/x.trace")).expect("parses");
        assert_eq!(t.steps, vec![(1, Step::InProcessOnly), (2, Step::NoOutcome)]);
        assert!(!t.compares_outcome());
        assert_eq!(t.outcome_path(), PathBuf::from("dir/x.outcome.json"));
        assert!(Trace::parse("@outcome maybe\n", Path::new("x")).is_err());
    }

    #[test]
    fn operator_directives() {
        let t = Trace::parse("@extend S-1 2026-01-15T22:30:00Z we stay late\n", Path::new("x")).expect("parses");
        assert_eq!(
            t.steps[0].1,
            Step::Operator(OperatorStep::Extend {
                site: "S-1".into(),
                until: time::macros::datetime!(2026-01-15 22:30:00 UTC),
                reason: "we stay late".into()
            })
        );
        assert!(Trace::parse("@extend S-1 tonight\n", Path::new("x")).is_err());
        let t = Trace::parse(
            "@service test account:8001 2026-01-15T11:00:00Z new detector\n@service end S-1\n",
            Path::new("x"),
        )
        .expect("parses");
        assert!(
            matches!(&t.steps[0].1, Step::Operator(OperatorStep::Service { mode, until: Some(_), .. }) if mode == "test")
        );
        assert!(
            matches!(&t.steps[1].1, Step::Operator(OperatorStep::Service { mode, until: None, .. }) if mode == "end")
        );
        assert!(Trace::parse("@service maybe S-1\n", Path::new("x")).is_err());
    }

    #[test]
    fn errors_name_the_line() {
        let e = Trace::parse("@advance soon\n", Path::new("x")).expect_err("bad");
        assert_eq!(e.line, 1);
        let e = Trace::parse("\n\n@frobnicate\n", Path::new("x")).expect_err("bad");
        assert_eq!(e.line, 3);
        assert!(Trace::parse("> \\q\n", Path::new("x")).is_err());
    }

    #[test]
    fn bless_rewrites_only_expectations() {
        let t = Trace::parse("# keep\n> \\nA\\r\n< (none)\n", Path::new("x")).expect("ok");
        let out = t.with_expectations(&[(3, Some(b"\nB\r".to_vec()))]);
        assert_eq!(out, "# keep\n> \\nA\\r\n< \\nB\\r\n");
    }
}
