//! A set of traces run as one: finding them, running each in-process (responses and outcome)
//! or against a real daemon (responses), blessing, and the reports (text, JSON, JUnit XML).

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use serde_json::Value;

use super::run::{Mismatch, run_in_process};
use super::target::{Target, run_against};
use crate::trace::Trace;

/// Every `*.trace` file in `paths`: files as given, directories searched recursively, each
/// directory's traces in name order.
pub fn collect(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out)?;
            } else if p.extension().is_some_and(|e| e == "trace") {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            walk(p, &mut out)?;
        } else if p.exists() {
            out.push(p.clone());
        } else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{}: no such file or directory", p.display()),
            ));
        }
    }
    Ok(out)
}

/// How a trace fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Every response (and the outcome) as expected.
    Passed,
    /// At least one mismatch.
    Failed,
    /// Not run (needs in-process).
    Skipped,
    /// Could not be run (does not parse, records do not import, sockets…).
    Error,
    /// Expectations rewritten (`--bless`).
    Blessed,
}

impl Status {
    /// Word for the text report.
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Passed => "ok",
            Status::Failed => "FAILED",
            Status::Skipped => "skipped",
            Status::Error => "ERROR",
            Status::Blessed => "blessed",
        }
    }
}

/// The outcome comparison of an in-process run.
#[derive(Debug, Clone, Serialize)]
pub struct OutcomeCheck {
    /// The outcome file.
    pub file: String,
    /// `match`, `differs`, `missing`, `written` or `not compared` (`@outcome none`).
    pub status: &'static str,
    /// What differs: one line per section entry only in the expected or only in the actual.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub differences: Vec<String>,
}

/// One trace's report.
#[derive(Debug, Clone, Serialize)]
pub struct TraceReport {
    /// Trace file.
    pub trace: String,
    /// Title.
    pub title: String,
    /// Result.
    pub status: Status,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// Responses that differ.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mismatches: Vec<Mismatch>,
    /// The outcome comparison (in-process only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<OutcomeCheck>,
    /// Why it was skipped, or the error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What could not be reproduced exactly.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The actual responses (escaped, `(none)`), for comparing runs.
    #[serde(skip)]
    pub responses: Vec<String>,
    /// The actual outcome document (in-process).
    #[serde(skip)]
    pub outcome_doc: Option<Value>,
}

impl TraceReport {
    /// A report for a trace that could not be run.
    pub fn failed_to_run(path: &Path, reason: &str) -> TraceReport {
        let mut r = TraceReport::new(path);
        r.reason = Some(reason.to_string());
        r
    }

    fn new(path: &Path) -> TraceReport {
        TraceReport {
            trace: path.display().to_string(),
            title: path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            status: Status::Error,
            duration_ms: 0,
            mismatches: Vec::new(),
            outcome: None,
            reason: None,
            notes: Vec::new(),
            responses: Vec::new(),
            outcome_doc: None,
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

fn responses(actual: &[(usize, Option<Vec<u8>>)]) -> Vec<String> {
    actual
        .iter()
        .map(|(_, b)| b.as_deref().map_or("(none)".into(), crate::protocol::escape::escape))
        .collect()
}

/// The entries of each outcome section that are only in one of the two documents.
pub fn outcome_differences(expected: &Value, actual: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let keys: std::collections::BTreeSet<&String> = expected
        .as_object()
        .into_iter()
        .flat_map(|o| o.keys())
        .chain(actual.as_object().into_iter().flat_map(|o| o.keys()))
        .collect();
    for k in keys {
        let (e, a) = (&expected[k.as_str()], &actual[k.as_str()]);
        if e == a {
            continue;
        }
        match (e.as_array(), a.as_array()) {
            (Some(ea), Some(aa)) => {
                let text = |v: &Value| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let mut rest: Vec<&Value> = aa.iter().collect();
                for x in ea {
                    if let Some(i) = rest.iter().position(|y| *y == x) {
                        rest.remove(i);
                    } else {
                        out.push(format!("{k}: expected only: {}", text(x)));
                    }
                }
                for y in rest {
                    out.push(format!("{k}: actual only: {}", text(y)));
                }
                if out.is_empty() {
                    out.push(format!("{k}: same entries in a different order"));
                }
            }
            _ => out.push(format!("{k}: expected {e}, actual {a}")),
        }
    }
    out
}

/// Write `value` as the pretty JSON outcome file.
pub fn write_outcome(path: &Path, value: &Value) -> std::io::Result<()> {
    let mut text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    text.push('\n');
    std::fs::write(path, text)
}

/// A temporary directory for one in-process run, removed on drop.
struct WorkDir(PathBuf);

impl WorkDir {
    fn new() -> std::io::Result<WorkDir> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let p = std::env::temp_dir().join(format!("meldkamer-replay-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p)?;
        Ok(WorkDir(p))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Run one trace in-process on a fresh temporary database; compare responses and the outcome
/// file, or rewrite both when `bless`.
pub async fn check_in_process(path: &Path, bless: bool) -> TraceReport {
    let started = Instant::now();
    let mut report = TraceReport::new(path);
    let trace = match Trace::load(path) {
        Ok(t) => t,
        Err(e) => {
            report.reason = Some(e.to_string());
            return report;
        }
    };
    report.title = trace.title();
    let dir = match WorkDir::new() {
        Ok(d) => d,
        Err(e) => {
            report.reason = Some(format!("temporary directory: {e}"));
            return report;
        }
    };
    let result = match run_in_process(&trace, dir.path()).await {
        Ok(r) => r,
        Err(e) => {
            report.reason = Some(error_chain(&e));
            report.duration_ms = started.elapsed().as_millis() as u64;
            return report;
        }
    };
    report.responses = responses(&result.actual);
    let outcome_path = trace.outcome_path();
    let file = outcome_path.display().to_string();
    if bless {
        let text = trace.with_expectations(&result.actual);
        let written = std::fs::write(&trace.path, text).and_then(|()| {
            if trace.compares_outcome() {
                write_outcome(&outcome_path, &result.outcome)
            } else {
                Ok(())
            }
        });
        match written {
            Ok(()) => report.status = Status::Blessed,
            Err(e) => report.reason = Some(format!("writing: {e}")),
        }
        report.outcome = Some(OutcomeCheck {
            file,
            status: if trace.compares_outcome() {
                "written"
            } else {
                "not compared"
            },
            differences: Vec::new(),
        });
        report.mismatches = result.mismatches;
        report.outcome_doc = Some(result.outcome);
        report.duration_ms = started.elapsed().as_millis() as u64;
        return report;
    }
    let outcome = if !trace.compares_outcome() {
        OutcomeCheck {
            file,
            status: "not compared",
            differences: Vec::new(),
        }
    } else {
        match std::fs::read_to_string(&outcome_path) {
            Err(_) => OutcomeCheck {
                file,
                status: "missing",
                differences: vec!["no outcome file (run with --bless to write it)".into()],
            },
            Ok(text) => match serde_json::from_str::<Value>(&text) {
                Err(e) => OutcomeCheck {
                    file,
                    status: "differs",
                    differences: vec![format!("not JSON: {e}")],
                },
                Ok(expected) if expected == result.outcome => OutcomeCheck {
                    file,
                    status: "match",
                    differences: Vec::new(),
                },
                Ok(expected) => OutcomeCheck {
                    file,
                    status: "differs",
                    differences: outcome_differences(&expected, &result.outcome),
                },
            },
        }
    };
    let outcome_ok = matches!(outcome.status, "match" | "not compared");
    report.status = if result.mismatches.is_empty() && outcome_ok {
        Status::Passed
    } else {
        Status::Failed
    };
    report.mismatches = result.mismatches;
    report.outcome = Some(outcome);
    report.outcome_doc = Some(result.outcome);
    report.duration_ms = started.elapsed().as_millis() as u64;
    report
}

/// Run one trace against a real daemon: responses only.
pub async fn check_target(path: &Path, target: Target) -> TraceReport {
    let started = Instant::now();
    let mut report = TraceReport::new(path);
    let trace = match Trace::load(path) {
        Ok(t) => t,
        Err(e) => {
            report.reason = Some(e.to_string());
            return report;
        }
    };
    report.title = trace.title();
    match run_against(&trace, target).await {
        Err(e) => report.reason = Some(error_chain(&e)),
        Ok(run) => {
            report.responses = responses(&run.actual);
            report.notes = run.notes;
            report.status = if let Some(why) = run.skipped {
                report.reason = Some(why);
                Status::Skipped
            } else if run.mismatches.is_empty() {
                Status::Passed
            } else {
                Status::Failed
            };
            report.mismatches = run.mismatches;
        }
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    report
}

/// Counts by status.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    /// Passed.
    pub passed: usize,
    /// Failed.
    pub failed: usize,
    /// Skipped.
    pub skipped: usize,
    /// Errors.
    pub errors: usize,
    /// Blessed.
    pub blessed: usize,
}

impl Summary {
    /// Count the reports.
    pub fn of(reports: &[TraceReport]) -> Summary {
        let mut s = Summary::default();
        for r in reports {
            match r.status {
                Status::Passed => s.passed += 1,
                Status::Failed => s.failed += 1,
                Status::Skipped => s.skipped += 1,
                Status::Error => s.errors += 1,
                Status::Blessed => s.blessed += 1,
            }
        }
        s
    }

    /// True when nothing failed and nothing broke.
    pub fn ok(&self) -> bool {
        self.failed == 0 && self.errors == 0
    }
}

/// The text of one trace's report: a status line, then each mismatch as expected vs actual
/// with the differing fields named.
pub fn text(r: &TraceReport) -> String {
    let mut s = format!(
        "{:<7} {} ({}, {} ms)",
        r.status.as_str(),
        r.trace,
        r.title,
        r.duration_ms
    );
    if let Some(why) = &r.reason {
        s.push_str(&format!("\n        {why}"));
    }
    for m in &r.mismatches {
        s.push_str(&format!(
            "\n        line {}: {}\n          expected: {}\n          actual:   {}",
            m.line,
            m.fields.join(", "),
            m.expected,
            m.actual
        ));
    }
    if let Some(o) = &r.outcome
        && !o.differences.is_empty()
    {
        s.push_str(&format!("\n        outcome {} ({}):", o.status, o.file));
        for d in &o.differences {
            s.push_str(&format!("\n          {d}"));
        }
    }
    for n in &r.notes {
        s.push_str(&format!("\n        note: {n}"));
    }
    s
}

/// The JSON report.
pub fn json(mode: &str, target: Option<&str>, reports: &[TraceReport]) -> Value {
    serde_json::json!({
        "mode": mode,
        "target": target,
        "summary": Summary::of(reports),
        "traces": reports,
    })
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => out.push_str(&format!("\\x{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// The JUnit XML report: one test case per trace.
pub fn junit(suite: &str, reports: &[TraceReport]) -> String {
    let s = Summary::of(reports);
    let total_ms: u64 = reports.iter().map(|r| r.duration_ms).sum();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str(&format!(
        "<testsuites name=\"meldkamer replay\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{:.3}\">\n",
        reports.len(),
        s.failed,
        s.errors,
        s.skipped,
        total_ms as f64 / 1000.0
    ));
    x.push_str(&format!(
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{:.3}\">\n",
        xml_escape(suite),
        reports.len(),
        s.failed,
        s.errors,
        s.skipped,
        total_ms as f64 / 1000.0
    ));
    for r in reports {
        x.push_str(&format!(
            "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
            xml_escape(&r.trace),
            xml_escape(&r.title),
            r.duration_ms as f64 / 1000.0
        ));
        let detail = xml_escape(&text(r));
        match r.status {
            Status::Passed | Status::Blessed => x.push_str(" />\n"),
            Status::Skipped => x.push_str(&format!(
                ">\n      <skipped message=\"{}\" />\n    </testcase>\n",
                xml_escape(r.reason.as_deref().unwrap_or("skipped"))
            )),
            Status::Failed => {
                let n = r.mismatches.len() + r.outcome.as_ref().map_or(0, |o| usize::from(!o.differences.is_empty()));
                x.push_str(&format!(
                    ">\n      <failure message=\"{n} mismatch(es)\" type=\"mismatch\">{detail}</failure>\n    </testcase>\n"
                ));
            }
            Status::Error => x.push_str(&format!(
                ">\n      <error message=\"{}\" type=\"error\">{detail}</error>\n    </testcase>\n",
                xml_escape(r.reason.as_deref().unwrap_or("error"))
            )),
        }
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_differences_name_the_entries() {
        let e = serde_json::json!({"events": ["a", "b"], "alarms": [], "frames": [{"n": 1}]});
        let a = serde_json::json!({"events": ["a", "c"], "alarms": [], "frames": [{"n": 1}]});
        assert_eq!(
            outcome_differences(&e, &a),
            vec!["events: expected only: b", "events: actual only: c"]
        );
        assert!(outcome_differences(&e, &e).is_empty());
    }

    #[test]
    fn junit_escapes_and_counts() {
        let mut ok = TraceReport::new(Path::new("a.trace"));
        ok.status = Status::Passed;
        let mut bad = TraceReport::new(Path::new("b<&>.trace"));
        bad.status = Status::Failed;
        bad.mismatches.push(Mismatch {
            line: 3,
            expected: "\\n\"ACK\"".into(),
            actual: "(none)".into(),
            fields: vec!["response (none received)"],
        });
        let mut skip = TraceReport::new(Path::new("c.trace"));
        skip.status = Status::Skipped;
        skip.reason = Some("needs in-process: @restart at line 4".into());
        let x = junit("t", &[ok, bad, skip]);
        assert!(
            x.contains("tests=\"3\" failures=\"1\" errors=\"0\" skipped=\"1\""),
            "{x}"
        );
        assert!(x.contains("b&lt;&amp;&gt;.trace"));
        assert!(x.contains("<skipped message=\"needs in-process: @restart at line 4\" />"));
        assert!(x.contains("&quot;ACK&quot;"));
    }
}
