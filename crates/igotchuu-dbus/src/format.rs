//! Human-readable figures: sizes, durations, the progress line and the summary. Shared by the
//! terminal, the journal and restic's own messages; a client of the D-Bus interface will want the
//! same words.

use crate::types::{ErrorEvent, Progress, Summary};

/// "error during <step> of <item>: <text>", as the terminal and the journal say it.
pub fn error_line(e: &ErrorEvent) -> String {
    let mut line = format!("error during {}", e.during.as_str());
    if !e.item.is_empty() {
        line.push_str(&format!(" of {}", e.item));
    }
    line.push_str(&format!(": {}", e.error));
    line
}

/// How often, in percent, the non-terminal output reports progress.
const TERSE_STEP_PERCENT: u64 = 5;

/// Decides when a non-interactive log gets a progress line: at most every few percent, so the
/// journal holds a handful of lines per backup, not thousands.
#[derive(Debug)]
pub struct TerseProgress {
    next: u64,
}

impl Default for TerseProgress {
    fn default() -> Self {
        TerseProgress {
            next: TERSE_STEP_PERCENT,
        }
    }
}

impl TerseProgress {
    pub fn due(&mut self, p: &Progress) -> bool {
        if p.total_bytes.is_none() {
            return false;
        }
        let pct = (p.percent_done.clamp(0.0, 1.0) * 100.0) as u64;
        if pct < self.next {
            return false;
        }
        self.next = (pct / TERSE_STEP_PERCENT + 1) * TERSE_STEP_PERCENT;
        true
    }
}

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub fn duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "unknown".into();
    }
    let s = secs.round() as u64;
    match s {
        0..=59 if secs < 10.0 => format!("{secs:.1}s"),
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// One line describing a progress update, shared by the bar and the terse output.
pub fn progress_line(p: &Progress) -> String {
    let pct = if p.total_files.is_none() && p.total_bytes.is_none() {
        "[scan…]".to_owned()
    } else {
        format!("[{:5.1}%]", p.percent_done * 100.0)
    };
    let files = match p.total_files {
        Some(t) => format!("{}/{} files", p.files_done, t),
        None => format!("{} files", p.files_done),
    };
    let data = match p.total_bytes {
        Some(t) => format!("{}/{}", bytes(p.bytes_done), bytes(t)),
        None => bytes(p.bytes_done),
    };
    let eta = match p.seconds_remaining {
        Some(s) => format!("ETA {}", duration(s as f64)),
        None => "ETA unknown".into(),
    };
    let errs = if p.error_count > 0 {
        format!(", {} errors", p.error_count)
    } else {
        String::new()
    };
    format!("{pct} {files}, {data}, {eta}{errs}")
}

pub fn summary_text(s: &Summary) -> String {
    let mut t = String::new();
    let id = if s.snapshot_id.is_empty() {
        "none: restic skipped it, nothing changed".to_owned()
    } else {
        s.snapshot_id.clone()
    };
    t.push_str(&format!(
        "Backup complete{}.\n",
        if s.dry_run { " (restic dry run)" } else { "" }
    ));
    t.push_str(&format!(
        "  files:      {} new, {} changed, {} unmodified\n",
        s.files_new, s.files_changed, s.files_unmodified
    ));
    t.push_str(&format!(
        "  dirs:       {} new, {} changed, {} unmodified\n",
        s.dirs_new, s.dirs_changed, s.dirs_unmodified
    ));
    t.push_str(&format!(
        "  data added: {} ({} data blobs, {} tree blobs)\n",
        bytes(s.data_added),
        s.data_blobs,
        s.tree_blobs
    ));
    t.push_str(&format!(
        "  processed:  {} files, {}\n",
        s.total_files_processed,
        bytes(s.total_bytes_processed)
    ));
    t.push_str(&format!("  duration:   {}\n", duration(s.total_duration)));
    t.push_str(&format!("  snapshot:   {id}\n"));
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_line_shows_scan_until_totals_are_known() {
        let p = Progress {
            files_done: 3,
            bytes_done: 2048,
            ..Default::default()
        };
        assert_eq!(progress_line(&p), "[scan…] 3 files, 2.0 KiB, ETA unknown");
        let p = Progress {
            percent_done: 0.5,
            total_files: Some(10),
            files_done: 5,
            total_bytes: Some(4096),
            bytes_done: 2048,
            seconds_remaining: Some(75),
            error_count: 1,
            ..Default::default()
        };
        assert_eq!(
            progress_line(&p),
            "[ 50.0%] 5/10 files, 2.0 KiB/4.0 KiB, ETA 1m15s, 1 errors"
        );
    }

    #[test]
    fn durations_and_sizes_read_naturally() {
        assert_eq!(duration(3.25), "3.2s");
        assert_eq!(duration(-9223372036.854776), "unknown");
        assert_eq!(duration(7322.0), "2h02m");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(10), "10 B");
    }
}
