//! Under systemd, igotchuu logs structured entries to the journal. A real systemd-journald is
//! started in a private mount namespace (its own tmpfs /run/systemd and /run/log), igotchuu's
//! stderr is connected to it with systemd-cat exactly as systemd connects a service's, and the
//! test reads the entries back with journalctl.

mod common;

use std::process::Command;

use common::*;

const JOURNALD: &str = "/lib/systemd/systemd-journald";

#[test]
fn under_systemd_the_journal_gets_structured_entries() {
    let Some(fx) = Fixture::new() else { return };
    for tool in [
        JOURNALD,
        "/usr/bin/journalctl",
        "/usr/bin/systemd-cat",
        "/usr/bin/unshare",
    ] {
        if !std::path::Path::new(tool).exists() {
            return cannot_run(&format!(
                "{tool} is missing (Debian package systemd / util-linux)"
            ));
        }
    }
    let data = fx.create_subvolume("data");
    fx.write_file("data/a.txt", "a\n");
    let cfg = fx.write_config(&format!("places = [{}]\n", toml_str(&data)));
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
            cfg = sh_quote(&cfg),
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
    assert!(
        out.status.success(),
        "igotchuu under the journal failed: {:?}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&out_json).expect("journal export");
    let entries: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let field =
        |e: &serde_json::Value, k: &str| e.get(k).and_then(|v| v.as_str()).map(str::to_owned);
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
