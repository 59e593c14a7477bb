//! The seam between igotchuu and its snapshot backends (src/snapshot): what earlier versions left
//! behind is still understood. Needs root, btrfs-progs, restic and loop devices; otherwise
//! "SKIPPED" (or a failure with CI=true). See crates/igotchuu-testkit.

use crate::common;

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::process::Command;

use common::*;

/// The UUID `btrfs subvolume show` gives for the subvolume at `path`.
fn uuid_of(fx: &Fixture, path: &std::path::Path) -> String {
    let out = Command::new(&fx.btrfs_bin)
        .args(["subvolume", "show"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .find_map(|l| l.trim().strip_prefix("UUID:").map(|u| u.trim().to_owned()))
        .expect("a UUID line")
}

/// A crashed run of the version before snapshot backends left a snapshot and its journal record
/// (no `backend` field, the identities as `source_uuid` and `snapshot_uuid`). `igotchuu cleanup`
/// reads it as a btrfs record and removes the snapshot and its directory.
#[test]
fn a_record_written_before_backends_is_still_cleaned_up() {
    let Some(fx) = Fixture::new() else { return };
    let home = fx.create_subvolume("home");
    fx.write_file("home/f", "x\n");
    let ts = "2026-11-29T14:00:00Z";
    let container = fx.at(format!("home-{ts}"));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&container)
        .unwrap();
    let snapshot = container.join("home");
    let out = Command::new(&fx.btrfs_bin)
        .args(["subvolume", "snapshot", "-r"])
        .arg(&home)
        .arg(&snapshot)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let journal = fx.state_dir.join("journal");
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(&journal)
        .unwrap();
    // Exactly the fields, names and layout that version's serde_json::to_vec_pretty wrote.
    let record = format!(
        "{{\n  \"snapshot\": {s:?},\n  \"source\": {h:?},\n  \"source_uuid\": {su:?},\n  \"pid\": 4242,\n  \"run\": {ts:?},\n  \"container\": {c:?},\n  \"snapshot_uuid\": {nu:?},\n  \"container_ino\": {ino}\n}}",
        s = snapshot.display().to_string(),
        h = home.display().to_string(),
        su = uuid_of(&fx, &home),
        c = container.display().to_string(),
        nu = uuid_of(&fx, &snapshot),
        ino = std::fs::metadata(&container).unwrap().ino(),
    );
    std::fs::write(journal.join("0123456789abcdef.json"), record).unwrap();
    assert_eq!(fx.extra_subvolumes().len(), 1);

    let cfg = fx.write_config(&places(&[&home]));
    let out = fx.run(&cfg, &["cleanup"]);
    out.assert_code(0);
    out.assert_stdout_contains(&format!("removed {}", snapshot.display()));
    fx.assert_no_snapshot_left("after cleanup");
    assert!(!container.exists(), "its directory is left\n{out}");
    assert_eq!(
        std::fs::read_dir(&journal)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .count(),
        0
    );
}
