//! Bad configs: each is refused with exit 20 and a message naming the config file, the line and
//! column of the offending key, and the key itself — and nothing is created: no snapshot
//! subvolume, no directory under `snapshot_prefix`.
//!
//! The message half runs anywhere (config validation happens before the root check). The
//! "nothing created" half needs the btrfs fixture; without it the test says SKIPPED for that
//! half (or fails with CI=true).

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// Paths a bad config may refer to. With the fixture, `data` and `data2` are real subvolumes and
/// `prefix` a free directory on the same filesystem, so a config that got past validation by
/// mistake would really snapshot something.
struct Layout {
    /// `lock_file`, `cache_dir`, `state_dir` lines (3 lines).
    header: String,
    data: PathBuf,
    data2: PathBuf,
    /// A `snapshot_prefix` that does not exist yet.
    prefix: PathBuf,
}

/// One bad config and what its message must say.
struct Case {
    /// The config after the header.
    body: String,
    /// Extra arguments before `backup` (e.g. `--profile`).
    args: Vec<String>,
    /// A text found on exactly one line of the file: the line the message must point at.
    /// `None` when the mistake is not in the file (an unknown `--profile`).
    line_of: Option<String>,
    /// Texts the message must contain (the key name first).
    expect: Vec<String>,
}

fn case(body: String, line_needle: &str, expect: &[&str]) -> Case {
    Case {
        body,
        args: Vec::new(),
        line_of: Some(line_needle.to_owned()),
        expect: expect.iter().map(|s| s.to_string()).collect(),
    }
}

/// Asserts `stderr` contains `<file>:<line>:<col>:` for the expected line and some column.
fn assert_location(out: &RunOutput, file: &Path, line: usize) {
    let head = format!("{}:{line}:", file.display());
    let found = out.stderr.match_indices(&head).any(|(i, _)| {
        let rest = &out.stderr[i + head.len()..];
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        digits > 0 && rest[digits..].starts_with(':')
    });
    assert!(
        found,
        "the message does not point at {head}<column>:\n{out}"
    );
}

/// Runs `make`'s bad config through `igotchuu backup` and checks the message and, with the
/// fixture, that nothing was created.
fn check_bad_config(make: impl Fn(&Layout) -> Case) {
    let fx = Fixture::for_part(false, "the nothing-is-created check");
    let scratch_only;
    let (scratch, layout) = match &fx {
        Some(fx) => {
            let layout = Layout {
                header: fx.scratch.standard_keys(),
                data: fx.create_subvolume("data"),
                data2: fx.create_subvolume("data2"),
                prefix: fx.at("snaps"),
            };
            fx.write_file("data/file.txt", "x");
            (&fx.scratch, layout)
        }
        None => {
            scratch_only = Scratch::new();
            let layout = Layout {
                header: scratch_only.standard_keys(),
                data: scratch_only.path("mnt/data"),
                data2: scratch_only.path("mnt/data2"),
                prefix: scratch_only.path("mnt/snaps"),
            };
            (&scratch_only, layout)
        }
    };
    let c = make(&layout);
    let text = format!("{}{}", layout.header, c.body);
    let cfg = scratch.write_config_raw(&text);
    let before = fx.as_ref().map(|f| f.probe_next_subvolume_id());
    let out = scratch
        .igotchuu()
        .arg("-c")
        .arg(&cfg)
        .args(&c.args)
        .arg("backup")
        .run();

    out.assert_code(20);
    out.assert_stderr_contains(&cfg.display().to_string());
    match &c.line_of {
        Some(needle) => assert_location(&out, &cfg, line_of(&text, needle)),
        None => {
            let head = format!("{}:", cfg.display());
            let located = out.stderr.match_indices(&head).any(|(i, _)| {
                out.stderr[i + head.len()..].starts_with(|c: char| c.is_ascii_digit())
            });
            assert!(
                !located,
                "a line was given for a mistake that is not in the file\n{out}"
            );
        }
    }
    for e in &c.expect {
        out.assert_stderr_contains(e);
    }

    if let Some(fx) = &fx {
        let after = fx.probe_next_subvolume_id();
        assert_eq!(
            Some(after),
            before.map(|b| b + 1),
            "a subvolume was created (and maybe deleted again) by a run with a bad config\n{out}"
        );
        fx.assert_no_snapshot_left("after a bad config");
        assert!(
            !layout.prefix.exists(),
            "the snapshot prefix was created by a run with a bad config"
        );
        assert_eq!(
            std::fs::read_dir(&fx.mnt).unwrap().count(),
            2,
            "something appeared on the filesystem: {:?}",
            std::fs::read_dir(&fx.mnt)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn unknown_key() {
    check_bad_config(|l| {
        case(
            format!(
                "places = [{}]\nsnapshot_prefix = {}\nplcaes = [{}]\n",
                toml_str(&l.data),
                toml_str(&l.prefix),
                toml_str(&l.data2)
            ),
            "plcaes",
            &["plcaes"],
        )
    });
}

#[test]
fn unknown_key_inside_a_snapshot_table() {
    check_bad_config(|l| {
        case(
            format!(
                "places = [{d}]\n[[snapshot]]\nsource = {d}\nsnapshot_locaton = {p}\n",
                d = toml_str(&l.data),
                p = toml_str(&l.prefix)
            ),
            "snapshot_locaton",
            &["snapshot_locaton"],
        )
    });
}

#[test]
fn wrong_type_names_the_key() {
    check_bad_config(|l| {
        case(
            format!(
                "snapshot_prefix = {}\nplaces = {}\n",
                toml_str(&l.prefix),
                toml_str(&l.data)
            ),
            "places =",
            &["`places`", "invalid type"],
        )
    });
}

#[test]
fn wrong_type_of_a_number_names_the_key() {
    check_bad_config(|l| {
        case(
            format!(
                "places = [{}]\nprogress_fps = \"fast\"\n",
                toml_str(&l.data)
            ),
            "progress_fps",
            &["`progress_fps`", "invalid type"],
        )
    });
}

#[test]
fn relative_path_in_places() {
    check_bad_config(|l| {
        case(
            format!(
                "snapshot_prefix = {}\nplaces = [\n  {},\n  \"srv/data\",\n]\n",
                toml_str(&l.prefix),
                toml_str(&l.data)
            ),
            "\"srv/data\"",
            &["`places[1]`", "relative"],
        )
    });
}

#[test]
fn relative_snapshot_source() {
    check_bad_config(|l| {
        case(
            format!(
                "snapshot_prefix = {p}\nplaces = [{d}]\n[[snapshot]]\nsource = {d}\n[[snapshot]]\nsource = \"home\"\n",
                p = toml_str(&l.prefix),
                d = toml_str(&l.data)
            ),
            "\"home\"",
            &["`snapshot[1].source`", "relative"],
        )
    });
}

#[test]
fn relative_snapshot_source_as_plain_string() {
    check_bad_config(|l| {
        case(
            format!(
                "snapshot_prefix = {p}\nplaces = [{d}]\nsnapshot = [\n  {d},\n  \"home\",\n]\n",
                p = toml_str(&l.prefix),
                d = toml_str(&l.data)
            ),
            "\"home\"",
            &["`snapshot[1].source`", "relative"],
        )
    });
}

#[test]
fn relative_snapshot_location() {
    check_bad_config(|l| {
        case(
            format!(
                "places = [{d}]\n[[snapshot]]\nsource = {d}\nsnapshot_location = \"snaps/data\"\n",
                d = toml_str(&l.data)
            ),
            "snapshot_location",
            &["`snapshot[0].snapshot_location`", "relative"],
        )
    });
}

#[test]
fn relative_password_file() {
    check_bad_config(|l| {
        case(
            format!(
                "places = [{}]\nsnapshot_prefix = {}\npassword_file = \"restic-password\"\n",
                toml_str(&l.data),
                toml_str(&l.prefix)
            ),
            "password_file",
            &["`password_file`", "relative"],
        )
    });
}

#[test]
fn trailing_slash_on_snapshot_prefix() {
    check_bad_config(|l| {
        case(
            format!(
                "places = [{}]\nsnapshot_prefix = \"{}/\"\n",
                toml_str(&l.data),
                l.prefix.display()
            ),
            "snapshot_prefix",
            &["`snapshot_prefix`", "slash"],
        )
    });
}

#[test]
fn two_snapshots_with_the_same_explicit_destination() {
    check_bad_config(|l| {
        let dest = toml_str(l.prefix.join("both"));
        case(
            format!(
                "places = [{d1}, {d2}]\nsnapshot = [\n  {{ source = {d1}, snapshot_location = {dest} }},\n  {{ source = {d2}, snapshot_location = {dest} }},\n]\n",
                d1 = toml_str(&l.data),
                d2 = toml_str(&l.data2),
            ),
            &format!("source = {}", toml_str(&l.data2)),
            &["`snapshot[1]`", "snapshot[0]"],
        )
    });
}

#[test]
fn prefix_destination_colliding_with_an_explicit_location() {
    // snapshot[0] goes to <prefix>/<data's path>; snapshot[1] names that same path explicitly.
    check_bad_config(|l| {
        let same = l.prefix.join(l.data.strip_prefix("/").unwrap());
        case(
            format!(
                "snapshot_prefix = {p}\nplaces = [{d1}, {d2}]\n[[snapshot]]\nsource = {d1}\n[[snapshot]]\nsource = {d2}\nsnapshot_location = {same}\n",
                p = toml_str(&l.prefix),
                d1 = toml_str(&l.data),
                d2 = toml_str(&l.data2),
                same = toml_str(&same),
            ),
            "snapshot_location",
            &["`snapshot[1]`", "snapshot[0]"],
        )
    });
}

#[test]
fn both_repo_and_repository_file() {
    check_bad_config(|l| {
        case(
            format!(
                "places = [{}]\nsnapshot_prefix = {}\nrepository_file = \"/etc/restic-repo\"\nrepo = \"/srv/restic\"\n",
                toml_str(&l.data),
                toml_str(&l.prefix)
            ),
            "repo =",
            &["`repo`", "`repository_file`"],
        )
    });
}

#[test]
fn unknown_profile() {
    // The mistake is on the command line, so there is no line to point at: the message names
    // the file, the profile asked for and the profiles that exist.
    check_bad_config(|l| Case {
        body: format!(
            "places = [{}]\nsnapshot_prefix = {}\n[profiles.offsite]\nrepo = \"/srv/offsite\"\n",
            toml_str(&l.data),
            toml_str(&l.prefix)
        ),
        args: vec!["--profile".into(), "ofsite".into()],
        line_of: None,
        expect: vec!["\"ofsite\"".into(), "--profile".into(), "offsite".into()],
    });
}

#[test]
fn bad_value_inside_the_selected_profile_points_into_the_profile() {
    check_bad_config(|l| Case {
        body: format!(
            "places = [{}]\nsnapshot_prefix = {}\n[profiles.offsite]\nplaces = [\"srv\"]\n",
            toml_str(&l.data),
            toml_str(&l.prefix)
        ),
        args: vec!["--profile".into(), "offsite".into()],
        line_of: Some("\"srv\"".into()),
        expect: vec!["`places[0]`".into(), "relative".into()],
    });
}

#[test]
fn empty_exec_before_snapshot() {
    check_bad_config(|l| {
        case(
            format!(
                "places = [{}]\nsnapshot_prefix = {}\nexec_before_snapshot = []\n",
                toml_str(&l.data),
                toml_str(&l.prefix)
            ),
            "exec_before_snapshot",
            &["`exec_before_snapshot`", "empty"],
        )
    });
}

#[test]
fn progress_fps_zero() {
    check_bad_config(|l| {
        case(
            format!(
                "places = [{}]\nsnapshot_prefix = {}\nprogress_fps = 0.0\n",
                toml_str(&l.data),
                toml_str(&l.prefix)
            ),
            "progress_fps",
            &["`progress_fps`", "out of range"],
        )
    });
}

#[test]
fn progress_fps_above_60() {
    check_bad_config(|l| {
        case(
            format!(
                "places = [{}]\nsnapshot_prefix = {}\nprogress_fps = 61\n",
                toml_str(&l.data),
                toml_str(&l.prefix)
            ),
            "progress_fps",
            &["`progress_fps`"],
        )
    });
}

// ------------------------------------------------------------------------------------------------
// Good configs that exercise the same parts of the loader
// ------------------------------------------------------------------------------------------------

/// `[profiles.NAME]` overrides the top-level keys: `--dry-run --profile` shows the profile's
/// places and repository, not the top level's.
#[test]
fn profile_overrides_places_in_the_dry_run() {
    let s = Scratch::new();
    let cfg = s.write_config(
        "places = [\"/srv/top\"]\nrepo = \"/srv/restic-top\"\n\
         [profiles.offsite]\nplaces = [\"/srv/one\", \"/srv/two\"]\nrepo = \"/srv/restic-offsite\"\n",
    );
    let out = s.run(&cfg, &["--profile", "offsite", "backup", "--dry-run"]);
    out.assert_code(0);
    let text = out.all();
    assert!(text.contains("offsite"), "the profile is not shown\n{out}");
    let cmd = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("restic backup"))
        .unwrap_or_else(|| panic!("no restic command\n{out}"));
    assert!(cmd.ends_with("-- /srv/one /srv/two"), "{cmd}");
    assert!(text.contains("/srv/one -> /srv/one-"), "{out}");
    assert!(
        text.contains("RESTIC_REPOSITORY=/srv/restic-offsite"),
        "{out}"
    );
    assert!(
        !text.contains("/srv/top"),
        "top-level places leak in\n{out}"
    );
    assert!(!text.contains("/srv/restic-top"), "{out}");

    // Without --profile the top level applies.
    let out = s.run(&cfg, &["backup", "--dry-run"]);
    out.assert_code(0);
    assert!(out.all().contains("-- /srv/top"), "{out}");
}

/// A `snapshot` entry written as a plain string (as the NixOS module writes it) is accepted.
#[test]
fn snapshot_entry_as_plain_string_is_accepted() {
    let s = Scratch::new();
    let cfg = s.write_config(
        "places = [\"/srv/a\", \"/srv/b\"]\nsnapshot = [\"/srv/a\", { source = \"/srv/b\", snapshot_location = \"/srv/b-snap\" }]\n",
    );
    let out = s.run(&cfg, &["backup", "--dry-run"]);
    out.assert_code(0);
    let text = out.all();
    assert!(text.contains("/srv/a -> /srv/a-"), "{out}");
    assert!(text.contains("/srv/b -> /srv/b-snap-"), "{out}");
}
