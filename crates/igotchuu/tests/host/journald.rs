//! Under systemd, igotchuu logs structured entries to the journal. A real systemd-journald is
//! started in a private mount namespace (its own tmpfs /run/systemd and /run/log), igotchuu's
//! stderr is connected to it with systemd-cat exactly as systemd connects a service's, and the
//! test reads the entries back with journalctl.

use crate::common;

use std::path::Path;
use std::process::Command;

use common::*;

const JOURNALD: &str = "/lib/systemd/systemd-journald";

/// Runs `igotchuu -c cfg backup` as systemd runs a service: a real systemd-journald in a
/// private mount namespace, igotchuu's stderr connected to it with systemd-cat and JOURNAL_STREAM
/// set. Returns how the run ended and igotchuu's entries as `journalctl -o json` exports them,
/// or `None` after [`cannot_run`] when a tool is missing.
fn backup_under_journald(fx: &Fixture, cfg: &Path) -> Option<(std::process::Output, String)> {
    for tool in [
        JOURNALD,
        "/usr/bin/journalctl",
        "/usr/bin/systemd-cat",
        "/usr/bin/unshare",
    ] {
        if !Path::new(tool).exists() {
            cannot_run(&format!(
                "{tool} is missing (Debian package systemd / util-linux)"
            ));
            return None;
        }
    }
    let out_json = fx.path("journal.json");
    let script = fx.path("journal.sh");
    std::fs::write(
        &script,
        format!(
            r#"set -e
mkdir -p /run/systemd /run/log
mount -t tmpfs tmpfs /run/systemd
mount -t tmpfs tmpfs /run/log
mkdir -p /run/systemd/journal
{journald} &
jpid=$!
i=0
while [ ! -S /run/systemd/journal/socket ] || [ ! -S /run/systemd/journal/stdout ]; do
  i=$((i+1)); [ $i -lt 600 ] || {{ echo "journald did not start" >&2; exit 90; }}
  sleep 0.1
done
rc=0
# systemd sets JOURNAL_STREAM to the device:inode of the stream it connects; do the same.
systemd-cat -t igotchuu-stderr sh -c 'JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) exec "$0" -c "$1" backup' {bin} {cfg} || rc=$?
journalctl --sync 2>/dev/null || true
journalctl -o json --no-pager SYSLOG_IDENTIFIER=igotchuu > {out}
kill $jpid
exit $rc
"#,
            journald = JOURNALD,
            bin = sh_quote(BIN),
            cfg = sh_quote(cfg),
            out = sh_quote(&out_json),
        ),
    )
    .expect("write script");
    let base = fx.igotchuu().command();
    let mut c = Command::new("unshare");
    c.args(["-m", "--propagation", "private", "sh"])
        .arg(&script);
    for (k, v) in base.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    let out = c.output().expect("run unshare");
    let text = std::fs::read_to_string(&out_json).unwrap_or_default();
    Some((out, text))
}

/// The entries of a `journalctl -o json` export.
fn entries(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn field(e: &serde_json::Value, k: &str) -> Option<String> {
    e.get(k).and_then(|v| v.as_str()).map(str::to_owned)
}

#[test]
fn under_systemd_the_journal_gets_structured_entries() {
    let Some(fx) = Fixture::new() else { return };
    let data = fx.create_subvolume("data");
    fx.write_file("data/a.txt", "a\n");
    let cfg = fx.write_config(&format!("places = [{}]\n", toml_str(&data)));
    let Some((out, text)) = backup_under_journald(&fx, &cfg) else {
        return;
    };
    assert!(
        out.status.success(),
        "igotchuu under the journal failed: {:?}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let entries = entries(&text);
    assert!(
        !entries.is_empty(),
        "no igotchuu entries in the journal:\n{text}"
    );
    let run_ids: std::collections::BTreeSet<_> = entries
        .iter()
        .filter_map(|e| field(e, "IGOTCHUU_RUN_ID"))
        .collect();
    assert_eq!(
        run_ids.len(),
        1,
        "every entry carries one run id: {run_ids:?}"
    );

    let created: Vec<_> = entries
        .iter()
        .filter(|e| {
            field(e, "MESSAGE").is_some_and(|m| m.starts_with("created read-only snapshot"))
        })
        .collect();
    assert_eq!(created.len(), 1, "one snapshot-created entry:\n{text}");
    let snap = field(created[0], "IGOTCHUU_SNAPSHOT").expect("IGOTCHUU_SNAPSHOT field");
    assert!(
        snap.starts_with(&format!("{}-", data.display())),
        "snapshot path field {snap}"
    );
    assert_eq!(
        field(created[0], "IGOTCHUU_STEP").as_deref(),
        Some("snapshotting")
    );
    assert!(
        entries.iter().any(|e| field(e, "MESSAGE")
            .is_some_and(|m| m == format!("deleted snapshot {snap}"))
            && field(e, "IGOTCHUU_SNAPSHOT").as_deref() == Some(snap.as_str())),
        "the deletion is journaled with its path:\n{text}"
    );
    let finished: Vec<_> = entries
        .iter()
        .filter(|e| field(e, "IGOTCHUU_OUTCOME").is_some())
        .collect();
    assert_eq!(finished.len(), 1, "{text}");
    assert_eq!(
        field(finished[0], "IGOTCHUU_OUTCOME").as_deref(),
        Some("success")
    );
    assert!(
        entries.iter().any(
            |e| field(e, "MESSAGE").is_some_and(|m| m.contains("Backup complete"))
                && field(e, "IGOTCHUU_SNAPSHOT_ID").is_some_and(|id| !id.is_empty())
        ),
        "the summary is journaled with restic's snapshot id:\n{text}"
    );
    fx.assert_no_snapshot_left("after a journaled backup");
}

/// A file restic cannot read, with a name that would drive a terminal (see tests/hostile.rs):
/// the journal gets it escaped, as text (journalctl exports a field holding control characters
/// as an array of bytes instead), in the message and in IGOTCHUU_ITEM, and no entry holds an
/// ESC or BEL.
#[test]
fn the_journal_gets_hostile_file_names_escaped() {
    let Some(fx) = Fixture::new() else { return };
    let data = fx.create_subvolume("data");
    fx.write_file("data/a.txt", "a\n");
    fx.write_unreadable_file("data/x\x1b]0;TITLE\x07\x1b[2J\x1b[31mEVIL\nname");
    let cfg = fx.write_config(&format!("places = [{}]\n", toml_str(&data)));
    let Some((out, text)) = backup_under_journald(&fx, &cfg) else {
        return;
    };
    assert_eq!(
        out.status.code(),
        Some(3),
        "restic reports the unreadable file: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let entries = entries(&text);
    assert!(!entries.is_empty(), "no igotchuu entries:\n{text}");
    for e in &entries {
        let obj = e.as_object().expect("an entry is an object");
        for (k, v) in obj {
            assert!(v.is_string(), "{k} is not text (control characters?): {v}");
        }
    }
    assert!(
        !text.contains("\\u001b") && !text.contains("\\u0007"),
        "an entry holds ESC or BEL:\n{text}"
    );
    let shown = format!(
        r"{}/x\x1b]0;TITLE\x07\x1b[2J\x1b[31mEVIL\x0aname",
        data.display()
    );
    let error = entries
        .iter()
        .find(|e| field(e, "IGOTCHUU_ITEM").as_deref() == Some(shown.as_str()))
        .unwrap_or_else(|| panic!("no entry names {shown}:\n{text}"));
    assert_eq!(
        field(error, "MESSAGE"),
        Some(format!(
            "error during archival of {shown}: read {shown}: input/output error"
        ))
    );
    assert_eq!(field(error, "PRIORITY").as_deref(), Some("3"));
    assert_eq!(field(error, "IGOTCHUU_STEP").as_deref(), Some("archival"));
    fx.assert_no_snapshot_left("after a journaled backup");
}
