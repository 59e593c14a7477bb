//! Turns one line of `restic backup --json` output (stdout or stderr) into a typed [`Line`].
//!
//! restic 0.14 to 0.19 are all in use, and their JSON differs in small ways (restic's
//! internal/ui/backup/json.go and cmd/restic/main.go at each tag; the tests below hold a line of
//! each shape). Both pipes also carry plain text, so nothing here may
//! fail: whatever a line holds, the caller gets something it can render or log. Fields are read
//! from a loose `serde_json::Value` instead of derived structs so that one odd value (a float
//! counter, a negative number, an error of an unexpected shape) degrades that field, not the line.

use serde_json::{Map, Number, Value};

use crate::events::{During, ErrorEvent, Progress, Summary};

/// One line of restic output, classified.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// A progress update (message_type "status" with `percent_done`).
    Status(Progress),
    Summary(Summary),
    /// message_type "error": the text is readable whatever shape the restic version sent.
    Error(ErrorEvent),
    /// restic 0.18+ announces every non-zero exit with this on stderr.
    ExitError {
        code: i64,
        message: String,
    },
    /// `verbose_status`, and the 0.14/0.15 `scan_finished` record that was mislabelled "status":
    /// a short human text, never a progress report (it has no `percent_done`).
    Verbose(String),
    /// A JSON object this parser does not know; kept verbatim so a newer restic loses nothing.
    Other(String),
    /// Not JSON: warnings, password prompts, ssh/rclone chatter, Go panics. Cleaned of
    /// `\r`-overwritten progress and ANSI escapes so it can be logged as one readable line.
    Text(String),
}

/// Longer than any real backup; anything above is an artefact of restic's arithmetic.
const MAX_SANE_ETA: u64 = 315_360_000;

/// The NaN/Inf-to-uint64 cast restic 0.14 prints before any bytes were read.
const NAN_CAST_ETA: u64 = 9_223_372_036_854_775_808;

/// What an error event says when restic <= 0.17.0 marshalled a Go error that has no exported
/// fields: the JSON is `{}` and the real text is lost.
const NO_DETAILS: &str = "unknown error (restic gave no details)";

/// Treat absurd ETAs as unknown: > 10 years (315_360_000 s) or the 0.14 NaN cast
/// 9223372036854775808. restic 0.14 sends the cast before bytes flow and 0.16+ can underflow;
/// showing "292 billion years left" helps nobody.
pub fn sane_eta(secs: u64) -> Option<u64> {
    if secs == NAN_CAST_ETA || secs > MAX_SANE_ETA {
        None
    } else {
        Some(secs)
    }
}

/// Classifies one line of restic output. Used for both stdout and stderr because restic mixes
/// JSON and text on both; never panics, whatever the input.
pub fn parse_line(line: &str) -> Line {
    // JSON is tried on the line as received first: cleaning could alter it, since DEL and C1
    // controls (U+009B is an 8-bit CSI) may appear raw inside JSON strings. Only when that fails
    // is junk around an object (a clear-line prefix, a \r redraw) removed and JSON tried again.
    let trimmed = line.trim();
    if let Some(parsed) = parse_json(trimmed) {
        return parsed;
    }
    let clean = clean_text(line);
    parse_json(&clean).unwrap_or(Line::Text(clean))
}

fn parse_json(text: &str) -> Option<Line> {
    if !text.starts_with('{') {
        return None;
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(obj)) => Some(parse_object(&obj, text)),
        _ => None,
    }
}

fn parse_object(obj: &Map<String, Value>, raw: &str) -> Line {
    match obj.get("message_type").and_then(Value::as_str) {
        // Only real progress reports carry percent_done (it is not omitempty); the 0.14/0.15
        // scan_finished record reuses "status" without it.
        Some("status") if obj.contains_key("percent_done") => Line::Status(progress(obj)),
        Some("status") | Some("verbose_status") => Line::Verbose(verbose_text(obj, raw)),
        Some("summary") => Line::Summary(summary(obj)),
        Some("error") => Line::Error(ErrorEvent {
            error: error_text(obj.get("error")),
            during: During::Restic(text_field(obj, "during")),
            item: text_field(obj, "item"),
        }),
        Some("exit_error") => Line::ExitError {
            code: int_field(obj, "code"),
            message: text_field(obj, "message"),
        },
        _ => Line::Other(raw.to_owned()),
    }
}

fn progress(obj: &Map<String, Value>) -> Progress {
    Progress {
        seconds_elapsed: count(obj, "seconds_elapsed"),
        seconds_remaining: obj.get("seconds_remaining").and_then(eta),
        // Above 1.0 happens when files grow during the run; the renderer decides how to show it.
        // Below 0 has no meaning at all.
        percent_done: float_field(obj, "percent_done").max(0.0),
        total_files: opt_count(obj, "total_files"),
        files_done: count(obj, "files_done"),
        total_bytes: opt_count(obj, "total_bytes"),
        bytes_done: count(obj, "bytes_done"),
        error_count: count(obj, "error_count"),
        current_files: match obj.get("current_files") {
            Some(Value::Array(files)) => files
                .iter()
                .filter_map(|f| f.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        },
    }
}

fn summary(obj: &Map<String, Value>) -> Summary {
    Summary {
        files_new: count(obj, "files_new"),
        files_changed: count(obj, "files_changed"),
        files_unmodified: count(obj, "files_unmodified"),
        dirs_new: count(obj, "dirs_new"),
        dirs_changed: count(obj, "dirs_changed"),
        dirs_unmodified: count(obj, "dirs_unmodified"),
        data_blobs: int_field(obj, "data_blobs"),
        tree_blobs: int_field(obj, "tree_blobs"),
        data_added: count(obj, "data_added"),
        total_files_processed: count(obj, "total_files_processed"),
        total_bytes_processed: count(obj, "total_bytes_processed"),
        // Kept as sent, negative included: 0.18.0-0.18.1 report -9223372036.854776 for a skipped
        // snapshot, and the caller can tell that case by the empty snapshot_id.
        total_duration: float_field(obj, "total_duration"),
        snapshot_id: match obj.get("snapshot_id") {
            Some(Value::String(id)) => id.clone(),
            _ => String::new(),
        },
        dry_run: matches!(obj.get("dry_run"), Some(Value::Bool(true))),
    }
}

/// A readable line for `-v` output. Sizes and totals only for scan_finished, where they are the
/// point of the record; per-file records would be noise with them.
fn verbose_text(obj: &Map<String, Value>, raw: &str) -> String {
    let action = text_field(obj, "action");
    let item = text_field(obj, "item");
    if action == "scan_finished" {
        return format!(
            "scan finished in {:.1}s: {} files, {}",
            float_field(obj, "duration"),
            count(obj, "total_files"),
            igotchuu_dbus::format::bytes(count(obj, "data_size")),
        );
    }
    let text = format!("{action} {item}");
    let text = text.trim();
    if text.is_empty() {
        raw.to_owned()
    } else {
        text.to_owned()
    }
}

/// The text of restic's `error` field, whichever of its shapes arrived: 0.17.1+ `{"message"}`,
/// or, up to 0.17.0, whatever Go's encoding/json made of the error value: `{}` for most errors,
/// `{"Op","Path","Err"}` for a `*os.PathError` with a numeric errno, and so on.
fn error_text(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => NO_DETAILS.to_owned(),
        Some(Value::String(s)) if s.trim().is_empty() => NO_DETAILS.to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => errno_text(n),
        Some(Value::Object(o)) => go_error_text(o).unwrap_or_else(|| compact(value)),
        Some(other) => other.to_string(),
    }
}

/// Rebuilds the text Go's `Error()` would have given for the error types whose fields survive
/// JSON marshalling. `None` for shapes not recognised, so the caller can fall back to raw JSON.
fn go_error_text(o: &Map<String, Value>) -> Option<String> {
    if o.is_empty() {
        return Some(NO_DETAILS.to_owned());
    }
    if let Some(Value::String(message)) = o.get("message") {
        return Some(message.clone());
    }
    let s = |key: &str| o.get(key).and_then(Value::as_str);
    let head = match (s("Op"), s("Path"), s("Old"), s("New"), s("Syscall")) {
        // *os.PathError / *fs.PathError: "open /x: permission denied"
        (Some(op), Some(path), ..) => format!("{op} {path}"),
        // *os.LinkError: "rename /a /b: file exists"
        (Some(op), None, Some(old), Some(new), _) => format!("{op} {old} {new}"),
        // *os.SyscallError: "getxattr: operation not supported"
        (None, None, None, None, Some(syscall)) => syscall.to_owned(),
        _ => return None,
    };
    match o.get("Err") {
        None | Some(Value::Null) => Some(head),
        err => Some(format!("{head}: {}", error_text(err))),
    }
}

/// Go marshals `syscall.Errno` as its number; its `Error()` text is the lowercased strerror, which
/// std gives us without libc. Numbers the C library does not know read "errno N", as in Go.
fn errno_text(n: &Number) -> String {
    let Some(code) = n.as_i64().filter(|c| (1..=4095).contains(c)) else {
        return format!("errno {n}");
    };
    let text = std::io::Error::from_raw_os_error(code as i32).to_string();
    let suffix = format!(" (os error {code})");
    let text = text.strip_suffix(&suffix).unwrap_or(&text);
    if text.is_empty() || text.starts_with("Unknown error") {
        return format!("errno {code}");
    }
    // "Permission denied" -> "permission denied", but leave acronyms ("RPC struct is bad") alone.
    let mut chars = text.chars();
    match (chars.next(), chars.next()) {
        (Some(first), Some(second)) if first.is_uppercase() && !second.is_uppercase() => first
            .to_lowercase()
            .chain(text[first.len_utf8()..].chars())
            .collect(),
        _ => text.to_owned(),
    }
}

fn eta(value: &Value) -> Option<u64> {
    let Value::Number(n) = value else { return None };
    // A negative ETA is as meaningless as an absurdly large one.
    if n.as_f64().is_some_and(|f| f < 0.0) {
        return None;
    }
    sane_eta(number_to_u64(n))
}

/// Counters are u64 in every restic version, but a float (`1e3`), a negative number or a value
/// past u64::MAX must not cost the whole line: clamp into range (float casts saturate, NaN is 0).
fn number_to_u64(n: &Number) -> u64 {
    n.as_u64()
        .unwrap_or_else(|| n.as_f64().map_or(0, |f| f as u64))
}

fn count(obj: &Map<String, Value>, key: &str) -> u64 {
    opt_count(obj, key).unwrap_or(0)
}

/// `None` only when the field is absent (or null), because for total_files/total_bytes absence
/// means "the scanner has not counted yet", which a 0 would misrepresent.
fn opt_count(obj: &Map<String, Value>, key: &str) -> Option<u64> {
    match obj.get(key)? {
        Value::Null => None,
        Value::Number(n) => Some(number_to_u64(n)),
        _ => Some(0),
    }
}

fn int_field(obj: &Map<String, Value>, key: &str) -> i64 {
    match obj.get(key) {
        Some(Value::Number(n)) => n.as_i64().unwrap_or_else(|| match n.as_u64() {
            Some(_) => i64::MAX,
            None => n.as_f64().map_or(0, |f| f as i64),
        }),
        _ => 0,
    }
}

fn float_field(obj: &Map<String, Value>, key: &str) -> f64 {
    obj.get(key).and_then(Value::as_f64).unwrap_or(0.0)
}

/// Strings as they are; other non-null values as compact JSON so nothing sent is hidden.
fn text_field(obj: &Map<String, Value>, key: &str) -> String {
    match obj.get(key) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        other => compact(other),
    }
}

fn compact(value: Option<&Value>) -> String {
    value.map(Value::to_string).unwrap_or_default()
}

/// What a terminal would show of the line: ANSI escapes and other control characters removed,
/// and of `\r`-separated redraws only the last non-empty one. restic prints e.g.
/// "\x1b[2Ksignal interrupt received, cleaning up" even to a pipe.
///
/// Removed, not escaped as the sinks escape (escape.rs): a whole sequence here is restic's own
/// decoration (clear-line, colours), which a terminal shows as nothing; rendered visibly, every
/// interrupted run would show `\x1b[2K`, and a coloured "Fatal: " would no longer be recognised
/// as one. Which characters count as control characters is escape.rs's one definition, and the
/// sinks escape whatever a text still holds.
fn clean_text(line: &str) -> String {
    let stripped = strip_escapes(line);
    stripped
        .rsplit('\r')
        .map(str::trim)
        .find(|segment| !segment.is_empty())
        .unwrap_or("")
        .to_owned()
}

fn strip_escapes(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                // CSI: parameters and intermediates, then one final byte in @..~
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC (window titles, hyperlinks): up to BEL or ESC \
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\x07' {
                            break;
                        }
                        if c == '\x1b' {
                            chars.next_if_eq(&'\\');
                            break;
                        }
                    }
                }
                // Other escapes: optional intermediates (ESC ( B) then one final character.
                Some(c) if (' '..='/').contains(&c) => {
                    while chars.next_if(|c| (' '..='/').contains(c)).is_some() {}
                    chars.next();
                }
                _ => {}
            },
            // 8-bit CSI
            '\u{9b}' => {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            '\r' | '\t' | '\n' => out.push(c),
            c if crate::escape::is_control(c) => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn status(line: &str) -> Progress {
        match parse_line(line) {
            Line::Status(p) => p,
            other => panic!("expected status for {line:?}, got {other:?}"),
        }
    }

    fn summary_of(line: &str) -> Summary {
        match parse_line(line) {
            Line::Summary(s) => s,
            other => panic!("expected summary for {line:?}, got {other:?}"),
        }
    }

    fn error_of(line: &str) -> ErrorEvent {
        match parse_line(line) {
            Line::Error(e) => e,
            other => panic!("expected error for {line:?}, got {other:?}"),
        }
    }

    fn err(error: &str, during: &str, item: &str) -> ErrorEvent {
        ErrorEvent {
            error: error.into(),
            during: During::Restic(during.into()),
            item: item.into(),
        }
    }

    fn text(s: &str) -> Line {
        Line::Text(s.into())
    }

    fn lines(fixture: &str) -> Vec<Line> {
        fixture.lines().map(parse_line).collect()
    }

    // ---- real restic 0.14.0 output, captured into tests/fixtures/restic ----

    #[test]
    fn fixture_0_14_stdin_eta_nan_cast() {
        let got = lines(include_str!(
            "../../tests/fixtures/restic/0.14-eta-nan-stdout.jsonl"
        ));
        assert_eq!(got.len(), 4);
        assert_eq!(
            got[0],
            Line::Status(Progress {
                total_files: Some(1),
                ..Progress::default()
            })
        );
        let Line::Status(p) = &got[1] else {
            panic!("{:?}", got[1])
        };
        assert_eq!(p.seconds_elapsed, 1);
        assert_eq!(
            p.seconds_remaining, None,
            "9223372036854775808 is the NaN cast"
        );
        assert_eq!(p.total_bytes, None);
        assert_eq!(p.current_files, vec!["/x.txt".to_string()]);
        let Line::Status(p) = &got[2] else {
            panic!("{:?}", got[2])
        };
        assert_eq!((p.bytes_done, p.seconds_remaining), (6, None));
        let Line::Summary(s) = &got[3] else {
            panic!("{:?}", got[3])
        };
        assert_eq!(s.snapshot_id, "71173dba");
        assert_eq!(s.total_bytes_processed, 6);
        assert!(!s.dry_run);
    }

    #[test]
    fn fixture_0_14_verbose_has_scan_finished_as_status() {
        let got = lines(include_str!(
            "../../tests/fixtures/restic/0.14-verbose-stdout.jsonl"
        ));
        assert_eq!(got.len(), 9);
        assert_eq!(
            got[0],
            Line::Status(Progress {
                total_files: Some(1),
                total_bytes: Some(5),
                ..Progress::default()
            })
        );
        assert_eq!(
            got[1],
            Line::Verbose("scan finished in 0.2s: 3 files, 5 B".into())
        );
        assert_eq!(got[2], Line::Verbose("new /tmp/pw/e/2".into()));
        assert_eq!(got[7], Line::Verbose("new /tmp/".into()));
        let Line::Summary(s) = &got[8] else {
            panic!("{:?}", got[8])
        };
        assert_eq!(
            (s.files_new, s.dirs_new, s.data_blobs, s.tree_blobs),
            (3, 3, 1, 4)
        );
        assert_eq!(s.snapshot_id, "f49474a6");
        assert!((s.total_duration - 0.209791158).abs() < 1e-12);
    }

    #[test]
    fn fixture_0_14_incremental_and_dry_run() {
        let got = lines(include_str!(
            "../../tests/fixtures/restic/0.14-incremental-stdout.jsonl"
        ));
        let Line::Summary(s) = &got[1] else {
            panic!("{:?}", got[1])
        };
        assert_eq!(
            (s.files_changed, s.files_unmodified, s.dirs_changed),
            (1, 2, 3)
        );
        let got = lines(include_str!(
            "../../tests/fixtures/restic/0.14-dry-run-stdout.jsonl"
        ));
        assert_eq!(
            got[0],
            Line::Status(Progress {
                files_done: 1,
                ..Progress::default()
            })
        );
        let Line::Summary(s) = &got[1] else {
            panic!("{:?}", got[1])
        };
        assert!(s.dry_run);
        assert_eq!(s.snapshot_id, "79041358");
    }

    #[test]
    fn fixture_0_14_password_prompt_text_on_stdout() {
        let got = lines(include_str!(
            "../../tests/fixtures/restic/0.14-password-stdin-stdout.jsonl"
        ));
        assert_eq!(got[0], text("reading repository password from stdin"));
        assert!(matches!(got[1], Line::Status(_)));
        assert!(matches!(got[2], Line::Summary(_)));
    }

    #[test]
    fn fixture_0_14_unreadable_files() {
        let got = lines(include_str!(
            "../../tests/fixtures/restic/0.14-unreadable-stderr.jsonl"
        ));
        assert_eq!(
            got,
            vec![
                text("/tmp/pw/nonexist does not exist, skipping"),
                Line::Error(err(NO_DETAILS, "scan", "/tmp/pw/src2/locked")),
                Line::Error(err(NO_DETAILS, "archival", "/tmp/pw/src2/locked")),
                Line::Error(err(
                    "open /tmp/pw/src2/secret: permission denied",
                    "archival",
                    "/tmp/pw/src2/secret"
                )),
                text("Warning: at least one source file could not be read"),
            ]
        );
        let got = lines(include_str!(
            "../../tests/fixtures/restic/0.14-unreadable-stdout.jsonl"
        ));
        assert_eq!(
            got[2],
            Line::Verbose("scan finished in 0.2s: 3 files, 6 B".into())
        );
        let Line::Summary(s) = got.last().unwrap() else {
            panic!()
        };
        assert_eq!((s.files_new, s.snapshot_id.as_str()), (2, "5ab7ac86"));
    }

    #[test]
    fn fixture_0_14_fatal_and_interrupt_text() {
        let got = lines(include_str!(
            "../../tests/fixtures/restic/0.14-wrong-password-stderr.jsonl"
        ));
        assert_eq!(got, vec![text("Fatal: wrong password or no key found")]);
        let got = lines(include_str!(
            "../../tests/fixtures/restic/0.14-no-repo-stderr.jsonl"
        ));
        assert_eq!(
            got[0],
            text("Fatal: unable to open config file: stat /tmp/pw/nope/config: no such file or directory")
        );
        assert!(got.iter().all(|l| matches!(l, Line::Text(_))));
        let got = lines(include_str!(
            "../../tests/fixtures/restic/0.14-interrupt-stderr.jsonl"
        ));
        assert_eq!(got, vec![text("signal interrupt received, cleaning up")]);
        let got = lines(include_str!(
            "../../tests/fixtures/restic/0.14-interrupt-stdout.jsonl"
        ));
        assert!(got.iter().all(|l| matches!(l, Line::Status(_))));
    }

    // ---- status, per version ----

    #[test]
    fn status_0_15_without_eta_until_bytes_flow() {
        let p = status(
            r#"{"message_type":"status","seconds_elapsed":3,"percent_done":0,"total_files":812,"files_done":12,"total_bytes":73400320,"current_files":["/home/a/.bashrc"]}"#,
        );
        assert_eq!(p.seconds_remaining, None);
        assert_eq!(
            (p.total_files, p.total_bytes),
            (Some(812), Some(73_400_320))
        );
        assert_eq!(p.bytes_done, 0);
    }

    #[test]
    fn status_0_16_and_later_full_and_no_scan() {
        let full = r#"{"message_type":"status","seconds_elapsed":65,"seconds_remaining":120,"percent_done":0.3511,"total_files":104676,"files_done":37000,"total_bytes":4705416697,"bytes_done":1652171654,"error_count":2,"current_files":["/usr/lib/a","/usr/lib/b"]}"#;
        let p = status(full);
        assert_eq!(
            p,
            Progress {
                seconds_elapsed: 65,
                seconds_remaining: Some(120),
                percent_done: 0.3511,
                total_files: Some(104_676),
                files_done: 37_000,
                total_bytes: Some(4_705_416_697),
                bytes_done: 1_652_171_654,
                error_count: 2,
                current_files: vec!["/usr/lib/a".into(), "/usr/lib/b".into()],
            }
        );
        // --no-scan (0.16+): totals never arrive.
        let p = status(
            r#"{"message_type":"status","seconds_elapsed":9,"percent_done":0,"files_done":400,"bytes_done":1048576}"#,
        );
        assert_eq!((p.total_files, p.total_bytes), (None, None));
        assert_eq!((p.files_done, p.bytes_done), (400, 1_048_576));
        // The bare first line every version prints.
        assert_eq!(
            status(r#"{"message_type":"status","percent_done":0}"#),
            Progress::default()
        );
    }

    #[test]
    fn status_0_17_to_0_19_same_shape() {
        for line in [
            r#"{"message_type":"status","seconds_elapsed":1,"percent_done":0.5,"total_files":2,"files_done":1,"total_bytes":200,"bytes_done":100}"#,
            r#"{"message_type":"status","seconds_elapsed":1,"seconds_remaining":1,"percent_done":0.5,"total_files":2,"files_done":1,"total_bytes":200,"bytes_done":100}"#,
        ] {
            let p = status(line);
            assert_eq!(
                (p.percent_done, p.files_done, p.total_files),
                (0.5, 1, Some(2))
            );
        }
    }

    #[test]
    fn status_odd_numbers_are_clamped_not_fatal() {
        let p = status(
            r#"{"message_type":"status","seconds_elapsed":1e3,"percent_done":1.25,"total_files":-4,"files_done":3.9,"total_bytes":1e30,"bytes_done":-1e3,"error_count":"x","current_files":["/a",7,null]}"#,
        );
        assert_eq!(p.seconds_elapsed, 1000);
        assert_eq!(p.percent_done, 1.25, "over 100% is kept");
        assert_eq!(p.total_files, Some(0));
        assert_eq!(p.files_done, 3);
        assert_eq!(p.total_bytes, Some(u64::MAX));
        assert_eq!(p.bytes_done, 0);
        assert_eq!(p.error_count, 0);
        assert_eq!(p.current_files, vec!["/a".to_string()]);
        let p = status(
            r#"{"message_type":"status","percent_done":-0.5,"total_files":null,"total_bytes":99999999999999999999999}"#,
        );
        assert_eq!(p.percent_done, 0.0);
        assert_eq!((p.total_files, p.total_bytes), (None, Some(u64::MAX)));
    }

    #[test]
    fn etas() {
        assert_eq!(sane_eta(0), Some(0));
        assert_eq!(sane_eta(3600), Some(3600));
        assert_eq!(sane_eta(315_360_000), Some(315_360_000));
        assert_eq!(sane_eta(315_360_001), None);
        assert_eq!(sane_eta(9_223_372_036_854_775_808), None);
        assert_eq!(sane_eta(u64::MAX), None);
        let eta_of = |v: &str| {
            status(&format!(
                r#"{{"message_type":"status","percent_done":0.1,"seconds_remaining":{v}}}"#
            ))
            .seconds_remaining
        };
        assert_eq!(eta_of("9223372036854775808"), None);
        assert_eq!(eta_of("18446744073709551615"), None, "0.16+ underflow");
        assert_eq!(eta_of("1.8446744073709552e19"), None);
        assert_eq!(eta_of("1e300"), None);
        assert_eq!(eta_of("3.5e2"), Some(350));
        assert_eq!(eta_of("-5"), None);
        assert_eq!(eta_of("\"soon\""), None);
        assert_eq!(eta_of("42"), Some(42));
    }

    // ---- verbose ----

    #[test]
    fn scan_finished_and_verbose_status() {
        // 0.15: still mislabelled "status", without percent_done.
        let line = r#"{"message_type":"status","action":"scan_finished","item":"","duration":12.53,"data_size":3221225472,"data_size_in_repo":0,"metadata_size":0,"metadata_size_in_repo":0,"total_files":51234}"#;
        assert_eq!(
            parse_line(line),
            Line::Verbose("scan finished in 12.5s: 51234 files, 3.0 GiB".into())
        );
        // 0.16+: labelled verbose_status.
        let line = r#"{"message_type":"verbose_status","action":"scan_finished","item":"","duration":0.5,"data_size":0,"data_size_in_repo":0,"metadata_size":0,"metadata_size_in_repo":0,"total_files":0}"#;
        assert_eq!(
            parse_line(line),
            Line::Verbose("scan finished in 0.5s: 0 files, 0 B".into())
        );
        let line = r#"{"message_type":"verbose_status","action":"modified","item":"/home/a/notes.txt","duration":0.0012,"data_size":4096,"data_size_in_repo":1830,"metadata_size":0,"metadata_size_in_repo":0,"total_files":0}"#;
        assert_eq!(
            parse_line(line),
            Line::Verbose("modified /home/a/notes.txt".into())
        );
        let bare = r#"{"message_type":"status"}"#;
        assert_eq!(parse_line(bare), Line::Verbose(bare.into()));
    }

    // ---- errors ----

    #[test]
    fn error_shapes_of_every_version() {
        // up to 0.17.0: marshalled Go errors
        let e = error_of(r#"{"message_type":"error","error":{},"during":"scan","item":"/x"}"#);
        assert_eq!(e, err(NO_DETAILS, "scan", "/x"));
        let e = error_of(
            r#"{"message_type":"error","error":{"Op":"open","Path":"/x","Err":13},"during":"archival","item":"/x"}"#,
        );
        assert_eq!(e, err("open /x: permission denied", "archival", "/x"));
        let e = error_of(
            r#"{"message_type":"error","error":{"Op":"lstat","Path":"/gone","Err":2},"during":"archival","item":"/gone"}"#,
        );
        assert_eq!(e.error, "lstat /gone: no such file or directory");
        let e = error_of(
            r#"{"message_type":"error","error":{"Op":"read","Path":"/dev/sdz","Err":5},"during":"archival","item":"/dev/sdz"}"#,
        );
        assert_eq!(e.error, "read /dev/sdz: input/output error");
        let e = error_of(
            r#"{"message_type":"error","error":{"Op":"open","Path":"/p","Err":{}},"during":"archival","item":"/p"}"#,
        );
        assert_eq!(e.error, format!("open /p: {NO_DETAILS}"));
        let e = error_of(
            r#"{"message_type":"error","error":{"Op":"rename","Old":"/a","New":"/b","Err":17},"during":"archival","item":"/a"}"#,
        );
        assert_eq!(e.error, "rename /a /b: file exists");
        let e = error_of(
            r#"{"message_type":"error","error":{"Syscall":"llistxattr","Err":95},"during":"archival","item":"/f"}"#,
        );
        assert_eq!(e.error, "llistxattr: operation not supported");
        // 0.17.1+
        let e = error_of(
            r#"{"message_type":"error","error":{"message":"open /home/a/secret: permission denied"},"during":"archival","item":"/home/a/secret"}"#,
        );
        assert_eq!(
            e,
            err(
                "open /home/a/secret: permission denied",
                "archival",
                "/home/a/secret"
            )
        );
        // anything else
        assert_eq!(
            error_of(r#"{"message_type":"error","error":"disk on fire"}"#),
            err("disk on fire", "", "")
        );
        assert_eq!(error_of(r#"{"message_type":"error"}"#).error, NO_DETAILS);
        assert_eq!(
            error_of(r#"{"message_type":"error","error":null}"#).error,
            NO_DETAILS
        );
        assert_eq!(
            error_of(r#"{"message_type":"error","error":[1,"a"]}"#).error,
            r#"[1,"a"]"#
        );
        assert_eq!(
            error_of(r#"{"message_type":"error","error":true}"#).error,
            "true"
        );
        assert_eq!(
            error_of(r#"{"message_type":"error","error":{"Code":7}}"#).error,
            r#"{"Code":7}"#
        );
        assert_eq!(
            error_of(r#"{"message_type":"error","error":{"Op":"open","Path":"/x","Err":0}}"#).error,
            "open /x: errno 0"
        );
        assert_eq!(
            error_of(r#"{"message_type":"error","error":{"Op":"open","Path":"/x","Err":99999}}"#)
                .error,
            "open /x: errno 99999"
        );
        assert_eq!(
            error_of(r#"{"message_type":"error","error":{},"during":7,"item":null}"#),
            err(NO_DETAILS, "7", "")
        );
    }

    #[test]
    fn errno_texts_match_go() {
        let t = |n: i64| errno_text(&Number::from(n));
        assert_eq!(t(1), "operation not permitted");
        assert_eq!(t(20), "not a directory");
        assert_eq!(t(21), "is a directory");
        assert_eq!(t(28), "no space left on device");
        assert_eq!(t(30), "read-only file system");
        assert_eq!(t(36), "file name too long");
        assert_eq!(t(-3), "errno -3");
    }

    // ---- summary ----

    #[test]
    fn summary_per_version() {
        // 0.15/0.16: full id
        let s = summary_of(
            r#"{"message_type":"summary","files_new":10,"files_changed":2,"files_unmodified":300,"dirs_new":1,"dirs_changed":4,"dirs_unmodified":50,"data_blobs":14,"tree_blobs":6,"data_added":123456,"total_files_processed":312,"total_bytes_processed":9876543,"total_duration":4.25,"snapshot_id":"2ab5e0b3f04c1df02d8e0b3a6f3a0c4ad8f0bd3e1b9d4e0e3c8f9a1b2c3d4e5f"}"#,
        );
        assert_eq!(s.snapshot_id.len(), 64);
        assert_eq!(
            (
                s.files_new,
                s.files_changed,
                s.files_unmodified,
                s.dirs_unmodified
            ),
            (10, 2, 300, 50)
        );
        assert_eq!((s.data_added, s.total_files_processed), (123_456, 312));
        // 0.17: data_added_packed, unknown to the type, ignored
        let s = summary_of(
            r#"{"message_type":"summary","files_new":0,"files_changed":0,"files_unmodified":3,"dirs_new":0,"dirs_changed":0,"dirs_unmodified":2,"data_blobs":0,"tree_blobs":0,"data_added":0,"data_added_packed":0,"total_files_processed":3,"total_bytes_processed":11,"total_duration":0.31,"snapshot_id":"79041358aa0e4d5b9c7a3a58f8e92c1d0d5c8a9b7e6f5a4b3c2d1e0f9a8b7c6d"}"#,
        );
        assert_eq!((s.files_unmodified, s.total_bytes_processed), (3, 11));
        // 0.17: skipped with --skip-if-unchanged: no snapshot_id
        let s = summary_of(
            r#"{"message_type":"summary","files_new":0,"files_changed":0,"files_unmodified":3,"dirs_new":0,"dirs_changed":0,"dirs_unmodified":2,"data_blobs":0,"tree_blobs":0,"data_added":0,"data_added_packed":0,"total_files_processed":3,"total_bytes_processed":11,"total_duration":0.2}"#,
        );
        assert_eq!(s.snapshot_id, "");
        // 0.18+: backup_start / backup_end
        let s = summary_of(
            r#"{"message_type":"summary","files_new":1,"files_changed":0,"files_unmodified":0,"dirs_new":2,"dirs_changed":0,"dirs_unmodified":0,"data_blobs":1,"tree_blobs":3,"data_added":1200,"data_added_packed":800,"total_files_processed":1,"total_bytes_processed":6,"total_duration":0.5421,"backup_start":"2025-03-27T10:00:00.123456789+01:00","backup_end":"2025-03-27T10:00:00.665656789+01:00","snapshot_id":"0f9e8d7c6b5a49382716a5b4c3d2e1f00f9e8d7c6b5a49382716a5b4c3d2e1f0","dry_run":true}"#,
        );
        assert!(s.dry_run);
        assert_eq!(s.total_duration, 0.5421);
        // 0.18.0-0.18.1 skipped snapshot
        let s = summary_of(
            r#"{"message_type":"summary","files_new":0,"files_changed":0,"files_unmodified":3,"dirs_new":0,"dirs_changed":0,"dirs_unmodified":3,"data_blobs":0,"tree_blobs":0,"data_added":0,"data_added_packed":0,"total_files_processed":3,"total_bytes_processed":11,"total_duration":-9223372036.854776,"backup_start":"2025-03-27T10:00:00.123456789+01:00","backup_end":"0001-01-01T00:00:00Z"}"#,
        );
        assert_eq!(s.total_duration, -9_223_372_036.854_776);
        assert_eq!((s.snapshot_id.as_str(), s.dry_run), ("", false));
        // Odd numbers
        let s = summary_of(
            r#"{"message_type":"summary","data_blobs":-3,"tree_blobs":1e40,"files_new":2e2,"data_added":18446744073709551615,"snapshot_id":5,"dry_run":"yes"}"#,
        );
        assert_eq!(
            (s.data_blobs, s.tree_blobs, s.files_new),
            (-3, i64::MAX, 200)
        );
        assert_eq!(s.data_added, u64::MAX);
        assert_eq!((s.snapshot_id.as_str(), s.dry_run), ("", false));
        assert_eq!(
            summary_of(r#"{"message_type":"summary"}"#),
            Summary::default()
        );
    }

    // ---- exit_error ----

    #[test]
    fn exit_error_0_18() {
        let cases = [
            (r#"{"message_type":"exit_error","code":3,"message":"Warning: at least one source file could not be read"}"#, 3, "Warning: at least one source file could not be read"),
            (r#"{"message_type":"exit_error","code":12,"message":"Fatal: wrong password or no key found"}"#, 12, "Fatal: wrong password or no key found"),
            (r#"{"message_type":"exit_error","code":10,"message":"Fatal: repository does not exist: unable to open config file: stat /srv/r/config: no such file or directory\nIs there a repository at the following location?\n/srv/r"}"#, 10, "Fatal: repository does not exist: unable to open config file: stat /srv/r/config: no such file or directory\nIs there a repository at the following location?\n/srv/r"),
            (r#"{"message_type":"exit_error","code":130,"message":"context canceled"}"#, 130, "context canceled"),
            (r#"{"message_type":"exit_error"}"#, 0, ""),
            (r#"{"message_type":"exit_error","code":1.1e1,"message":"x"}"#, 11, "x"),
        ];
        for (line, code, message) in cases {
            assert_eq!(
                parse_line(line),
                Line::ExitError {
                    code,
                    message: message.into()
                }
            );
        }
    }

    // ---- unknown JSON and text ----

    #[test]
    fn unknown_json_is_kept_raw() {
        for line in [
            r#"{"message_type":"backup_progress_v2","x":1}"#,
            r#"{"hello":"world"}"#,
            r#"{"message_type":5}"#,
            "{}",
        ] {
            assert_eq!(parse_line(line), Line::Other(line.into()));
        }
        assert_eq!(
            parse_line("  {\"a\":1}\r\n"),
            Line::Other("{\"a\":1}".into())
        );
    }

    #[test]
    fn text_lines() {
        assert_eq!(
            parse_line("reading repository password from stdin\n"),
            text("reading repository password from stdin")
        );
        assert_eq!(
            parse_line("Fatal: wrong password or no key found"),
            text("Fatal: wrong password or no key found")
        );
        assert_eq!(
            parse_line("\r\x1b[2Ksignal interrupt received, cleaning up"),
            text("signal interrupt received, cleaning up")
        );
        assert_eq!(
            parse_line(
                "[0:03] 12.5%  100 files\r[0:04] 13%\rsignal interrupt received, cleaning up\r\n"
            ),
            text("signal interrupt received, cleaning up")
        );
        assert_eq!(
            parse_line("\x1b[1;31mFatal:\x1b[0m \x1b]0;title\x07boom\x1b(B"),
            text("Fatal: boom")
        );
        assert_eq!(
            parse_line("panic: runtime error: invalid memory address or nil pointer dereference"),
            text("panic: runtime error: invalid memory address or nil pointer dereference")
        );
        assert_eq!(
            parse_line("[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x8a3f2c]"),
            text("[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x8a3f2c]")
        );
        assert_eq!(
            parse_line("\tgoroutine 1 [running]:"),
            text("goroutine 1 [running]:")
        );
        assert_eq!(parse_line("{not json"), text("{not json"));
        assert_eq!(
            parse_line("{\"message_type\":\"status\",\"percent_done\":0.1"),
            text("{\"message_type\":\"status\",\"percent_done\":0.1")
        );
        assert_eq!(parse_line("[1,2]"), text("[1,2]"));
        assert_eq!(parse_line(""), text(""));
        assert_eq!(parse_line("\r\r\x1b[K"), text(""));
        assert_eq!(parse_line("\x1b"), text(""));
        assert_eq!(parse_line("a\x1b["), text("a"));
        assert_eq!(parse_line("a\x1b]unterminated"), text("a"));
        assert_eq!(
            parse_line("caf\u{e9} \u{1f600}\u{7}"),
            text("caf\u{e9} \u{1f600}")
        );
    }

    #[test]
    fn json_behind_terminal_junk_still_parses() {
        let line = "\x1b[2K\r{\"message_type\":\"status\",\"percent_done\":0.5}\r";
        assert_eq!(
            parse_line(line),
            Line::Status(Progress {
                percent_done: 0.5,
                ..Progress::default()
            })
        );
    }

    #[test]
    fn json_strings_keep_raw_controls() {
        // DEL and C1 characters may appear unescaped in JSON; they belong to the file name.
        let line = "{\"message_type\":\"error\",\"error\":{\"message\":\"bad\"},\"item\":\"/a\u{7f}\u{9b}1m\"}";
        assert_eq!(error_of(line).item, "/a\u{7f}\u{9b}1m");
    }

    // ---- never panics ----

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            prop_oneof![
                Just(9.223372036854776e18),
                Just(1e30),
                Just(-1e30),
                Just(-9223372036.854776)
            ]
            .prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("Op".to_string()),
                        Just("Path".to_string()),
                        Just("Err".to_string()),
                        Just("message".to_string()),
                        Just("Syscall".to_string()),
                        "[a-z]{1,4}",
                    ],
                    inner,
                    0..4
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    const FIELDS: &[&str] = &[
        "seconds_elapsed",
        "seconds_remaining",
        "percent_done",
        "total_files",
        "files_done",
        "total_bytes",
        "bytes_done",
        "error_count",
        "current_files",
        "files_new",
        "data_blobs",
        "tree_blobs",
        "data_added",
        "total_duration",
        "snapshot_id",
        "dry_run",
        "error",
        "during",
        "item",
        "code",
        "message",
        "action",
        "duration",
        "data_size",
    ];

    proptest! {
        #[test]
        fn never_panics_on_any_string(s in any::<String>()) {
            let _ = parse_line(&s);
        }

        #[test]
        fn never_panics_on_escape_soup(s in "[\\x1b\\[\\]\\r\\n\\x07\\\\{}a-z0-9;\u{9b}\"]{0,40}") {
            let _ = parse_line(&s);
        }

        #[test]
        fn any_json_object_is_classified(
            kind in prop_oneof![
                Just("status"), Just("summary"), Just("error"), Just("exit_error"),
                Just("verbose_status"), Just("mystery"),
            ],
            fields in prop::collection::vec((prop::sample::select(FIELDS), json_value()), 0..10),
        ) {
            let mut obj = Map::new();
            obj.insert("message_type".into(), Value::from(kind));
            for (k, v) in fields {
                obj.insert(k.to_string(), v);
            }
            let has_percent = obj.contains_key("percent_done");
            let line = Value::Object(obj).to_string();
            let parsed = parse_line(&line);
            match kind {
                "status" if has_percent => prop_assert!(matches!(parsed, Line::Status(_)), "{:?}", parsed),
                "status" | "verbose_status" => prop_assert!(matches!(parsed, Line::Verbose(_)), "{:?}", parsed),
                "summary" => prop_assert!(matches!(parsed, Line::Summary(_)), "{:?}", parsed),
                "error" => prop_assert!(matches!(parsed, Line::Error(_)), "{:?}", parsed),
                "exit_error" => prop_assert!(matches!(parsed, Line::ExitError { .. }), "{:?}", parsed),
                _ => prop_assert_eq!(parsed, Line::Other(line.clone())),
            }
            if let Line::Status(p) = parse_line(&line) {
                prop_assert!(p.percent_done >= 0.0);
                prop_assert!(p.seconds_remaining.map_or(true, |s| s <= MAX_SANE_ETA));
            }
        }
    }
}
