//! Hostile or careless input: files others could change, symlinks planted where snapshots go,
//! secrets in the config. Each test runs igotchuu as root on a real loop-mounted btrfs with the
//! real restic and asserts what a user notices: the refusal and its advice, the exit code, that
//! nothing was created (or deleted) where it must not be, and that no secret is shown anywhere.
//!
//! Need root, btrfs-progs, restic and loop devices (and dbus-daemon for the D-Bus checks);
//! otherwise they print "SKIPPED" (or fail with CI=true). See tests/common/mod.rs.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::bus::{self, Bus, Policy, Recorder};
use common::*;

// ------------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------------

/// The number of records in the crash-recovery journal.
fn journal_len(fx: &Fixture) -> usize {
    std::fs::read_dir(fx.state_dir.join("journal"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.ends_with(".json") && !n.starts_with('.')
                })
                .count()
        })
        .unwrap_or(0)
}

fn chown(p: &Path, uid: u32) {
    std::os::unix::fs::chown(p, Some(uid), None)
        .unwrap_or_else(|e| panic!("chown {}: {e}", p.display()));
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

// ------------------------------------------------------------------------------------------------
// Files others could change
// ------------------------------------------------------------------------------------------------

const NOBODY: u32 = 65534;

/// A config file, `password_file` or `repository_file` not owned by root or writable by group or
/// others is refused before anything happens, naming the file and the command that fixes it.
/// After exactly that fix, the same files back up.
#[test]
fn files_others_could_change_are_refused_with_the_fix() {
    let Some(fx) = Fixture::new() else { return };
    let data = subvolume_with_files(&fx, "data", 2);
    let repo = fx.repo.clone().expect("repo");
    let pw = fx.path("password");
    write_secret(&pw, "correct horse battery staple\n");
    let repo_file = fx.path("repository");
    std::fs::write(&repo_file, format!("{}\n", repo.display())).unwrap();
    chmod(&repo_file, 0o600);
    let cfg = fx.write_config_raw(&format!(
        "{}repository_file = {}\npassword_file = {}\n{}",
        fx.scratch.standard_keys(),
        toml_str(&repo_file),
        toml_str(&pw),
        places(&[&data])
    ));
    chmod(&cfg, 0o600);

    // (what is wrong, the file, how to break it, the words of the refusal, the fix)
    type Break = fn(&Path);
    let cases: [(&str, &Path, Break, String, Break); 6] = [
        (
            "config owned by nobody",
            &cfg,
            |p| chown(p, NOBODY),
            format!(
                "igotchuu: error: {p}: the config file is owned by uid {NOBODY}, not root; igotchuu runs as root and trusts only root's files: `chown root: {p}`",
                p = cfg.display()
            ),
            |p| chown(p, 0),
        ),
        (
            "config writable by its group",
            &cfg,
            |p| chmod(p, 0o660),
            format!(
                "igotchuu: error: {p}: the config file is writable by group or others (mode 660); anyone who can write it can run commands as root: `chmod go-w {p}`",
                p = cfg.display()
            ),
            |p| chmod(p, 0o600),
        ),
        (
            "config writable by anyone",
            &cfg,
            |p| chmod(p, 0o646),
            format!(
                "igotchuu: error: {p}: the config file is writable by group or others (mode 646)",
                p = cfg.display()
            ),
            |p| chmod(p, 0o600),
        ),
        (
            "password_file owned by nobody",
            &pw,
            |p| chown(p, NOBODY),
            format!(
                "igotchuu: error: {p}: the `password_file` is owned by uid {NOBODY}, not root; igotchuu runs as root and trusts only root's files: `chown root: {p}`",
                p = pw.display()
            ),
            |p| chown(p, 0),
        ),
        (
            "password_file writable by its group",
            &pw,
            |p| chmod(p, 0o620),
            format!(
                "igotchuu: error: {p}: the `password_file` is writable by group or others (mode 620); anyone who can write it can run commands as root: `chmod go-w {p}`",
                p = pw.display()
            ),
            |p| chmod(p, 0o600),
        ),
        (
            "repository_file writable by anyone",
            &repo_file,
            |p| chmod(p, 0o606),
            format!(
                "igotchuu: error: {p}: the `repository_file` is writable by group or others (mode 606)",
                p = repo_file.display()
            ),
            |p| chmod(p, 0o600),
        ),
    ];
    let before = fx.probe_next_subvolume_id();
    for (what, file, breaks, words, fix) in &cases {
        breaks(file);
        let out = fx.run(&cfg, &["backup"]);
        out.assert_code(20);
        assert!(
            out.stderr.contains(words),
            "{what}: expected {words:?}\n{out}"
        );
        // The fix the message names, before the next case: each case has exactly one problem.
        fix(file);
    }
    assert_eq!(
        fx.probe_next_subvolume_id(),
        before + 1,
        "a refused run created a subvolume"
    );
    fx.assert_no_snapshot_left("after the refusals");
    assert!(!fx.lock_file.exists(), "a refused run took the lock");
    assert!(
        !fx.state_dir.exists(),
        "a refused run created its state dir"
    );
    assert!(fx.restic_snapshots().is_empty());

    // The advice works: with every file fixed as told, the same config backs up.
    for (_, file, _, _, _) in &cases {
        let md = std::fs::metadata(file).unwrap();
        assert_eq!((md.uid(), md.mode() & 0o077), (0, 0), "{}", file.display());
    }
    fx.run(&cfg, &["backup"]).assert_code(0);
    assert_eq!(fx.restic_snapshots().len(), 1);
    fx.assert_no_snapshot_left("after the backup");
}

// ------------------------------------------------------------------------------------------------
// Where snapshots go
// ------------------------------------------------------------------------------------------------

/// The directories igotchuu creates on the way to a snapshot under `snapshot_prefix` are mode
/// 0700, root's: nobody else can look into (or plant anything in) where snapshots live.
#[test]
fn snapshot_parent_directories_are_created_0700() {
    let Some(fx) = Fixture::new() else { return };
    let data = subvolume_with_files(&fx, "data", 2);
    let prefix = fx.at("snaps");
    let cfg = fx.write_config(&format!(
        "{}snapshot_prefix = {}\n",
        places(&[&data]),
        toml_str(&prefix)
    ));
    fx.run(&cfg, &["backup"]).assert_code(0);
    // snapshot_prefix + the source's full path: every directory from the prefix down to the
    // snapshot's parent was made by igotchuu.
    let parent = prefix.join(data.parent().unwrap().strip_prefix("/").unwrap());
    let mut dirs = vec![prefix.clone()];
    for c in parent.strip_prefix(&prefix).unwrap().components() {
        let next = dirs.last().unwrap().join(c);
        dirs.push(next);
    }
    assert!(dirs.len() >= 3, "{dirs:?}");
    for d in &dirs {
        let md = std::fs::symlink_metadata(d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        assert!(md.is_dir(), "{}", d.display());
        assert_eq!(
            (md.mode() & 0o7777, md.uid()),
            (0o700, 0),
            "{} is not 0700 root",
            d.display()
        );
    }
    fx.assert_no_snapshot_left("after the backup");
}

/// A symlink planted on the way to where a snapshot goes — under `snapshot_prefix`, pointing at
/// another directory of the same btrfs, or as the snapshot's parent, pointing outside the
/// filesystem — is refused before any snapshot is made; nothing appears at the link's target.
#[test]
fn a_planted_symlink_cannot_redirect_snapshot_creation() {
    let Some(fx) = Fixture::new_without_repo() else {
        return;
    };
    let data = subvolume_with_files(&fx, "data", 2);

    // 1. snapshot_prefix/tmp → <same btrfs>/elsewhere, with the rest of the path waiting there.
    let prefix = fx.at("snaps");
    std::fs::create_dir(&prefix).unwrap();
    chmod(&prefix, 0o700);
    let elsewhere = fx.at("elsewhere");
    let first = data.strip_prefix("/").unwrap().components().next().unwrap();
    let rest = data
        .parent()
        .unwrap()
        .strip_prefix("/")
        .unwrap()
        .strip_prefix(first)
        .unwrap();
    std::fs::create_dir_all(elsewhere.join(rest)).unwrap();
    std::os::unix::fs::symlink(&elsewhere, prefix.join(first)).unwrap();
    let planted_before = walk(&elsewhere);

    // 2. The snapshot's parent is a link out of the filesystem.
    let outside = fx.path("outside");
    std::fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, fx.at("linked")).unwrap();

    let cases = [
        (
            "a link under snapshot_prefix",
            format!("snapshot_prefix = {}\n", toml_str(&prefix)),
            prefix.join(data.parent().unwrap().strip_prefix("/").unwrap()),
        ),
        (
            "the snapshot's parent is a link",
            format!(
                "[[snapshot]]\nsource = {}\nsnapshot_location = {}\n",
                toml_str(&data),
                toml_str(fx.at("linked/data"))
            ),
            fx.at("linked"),
        ),
    ];
    let before = fx.probe_next_subvolume_id();
    for (what, keys, parent) in &cases {
        let cfg = fx.write_config(&format!("{}{keys}", places(&[&data])));
        let out = fx.run(&cfg, &["backup"]);
        out.assert_code(20);
        // The kernel says ELOOP for a link on the way, ENOTDIR for a link at the end.
        let words = format!(
            "cannot open {} without following symlinks: ",
            parent.display()
        );
        out.assert_stderr_contains("; snapshot locations must be real directories");
        assert!(
            out.stderr.contains(&words),
            "{what}: expected {words:?}\n{out}"
        );
        assert_eq!(journal_len(&fx), 0, "{what}");
    }
    assert_eq!(
        fx.probe_next_subvolume_id(),
        before + 1,
        "a subvolume was created"
    );
    fx.assert_no_snapshot_left("after the refusals");
    assert_eq!(
        walk(&elsewhere),
        planted_before,
        "something appeared at the link's target"
    );
    assert!(walk(&outside).is_empty(), "something appeared outside");
}

/// While a backup runs, the directory holding the snapshot is swapped for a symlink to a
/// directory holding a subvolume of the user's with the snapshot's very path. igotchuu deletes
/// through the directory fds it kept since it made them, never by path: its own snapshot (moved
/// along with the directory) is deleted, the user's subvolume behind the link survives, and the
/// run succeeds with nothing left.
#[test]
fn a_planted_symlink_cannot_redirect_snapshot_deletion() {
    let Some(fx) = Fixture::new() else { return };
    let data = subvolume_with_files(&fx, "data", 2);
    let snaps = fx.at("snaps");
    // Fake restic: holds the run while the test swaps the directory.
    let Hold { dir, held, go } = hold(&fx, "restic");
    let cfg = fx.write_config(&format!(
        "{}[[snapshot]]\nsource = {}\nsnapshot_location = {}\n",
        places(&[&data]),
        toml_str(&data),
        toml_str(snaps.join("data"))
    ));
    let mut run = fx
        .igotchuu()
        .path_prepend(&dir)
        .args(["-c", cfg.to_str().unwrap(), "backup"])
        .spawn();
    run.wait_for_path(&held);
    let snap = fx
        .extra_subvolumes()
        .into_iter()
        .map(|s| fx.at(&s.path))
        .next()
        .expect("the run's snapshot");
    let container = snap.parent().expect("container").to_owned();
    assert_eq!(container.parent(), Some(snaps.as_path()));
    let rel = snap.strip_prefix(&snaps).unwrap().to_owned();

    // The swap: snaps → snaps.real, and snaps → victim, which holds the user's subvolume at the
    // snapshot's path.
    let victim = fx.at("victim");
    std::fs::create_dir_all(victim.join(rel.parent().unwrap())).unwrap();
    fx.create_subvolume(&format!("victim/{}", rel.display()));
    fx.write_file(
        &format!("victim/{}/precious.txt", rel.display()),
        "the user's data\n",
    );
    let real = fx.at("snaps.real");
    std::fs::rename(&snaps, &real).unwrap();
    std::os::unix::fs::symlink(&victim, &snaps).unwrap();

    touch(&go);
    let out = run.wait(RUN_TIMEOUT);
    out.assert_code(0);
    assert_eq!(
        std::fs::read_to_string(victim.join(&rel).join("precious.txt")).unwrap(),
        "the user's data\n",
        "the user's subvolume behind the link was deleted\n{out}"
    );
    assert!(
        walk(&real).is_empty(),
        "igotchuu's snapshot or its directory is left in the moved directory\n{out}"
    );
    assert_eq!(journal_len(&fx), 0, "the journal keeps a record");
    assert_no_mounts_left(&fx, "after the swap");
    assert_eq!(fx.restic_snapshots().len(), 1, "the backup itself worked");
    // Only the test's own subvolumes remain, the user's `victim/…` among them.
    fx.assert_no_snapshot_left("after the run");
}

// ------------------------------------------------------------------------------------------------
// Secrets
// ------------------------------------------------------------------------------------------------

/// A repository URL with a password (as `repo` and as `-r` in `restic_args`), a
/// `--password-command` in `restic_args` (both spellings) and the `password_command` key: the
/// secret never shows in `--dry-run`, in the output of a real (failing) run with `-v`, or in any
/// D-Bus signal. The password commands name a program that does not exist, so restic itself
/// echoes the secret back ("exec: \"…\": executable file not found"): igotchuu must scrub it.
#[test]
fn secrets_never_show_in_output_dry_run_or_dbus() {
    let Some(fx) = bus::setup() else { return };
    let data = subvolume_with_files(&fx, "data", 2);
    let repo = fx.repo.clone().expect("repo");
    let bus = Bus::start(Policy::Shipped);
    let rec = Recorder::start(&bus);
    let std_keys = fx.scratch.standard_keys();
    let pw = toml_str(&fx.password_file);
    let local = toml_str(&repo);
    let pl = places(&[&data]);
    // (the secret, the config, restic's echo of it as igotchuu shows it, scrubbed)
    let cases: Vec<(&str, String, Option<&str>)> = vec![
        (
            "s3cret-URL-pw-1",
            format!(
                "{std_keys}repo = \"rest:http://user:s3cret-URL-pw-1@127.0.0.1:1/repo\"\npassword_file = {pw}\n{pl}"
            ),
            None,
        ),
        (
            "s3cret-ARG-pw-2",
            format!(
                "{std_keys}password_file = {pw}\nrestic_args = {}\n{pl}",
                toml_list(&["-r", "rest:http://user:s3cret-ARG-pw-2@127.0.0.1:1/repo"])
            ),
            None,
        ),
        (
            "nonexistent-s3cret-CMD-3",
            format!(
                "{std_keys}repo = {local}\nrestic_args = {}\n{pl}",
                toml_list(&["--password-command", "nonexistent-s3cret-CMD-3"])
            ),
            Some("restic: Resolving password failed: exec: \"***\": executable file not found"),
        ),
        (
            "nonexistent-s3cret-EQ-4",
            format!(
                "{std_keys}repo = {local}\nrestic_args = {}\n{pl}",
                toml_list(&["--password-command=nonexistent-s3cret-EQ-4"])
            ),
            Some("restic: Resolving password failed: exec: \"***\": executable file not found"),
        ),
        (
            "nonexistent-s3cret-KEY-5",
            format!(
                "{std_keys}repo = {local}\npassword_command = \"nonexistent-s3cret-KEY-5\"\n{pl}"
            ),
            Some("restic: Resolving password failed: exec: \"***\": executable file not found"),
        ),
    ];
    let secrets: Vec<&str> = cases.iter().map(|c| c.0).collect();
    let mut runs = 0;
    for (secret, text, echo) in &cases {
        let cfg = fx.write_config_raw(text);
        let dry = bus
            .igotchuu(&fx)
            .args(["-c", cfg.to_str().unwrap(), "backup", "--dry-run"])
            .run();
        dry.assert_code(0);
        assert!(
            dry.stdout.contains("***"),
            "{secret}: nothing redacted?\n{dry}"
        );
        let out = bus
            .igotchuu(&fx)
            .args(["-c", cfg.to_str().unwrap(), "-v", "backup"])
            .run();
        runs += 1;
        assert_ne!(
            out.code,
            Some(0),
            "{secret}: restic cannot have succeeded\n{out}"
        );
        // The run got as far as restic (so restic had its chance to echo the secret).
        out.assert_stderr_contains("igotchuu: running restic backup --json");
        if let Some(e) = echo {
            out.assert_stderr_contains(e);
        }
        for s in &secrets {
            for (name, o) in [("--dry-run", &dry), ("backup -v", &out)] {
                assert!(!o.all().contains(s), "{name} shows the secret {s:?}\n{o}");
            }
        }
        fx.assert_no_snapshot_left(secret);
        assert_eq!(journal_len(&fx), 0);
    }

    let msgs = rec.wait_released(runs);
    let errors = bus::igotchuu_signals(&msgs)
        .into_iter()
        .filter(|m| bus::member(m) == "Error")
        .count();
    assert!(errors >= runs, "every failed run sent an Error signal");
    for m in &msgs {
        let body = m.body();
        let text = String::from_utf8_lossy(body.data());
        for s in &secrets {
            assert!(
                !text.contains(s),
                "a D-Bus {} signal carries the secret {s:?}: {text:?}",
                bus::member(m)
            );
        }
    }
}

/// The same swap with a real directory instead of a symlink (a user owning a directory on the
/// way could do this): the subvolume now at the snapshot's path is the user's, and igotchuu,
/// deleting through its own directory fds, deletes only its own snapshot.
#[test]
fn a_directory_swapped_in_cannot_redirect_snapshot_deletion() {
    let Some(fx) = Fixture::new() else { return };
    let data = subvolume_with_files(&fx, "data", 2);
    let snaps = fx.at("snaps");
    let Hold { dir, held, go } = hold(&fx, "restic");
    let cfg = fx.write_config(&format!(
        "{}[[snapshot]]\nsource = {}\nsnapshot_location = {}\n",
        places(&[&data]),
        toml_str(&data),
        toml_str(snaps.join("data"))
    ));
    let mut run = fx
        .igotchuu()
        .path_prepend(&dir)
        .args(["-c", cfg.to_str().unwrap(), "backup"])
        .spawn();
    run.wait_for_path(&held);
    let snap = fx
        .extra_subvolumes()
        .into_iter()
        .map(|s| fx.at(&s.path))
        .next()
        .expect("the run's snapshot");
    let rel = snap.strip_prefix(&snaps).unwrap().to_owned();
    // snaps → snaps.real; a new real directory `snaps` holds the user's subvolume at that path.
    let real = fx.at("snaps.real");
    std::fs::rename(&snaps, &real).unwrap();
    std::fs::create_dir_all(snaps.join(rel.parent().unwrap())).unwrap();
    fx.create_subvolume(&format!("snaps/{}", rel.display()));
    fx.write_file(
        &format!("snaps/{}/precious.txt", rel.display()),
        "the user's data\n",
    );

    touch(&go);
    let out = run.wait(RUN_TIMEOUT);
    out.assert_code(0);
    assert_eq!(
        std::fs::read_to_string(snaps.join(&rel).join("precious.txt")).unwrap(),
        "the user's data\n",
        "the user's subvolume was deleted\n{out}"
    );
    assert!(
        walk(&real).is_empty(),
        "igotchuu's snapshot or its directory is left in the moved directory\n{out}"
    );
    assert_eq!(journal_len(&fx), 0, "the journal keeps a record");
    assert_no_mounts_left(&fx, "after the swap");
}

// ------------------------------------------------------------------------------------------------
// Names chosen by others, shown on the admin's terminal
// ------------------------------------------------------------------------------------------------

/// A file name that sets the window title, clears the screen, turns the text red and starts a
/// new line, when a terminal is handed it as it is.
const HOSTILE_NAME: &str = "x\x1b]0;TITLE\x07\x1b[2J\x1b[31mEVIL\nname";
/// How igotchuu shows it: every control character as `\xNN`.
const HOSTILE_SHOWN: &str = r"x\x1b]0;TITLE\x07\x1b[2J\x1b[31mEVIL\x0aname";

/// restic really reports a file with such a name: it cannot read it (its data block is
/// corrupted on the disk, so even root gets EIO) and sends the name in its JSON error. igotchuu
/// names the file on stderr with every control character escaped, on one line, and nothing it
/// prints holds an ESC or BEL; the backup goes on as restic's partial success (exit 3). D-Bus
/// clients get the name as it is: there it is data, not text for a terminal.
#[test]
fn a_hostile_file_name_is_shown_escaped_never_obeyed() {
    let Some(fx) = bus::setup() else { return };
    let data = subvolume_with_files(&fx, "data", 2);
    let bad = fx.write_unreadable_file(&format!("data/{HOSTILE_NAME}"));
    let bus = Bus::start(Policy::Shipped);
    let rec = Recorder::start(&bus);
    let cfg = fx.write_config(&places(&[&data]));
    let out = bus
        .igotchuu(&fx)
        .args(["-c", cfg.to_str().unwrap(), "-v", "backup"])
        .run();
    out.assert_code(3);
    let all = out.all();
    for (byte, name) in [('\x1b', "ESC"), ('\x07', "BEL"), ('\u{9b}', "CSI")] {
        assert!(!all.contains(byte), "igotchuu printed a raw {name}\n{out}");
    }
    let shown = format!("{}/{HOSTILE_SHOWN}", data.display());
    out.assert_stderr_contains(&format!(
        "\nigotchuu: error during archival of {shown}: read {shown}: input/output error\n"
    ));
    // The newline in the name did not start a line of its own.
    assert!(
        !all.lines().any(|l| l.starts_with("name")),
        "a line begins inside the file name\n{out}"
    );
    out.assert_stderr_contains(
        "igotchuu: backup finished: restic exited 3: snapshot written, but some files could not be read",
    );
    out.assert_stdout_contains("Backup complete.");
    fx.assert_no_snapshot_left("after the backup");
    assert_no_mounts_left(&fx, "after the backup");
    assert_eq!(fx.restic_snapshots().len(), 1, "restic wrote its snapshot");

    let msgs = rec.wait_released(1);
    let errors: Vec<(String, String, String)> = bus::igotchuu_signals(&msgs)
        .iter()
        .filter(|m| bus::member(m) == "Error")
        .map(|m| m.body().deserialize().expect("typed Error"))
        .collect();
    let raw = bad.to_str().unwrap();
    assert!(
        errors
            .iter()
            .any(|(_, during, item)| during == "archival" && item == raw),
        "no D-Bus Error with the raw name: {errors:?}"
    );
}

// ------------------------------------------------------------------------------------------------
// A lock file or state directory others could take
// ------------------------------------------------------------------------------------------------

/// The standard config keys with `lock_file` and `state_dir` replaced.
fn keys_with(fx: &Fixture, lock: &Path, state: &Path) -> String {
    fx.standard_keys()
        .replace(
            &format!("lock_file = {}", toml_str(&fx.lock_file)),
            &format!("lock_file = {}", toml_str(lock)),
        )
        .replace(
            &format!("state_dir = {}", toml_str(&fx.state_dir)),
            &format!("state_dir = {}", toml_str(state)),
        )
}

/// An unprivileged process (uid and gid 65534, no groups) holding an flock on `lock` with
/// `flock -n`, after running `script` (sh, `$1` is the lock's path). Lets go when dropped: its
/// stdin closes and its `cat` ends.
struct Holder {
    child: std::process::Child,
}

impl Holder {
    fn start(lock: &Path, script: &str) -> Holder {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let mut child = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(["flock", "-n", "-x"])
            .arg(lock)
            .args([
                "sh",
                "-c",
                &format!("{script}\necho locked\nexec cat"),
                "sh",
            ])
            .arg(lock)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start setpriv flock");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped");
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        if line != "locked\n" {
            drop(child.stdin.take());
            let out = child.wait_with_output().expect("wait");
            panic!(
                "the unprivileged holder could not lock {}: {:?} {}",
                lock.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Holder { child }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// `lock_file` or `state_dir` in a sticky world-writable directory (like /tmp or /dev/shm) is
/// refused before anything happens, with exit 20 and a message naming the path, the directory
/// at fault with its owner and mode, why, and what to do. Here another user really got there
/// first: they created the lock file with `1; reboot` in it and hold its flock. igotchuu neither
/// waits for them nor shows what they wrote, and `igotchuu check` reports both places as FAIL.
/// With the two keys moved where the message says, the same config backs up.
#[test]
fn a_lock_file_or_state_dir_others_could_take_is_refused() {
    let Some(fx) = Fixture::new() else { return };
    if !have(&["setpriv", "flock"]) {
        return;
    }
    let data = subvolume_with_files(&fx, "data", 2);
    let shared = fx.private_dir.join("shared");
    std::fs::create_dir(&shared).unwrap();
    chmod(&shared, 0o1777);
    let lock = shared.join("igotchuu.lock");
    let _holder = Holder::start(&lock, "printf '1; reboot\\n' > \"$1\"");
    assert_eq!(std::fs::metadata(&lock).unwrap().uid(), NOBODY);

    let state = shared.join("state");
    let sticky = |p: &Path, what: &str, key: &str, default: &str, name: &str, risk: &str| {
        format!(
            "cannot use {what} {p}: the directory {d} (owner root, mode 1777) is writable by everyone, like /tmp and /dev/shm: its sticky bit only keeps users from deleting each other's files, any user can create {name} there before igotchuu does and {risk}; set `{key}` to a path in a directory only root can write, such as {default} (the default)",
            p = p.display(),
            d = shared.display()
        )
    };
    let lock_words = sticky(
        &lock,
        "the lock file",
        "lock_file",
        "/run/igotchuu.lock",
        "igotchuu.lock",
        "take or replace the lock, and so stop every backup",
    );
    let state_words = sticky(
        &state,
        "the state directory",
        "state_dir",
        "/var/lib/igotchuu",
        "state",
        "take or replace the journal that decides which snapshots igotchuu deletes",
    );
    let pl = places(&[&data]);
    let cases = [
        (
            "lock_file",
            keys_with(&fx, &lock, &fx.state_dir),
            lock_words.clone(),
        ),
        (
            "state_dir",
            keys_with(&fx, &fx.lock_file, &state),
            state_words.clone(),
        ),
    ];
    let before = fx.probe_next_subvolume_id();
    for (what, keys, words) in &cases {
        let cfg = fx.write_config_raw(&format!("{keys}{pl}"));
        let out = fx.run(&cfg, &["backup"]);
        out.assert_code(20);
        assert_eq!(
            out.stderr,
            format!("igotchuu: error: {words}\n"),
            "{what}\n{out}"
        );
        assert!(out.stdout.is_empty(), "{what}\n{out}");
    }
    let both = fx.write_config_raw(&format!("{}{pl}", keys_with(&fx, &lock, &state)));
    let out = fx.run(&both, &["check"]);
    out.assert_code(20);
    out.assert_stdout_contains(&format!("\nFAIL: {lock_words}\n"));
    out.assert_stdout_contains(&format!("\nFAIL: {state_words}\n"));
    assert!(!out.all().contains("reboot"), "{out}");

    // Nothing happened, and the other user's file is as they left it.
    assert_eq!(
        fx.probe_next_subvolume_id(),
        before + 1,
        "a refused run created a subvolume"
    );
    fx.assert_no_snapshot_left("after the refusals");
    assert_no_mounts_left(&fx, "after the refusals");
    assert!(!state.exists(), "a refused run created its state dir");
    assert!(!fx.state_dir.exists(), "a refused run created a state dir");
    assert!(!fx.lock_file.exists(), "a refused run took the other lock");
    assert_eq!(std::fs::read_to_string(&lock).unwrap(), "1; reboot\n");
    assert!(fx.restic_snapshots().is_empty());

    // The advice works: with both keys in a directory only root can write, it backs up.
    let cfg = fx.write_config(&pl);
    let out = fx.run(&cfg, &["check"]);
    out.assert_code(0);
    out.assert_stdout_contains(&format!(
        "ok:   lock_file {}: only root can write it and the directories on the way",
        fx.lock_file.display()
    ));
    fx.run(&cfg, &["backup"]).assert_code(0);
    assert_eq!(fx.restic_snapshots().len(), 1);
    fx.assert_no_snapshot_left("after the backup");
}

/// The lock file is root's, in a directory only root can write, but readable by everyone (as an
/// older igotchuu made it) and not holding a PID: here `1; reboot`. An unprivileged user opens it
/// for reading and holds its flock. The run is refused (exit 20) with a message that names the
/// file and how to find the holder, and never what the file says (an admin would paste it into
/// `kill -INT …`). igotchuu makes the file readable by root alone on the way, so no one else can
/// take it again; once the holder lets go, the next run backs up and leaves the file empty.
#[test]
fn a_lock_held_by_another_user_shows_no_pid_and_none_of_its_content() {
    let Some(fx) = Fixture::new() else { return };
    if !have(&["setpriv", "flock"]) {
        return;
    }
    let data = subvolume_with_files(&fx, "data", 2);
    let lock = fx.lock_file.clone();
    std::fs::write(&lock, "1; reboot\n").unwrap();
    chmod(&lock, 0o644);
    let cfg = fx.write_config(&places(&[&data]));
    let before = fx.probe_next_subvolume_id();
    let holder = Holder::start(&lock, ":");

    let out = fx.run(&cfg, &["backup"]);
    out.assert_code(20);
    assert_eq!(
        out.stderr,
        format!(
            "igotchuu: error: another igotchuu backup is running, or another process holds {p} (the file names no PID); wait for it to finish, or find the holder with `fuser -v {p}`\n",
            p = lock.display()
        ),
        "{out}"
    );
    assert!(!out.all().contains("reboot"), "{out}");
    assert_eq!(
        std::fs::metadata(&lock).unwrap().mode() & 0o7777,
        0o600,
        "the lock file is still readable by others"
    );
    assert_eq!(std::fs::read_to_string(&lock).unwrap(), "1; reboot\n");
    assert_eq!(fx.probe_next_subvolume_id(), before + 1);
    fx.assert_no_snapshot_left("after the refusal");
    assert_no_mounts_left(&fx, "after the refusal");

    // Let go; now the user cannot even open the file again.
    drop(holder);
    let again = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(["flock", "-n", "-x"])
        .arg(&lock)
        .arg("true")
        .output()
        .expect("run setpriv flock");
    assert!(
        !again.status.success()
            && String::from_utf8_lossy(&again.stderr).contains("Permission denied"),
        "another user could open the lock file again: {again:?}"
    );
    fx.run(&cfg, &["backup"]).assert_code(0);
    assert_eq!(std::fs::read_to_string(&lock).unwrap(), "");
    fx.assert_no_snapshot_left("after the backup");
}
