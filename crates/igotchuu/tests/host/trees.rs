//! Stable restic trees (README "restic's directory trees and device numbers"): every snapshot
//! igotchuu makes gets a new device number when another subvolume was opened in between, and
//! restic stores each directory's device number. With restic ≥ 0.17 igotchuu runs restic with
//! `RESTIC_FEATURES=device-id-for-hardlinks`, so an unchanged run adds a handful of tree blobs;
//! with older restic it adds one per directory, and `--dry-run` and `check` say so.
//!
//! Run against restic 0.14 (Debian 12, on PATH) and 0.18 (Debian 13, fetched by scripts/setup):
//! see [`common::Restic`]. What is measured comes from the repository itself (`restic list
//! blobs`, before and after the second run); what restic was given comes from a wrapper that
//! records, inside igotchuu's namespace, `RESTIC_FEATURES` and the device number of the
//! snapshot mounted over the source.

use crate::common;

use std::path::{Path, PathBuf};

use common::*;

/// Leaf directories of the test tree: 15 × 20, plus 15 parents and the subvolume's root.
const FANOUT: (usize, usize) = (15, 20);
const DIRS: usize = FANOUT.0 * FANOUT.1 + FANOUT.0 + 1;

/// A subvolume `data` of [`DIRS`] directories, one small file in each leaf.
fn tree(fx: &Fixture) -> PathBuf {
    let data = fx.create_subvolume("data");
    for i in 0..FANOUT.0 {
        for j in 0..FANOUT.1 {
            fx.write_file(&format!("data/d{i}/e{j}/f"), format!("{i} {j}\n"));
        }
    }
    data
}

/// Tree blobs in the repository's index.
fn tree_blobs(fx: &Fixture) -> usize {
    let out = fx.restic(&["list", "blobs"]);
    out.assert_code(0);
    out.stdout
        .lines()
        .filter(|l| l.starts_with("tree "))
        .count()
}

/// What restic was started with, recorded by a wrapper inside igotchuu's namespace: one line per
/// `restic backup`, "<device number of the source> <RESTIC_FEATURES or <unset>>".
struct Seen {
    wrapper: PathBuf,
    log: PathBuf,
}

fn recorder(fx: &Fixture, source: &Path) -> Seen {
    let log = fx.path("seen.log");
    let wrapper = fx.restic_wrapper(&format!(
        "if [ \"$1\" = backup ]; then printf '%s %s\\n' \"$(stat -c %d {src})\" \"${{RESTIC_FEATURES-<unset>}}\" >> {log}; fi",
        src = sh_quote(source),
        log = sh_quote(&log),
    ));
    Seen { wrapper, log }
}

impl Seen {
    /// (device number, RESTIC_FEATURES) of each `restic backup` so far.
    fn runs(&self) -> Vec<(u64, String)> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let (dev, f) = l.split_once(' ').expect("two fields");
                (dev.parse().expect("a device number"), f.to_owned())
            })
            .collect()
    }
}

/// Creates and opens another subvolume: it takes the anonymous device number the last run's
/// snapshot gave back, so the next run's snapshot gets another one (as any subvolume, snapshot or
/// container opened between two nights does).
fn shift_device_number(fx: &Fixture, name: &str) {
    let p = fx.create_subvolume(name);
    std::fs::metadata(&p).expect("stat the new subvolume");
}

/// How many times a device-number shift is tried. Anonymous device numbers are shared by the
/// whole machine (every btrfs subvolume, overlayfs, tmpfs…), so another test or process can free
/// or take one at the wrong moment and the next snapshot gets the previous one's number after
/// all; such a run is not the one measured, and the shift is tried again.
const SHIFT_ATTEMPTS: usize = 5;

/// Backups of the unchanged tree until one runs on a snapshot whose device number differs from
/// the run before it (another subvolume is created and opened before each). Returns the tree
/// blobs that run added and what restic was given in every run.
fn unchanged_run_after_a_shift(
    fx: &Fixture,
    user_features: Option<&str>,
) -> (usize, Vec<(u64, String)>) {
    let data = tree(fx);
    let cfg = fx.write_config(&places(&[&data]));
    let seen = recorder(fx, &data);
    let backup = || {
        let mut cmd = fx.igotchuu().path_prepend(&seen.wrapper).args([
            "-c",
            cfg.to_str().expect("UTF-8"),
            "backup",
        ]);
        if let Some(f) = user_features {
            cmd = cmd.env("RESTIC_FEATURES", f);
        }
        cmd.run().assert_code(0);
    };
    backup();
    let first = tree_blobs(fx);
    assert!(
        first >= DIRS,
        "the first run stores one tree per directory: {first} tree blobs for {DIRS} directories"
    );
    let mut before = first;
    for attempt in 0..SHIFT_ATTEMPTS {
        shift_device_number(fx, &format!("other-{attempt}"));
        backup();
        let after = tree_blobs(fx);
        let runs = seen.runs();
        assert_eq!(
            runs.len(),
            attempt + 2,
            "one restic backup per run: {runs:?}"
        );
        if runs[attempt].0 != runs[attempt + 1].0 {
            return (after - before, runs);
        }
        before = after;
    }
    panic!(
        "the snapshot's device number never changed between two runs in {SHIFT_ATTEMPTS} attempts: {:?}",
        seen.runs()
    );
}

/// The `RESTIC_FEATURES` the plan (`--dry-run`, `check`) lists among the variables it sets for
/// restic (indented by five spaces; the plan's notes by three).
fn features_set(plan: &str) -> Option<&str> {
    plan.lines()
        .find_map(|l| l.strip_prefix("     RESTIC_FEATURES="))
}

/// Whether a second backup may store at most this many tree blobs and still count as "a
/// handful": the directories above the source and the source's root, not one per directory.
const HANDFUL: usize = 10;

#[test]
fn restic_0_18_adds_a_handful_of_trees_after_a_device_number_shift() {
    let Some(restic) = Restic::Debian13.binary() else {
        return;
    };
    let Some(fx) = Fixture::with_restic(&restic) else {
        return;
    };
    let (added, runs) = unchanged_run_after_a_shift(&fx, None);
    assert!(
        added <= HANDFUL,
        "restic 0.18 stored {added} tree blobs for an unchanged tree of {DIRS} directories; restic got {runs:?}"
    );
    for (_, features) in &runs {
        assert_eq!(features, "device-id-for-hardlinks", "{runs:?}");
    }

    // The plan and check say what igotchuu does, and no cost note.
    let cfg = fx.write_config(&places(&[&fx.at("data")]));
    let plan = fx.run(&cfg, &["backup", "--dry-run"]);
    plan.assert_code(0);
    assert_eq!(
        features_set(&plan.stdout),
        Some("device-id-for-hardlinks"),
        "{plan}"
    );
    plan.assert_stdout_contains("restic 0.18.0: RESTIC_FEATURES adds device-id-for-hardlinks");
    assert!(!plan.stdout.contains("per directory per run"), "{plan}");
    let check = fx.run(&cfg, &["check"]);
    check.assert_code(0).assert_stdout_contains(
        "ok:   restic 0.18.0 keeps directories' trees unchanged across snapshots",
    );
    assert!(!check.stdout.contains("per directory per run"), "{check}");
}

#[test]
fn restic_0_14_rewrites_every_tree_and_plan_and_check_say_so_once() {
    let Some(restic) = Restic::Debian12.binary() else {
        return;
    };
    let Some(fx) = Fixture::with_restic(&restic) else {
        return;
    };
    let version = fx.restic(&["version"]).stdout;
    if !version.starts_with("restic 0.14.") {
        // The cost is restic's; with another restic on PATH this test's premise does not hold.
        cannot_run(&format!(
            "the restic on PATH is not Debian 12's 0.14 but {}",
            version.trim()
        ));
        return;
    }
    let (added, runs) = unchanged_run_after_a_shift(&fx, None);
    // 0.14 knows no feature flags: igotchuu sets none.
    for (_, features) in &runs {
        assert_eq!(features, "<unset>", "{runs:?}");
    }
    assert!(
        added >= DIRS,
        "restic 0.14 after a device-number shift: {added} tree blobs for {DIRS} directories (expected one per directory, the cost the plan explains)"
    );

    let cfg = fx.write_config(&places(&[&fx.at("data")]));
    let note = |text: &str| {
        assert_eq!(
            text.matches("per directory per run").count(),
            1,
            "the cost is explained exactly once:\n{text}"
        );
        for needed in [
            "restic 0.14.0 stores each directory's device number",
            "restic 0.17.0 and",
            "RESTIC_FEATURES=device-id-for-hardlinks",
            "upgrade restic",
        ] {
            // The note is wrapped: compare with line breaks and indentation folded to spaces.
            let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(flat.contains(needed), "{needed:?} missing:\n{text}");
        }
    };
    let plan = fx.run(&cfg, &["backup", "--dry-run"]);
    plan.assert_code(0);
    assert_eq!(
        features_set(&plan.stdout),
        None,
        "nothing set for 0.14:\n{plan}"
    );
    note(&plan.stdout);
    let check = fx.run(&cfg, &["check"]);
    check.assert_code(0).assert_stdout_contains(
        "warn: restic 0.14.0 stores every directory's tree again whenever a snapshot's device number changes",
    );
    note(&check.stdout);
}

#[test]
fn the_users_restic_features_are_kept_and_their_setting_of_the_flag_wins() {
    let Some(restic) = Restic::Debian13.binary() else {
        return;
    };
    // Another flag of the user's: kept, and device-id-for-hardlinks added after it.
    {
        let Some(fx) = Fixture::with_restic(&restic) else {
            return;
        };
        let (added, runs) = unchanged_run_after_a_shift(&fx, Some("s3-restore=false"));
        for (_, features) in &runs {
            assert_eq!(
                features, "s3-restore=false,device-id-for-hardlinks",
                "{runs:?}"
            );
        }
        assert!(added <= HANDFUL, "{added} tree blobs");
    }
    // The user turned the flag off: restic gets exactly that, and it shows in the repository.
    let Some(fx) = Fixture::with_restic(&restic) else {
        return;
    };
    let (added, runs) = unchanged_run_after_a_shift(&fx, Some("device-id-for-hardlinks=false"));
    for (_, features) in &runs {
        assert_eq!(features, "device-id-for-hardlinks=false", "{runs:?}");
    }
    assert!(
        added >= DIRS,
        "with the flag off, restic 0.18 stores every tree again: {added} tree blobs for {DIRS} directories"
    );
    let cfg = fx.write_config(&places(&[&fx.at("data")]));
    let plan = fx
        .igotchuu()
        .env("RESTIC_FEATURES", "device-id-for-hardlinks=false")
        .args(["-c", cfg.to_str().expect("UTF-8"), "backup", "--dry-run"])
        .run();
    plan.assert_code(0);
    let flat = plan.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains(
            "RESTIC_FEATURES from the environment turns device-id-for-hardlinks off; kept as it is"
        ) && flat.matches("per directory per run").count() == 1,
        "{plan}"
    );
    assert_eq!(
        features_set(&plan.stdout),
        None,
        "igotchuu must not set the flag over the user's:\n{plan}"
    );
}
