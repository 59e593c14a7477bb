//! The "Browse backups" page for real (issue 20): `igotchuu daemon` on a private system bus with
//! the shipped policy and a real polkitd, a real backup made by igotchuu, and the monitor under
//! Xvfb run by a throwaway user OUTSIDE the group `igotchuu` (their own session bus and X
//! client, uid and gid, no supplementary groups). The user chooses the backup, opens their
//! home, selects a file and a folder, asks for "Restore to…", is asked "keep both or replace?"
//! (both still exist), keeps both, follows the progress, and gets the files back byte for byte,
//! owned by them: the file beside its current version, the folder merged into the current one.
//! Then they restore a folder of which restic's listing and its data disagree, and the page
//! says, under the result, that an entry was dropped. Screenshots of each page go to
//! target/monitor-screenshots/browse-*.png.
//!
//! Two fakes: a restic wrapper that holds `restic dump` (the data of a restore) until the test
//! says go, so that the progress page is on screen for its screenshot, and leaves one file of
//! ~/Photos out of `restic ls`, so that `restic dump` gives an entry the listing did not have
//! (real restic cannot be made to disagree with itself on demand; every other restic call
//! passes straight through); and a stand-in for the file manager's
//! org.freedesktop.FileManager1 on the desktop's session bus (no file manager is installed
//! here), which writes down the URIs "Show in Files" asked it to show. It is this test binary
//! run as the desktop's user (a session bus refuses root), test `file_manager_stand_in`.

// The tool's harness: the test kit crate (crates/igotchuu-testkit).
use igotchuu_testkit as common;
mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::bus::{self, Bus, Extras, Policy, Polkitd, TempUser};
use common::{places, sh_quote, sh_wait_for, touch};
use igotchuu_monitor::browse_model::file_uri;
use support::desktop::{assert_distinct_screenshots, screenshot_dir, Desktop};
use support::{daemon_from, noise, tool_built};

/// Set to a file: `file_manager_stand_in` serves FileManager1 and writes each ShowItems' URIs
/// there, one a line.
const STAND_IN: &str = "IGOTCHUU_TEST_FILE_MANAGER_LOG";
const FILE_MANAGER: &str = "org.freedesktop.FileManager1";

struct FileManager {
    log: PathBuf,
}

#[zbus::interface(name = "org.freedesktop.FileManager1")]
impl FileManager {
    fn show_items(&self, uris: Vec<String>, _startup_id: &str) -> zbus::fdo::Result<()> {
        let tmp = self.log.with_extension("tmp");
        std::fs::write(&tmp, uris.join("\n") + "\n")
            .and_then(|()| std::fs::rename(&tmp, &self.log))
            .map_err(|e| zbus::fdo::Error::Failed(e.to_string()))
    }
}

/// Not a test: the stand-in file manager the browse test starts on its desktop (see the
/// module's doc). Returns at once unless [`STAND_IN`] is set.
#[test]
#[ignore = "a helper process of the browse test"]
fn file_manager_stand_in() {
    let Some(log) = std::env::var_os(STAND_IN) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let _conn = zbus::connection::Builder::session()
            .and_then(|b| {
                b.serve_at(
                    "/org/freedesktop/FileManager1",
                    FileManager { log: log.into() },
                )
            })
            .and_then(|b| b.name(FILE_MANAGER))
            .expect("the session bus")
            .build()
            .await
            .expect("serve FileManager1");
        std::future::pending::<()>().await;
    });
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

fn chown_r(p: &Path, u: &TempUser) {
    common::bus::must(
        std::process::Command::new("chown")
            .arg("-R")
            .arg(format!("{}:{}", u.ids.uid, u.ids.gid))
            .arg(p),
    );
}

/// The names in `dir` starting with `prefix`, other than `prefix` itself, sorted.
fn beside(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            n.starts_with(prefix) && n != prefix
        })
        .collect();
    v.sort();
    v
}

/// One story from the backup to "Show in Files", in the order a user goes through it (long on
/// purpose: each step needs the state the one before left).
#[test]
fn a_user_outside_the_group_browses_and_restores_their_files_in_the_window() {
    if !tool_built() {
        return;
    }
    let Some(fx) = bus::setup() else { return };
    if !common::have(&["setpriv", "useradd", "userdel", "chown"]) {
        return;
    }
    let a = TempUser::create("brw", &[]);
    // The user must reach their home on the fixture's filesystem, as on a real disk.
    chmod(&fx.scratch.root, 0o711);
    chmod(&fx.mnt, 0o755);
    let data = fx.create_subvolume("data");
    chmod(&data, 0o755);
    let notes = noise(100_000);
    let report = noise(3 << 20);
    fx.write_file("data/home/a/notes.txt", &notes);
    fx.write_file("data/home/a/Documents/report.bin", &report);
    fx.write_file("data/home/a/Documents/todo.txt", "buy milk\n");
    fx.write_file("data/home/a/Photos/a.jpg", "a");
    fx.write_file("data/home/a/Photos/b.jpg", "b");
    let home = fx.at("data/home/a");
    chown_r(&home, &a);
    chmod(&fx.at("data/home/a/notes.txt"), 0o640);
    let cfg = fx.write_config(&places(&[&data]));
    let bus = Bus::start_with(
        Policy::Shipped,
        Extras {
            system_policies: true,
            ..Extras::default()
        },
    );
    let Some(_polkitd) = Polkitd::start(&bus) else {
        return;
    };
    bus.igotchuu(&fx)
        .args(["-c", cfg.to_str().expect("utf-8"), "backup"])
        .run()
        .assert_code(0);
    let snaps = fx.restic_snapshots();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    let id = snaps[0]["id"].as_str().expect("id").to_owned();
    // After the backup: notes.txt changed, report.bin deleted; both names still exist, so a
    // restore in place must ask.
    std::fs::write(home.join("notes.txt"), "changed since\n").expect("write");
    std::fs::remove_file(home.join("Documents/report.bin")).expect("rm");
    std::fs::remove_dir_all(home.join("Photos")).expect("rm -r");

    // restic dump (a restore's data) waits for `go`; restic ls leaves Photos/b.jpg out (so
    // restoring Photos, whose dump still carries it, drops it with a warning); nothing else is
    // touched.
    let (held, go) = (fx.path("dump-held"), fx.path("dump-go"));
    let wrapper = fx.restic_wrapper(&format!(
        "case \" $* \" in *\" dump \"*) touch {}\n{};;\n\
         *\" ls \"*) out=$({real} \"$@\"); \
         printf '%s\\n' \"$out\" | {{ grep -v '/Photos/b.jpg\"' || true; }}; exit 0;; esac",
        sh_quote(&held),
        sh_wait_for(&go),
        real = sh_quote(&fx.restic_bin),
    ));
    let _daemon = daemon_from(bus.igotchuu(&fx).path_prepend(&wrapper), &bus, &cfg);

    let Some(mut desk) = Desktop::start_as(Some((a.ids.uid, a.ids.gid))) else {
        return;
    };
    desk.start_monitor_with(&bus, &[], &[("HOME", &home)]);
    let window = desk.window();
    let dir = screenshot_dir();
    let mut shots: Vec<(&str, PathBuf)> = Vec::new();
    // The status needs the group; the browse page does not.
    desk.wait_for_screen("not-allowed", |s| s == "not-allowed");
    desk.activate("show-browse");
    desk.wait_for_browse("one backup", |s| s == "snapshots:1");
    shots.push((
        "snapshots",
        desk.screenshot(&window, &dir.join("browse-snapshots.png")),
    ));

    desk.activate_with("browse-snapshot", &format!("'{id}'"));
    let at = format!("folder:{}:", home.display());
    desk.wait_for_browse("the home, listed", |s| s == format!("{at}3:sel0"));
    desk.activate_with("browse-select", "('notes.txt', true)");
    desk.activate_with("browse-select", "('Documents', true)");
    desk.wait_for_browse("two selected", |s| s == format!("{at}3:sel2"));
    shots.push((
        "folder",
        desk.screenshot(&window, &dir.join("browse-folder.png")),
    ));

    // "Restore to…": the folder chooser, opened at the original place.
    desk.activate("browse-restore");
    desk.wait_until("the Restore to chooser", |d| {
        !d.windows_titled("Restore to").is_empty()
    });
    shots.push((
        "chooser",
        desk.screenshot("root", &dir.join("browse-restore-to.png")),
    ));
    // The original place, as the chooser's "Restore Here" on it would give (the chooser is
    // closed by it): both names exist, so the page asks.
    desk.activate_with("browse-restore-to", &format!("'{}'", home.display()));
    desk.wait_for_browse("the question", |s| s == format!("{at}3:ask"));
    assert!(
        desk.windows_titled("Restore to").is_empty(),
        "the chooser closed"
    );
    shots.push((
        "question",
        desk.screenshot("root", &dir.join("browse-keep-or-replace.png")),
    ));
    desk.activate_with("browse-answer", "'keep'");
    desk.wait_for_browse("the restore running", |s| s.starts_with("restoring"));
    assert!(
        common::wait_for_path(&held, common::WAIT_TIMEOUT),
        "restic dump never ran"
    );
    desk.wait_for_browse("the restore counted", |s| s == "restoring:progress");
    shots.push((
        "progress",
        desk.screenshot(&window, &dir.join("browse-progress.png")),
    ));
    touch(&go);
    desk.wait_for_browse("the restore done", |s| s == "done");
    shots.push((
        "done",
        desk.screenshot(&window, &dir.join("browse-done.png")),
    ));
    assert_distinct_screenshots(&shots);

    // What the user got: the current versions untouched, the backup's beside them, byte for
    // byte, owned by the user, with the recorded mode.
    assert_eq!(
        std::fs::read(home.join("notes.txt")).expect("read"),
        b"changed since\n"
    );
    let notes_back = beside(&home, "notes.txt");
    assert_eq!(notes_back.len(), 1, "{notes_back:?}");
    assert_eq!(std::fs::read(&notes_back[0]).expect("read"), notes);
    let m = std::fs::metadata(&notes_back[0]).expect("stat");
    assert_eq!((m.uid(), m.gid()), (a.ids.uid, a.ids.gid));
    assert_eq!(m.mode() & 0o7777, 0o640);
    // A folder that exists is merged into: what is gone comes back under its name, what is
    // there gets the restored copy beside it.
    assert!(beside(&home, "Documents").is_empty(), "merged, not beside");
    let docs = home.join("Documents");
    assert_eq!(
        std::fs::read(docs.join("report.bin")).expect("read"),
        report
    );
    assert_eq!(
        std::fs::metadata(docs.join("report.bin"))
            .expect("stat")
            .uid(),
        a.ids.uid
    );
    assert_eq!(
        std::fs::read(docs.join("todo.txt")).expect("read"),
        b"buy milk\n"
    );
    let todo_back = beside(&docs, "todo.txt");
    assert_eq!(todo_back.len(), 1, "{todo_back:?}");
    assert_eq!(std::fs::read(&todo_back[0]).expect("read"), b"buy milk\n");

    // "Show in Files": the file manager is asked to show exactly the restored entries.
    let shown = desk.path("runtime/show-items.log");
    let mut fm = desk.cmd(
        std::env::current_exe()
            .expect("the test binary")
            .to_str()
            .expect("utf-8"),
    );
    fm.args([
        "--ignored",
        "--exact",
        "file_manager_stand_in",
        "--test-threads=1",
    ])
    .env(STAND_IN, &shown);
    desk.spawn(fm, "file-manager");
    desk.wait_until("the stand-in file manager on the session bus", |d| {
        let out = common::bus::run(d.cmd("gdbus").args([
            "call",
            "--session",
            "--dest",
            "org.freedesktop.DBus",
            "--object-path",
            "/org/freedesktop/DBus",
            "--method",
            "org.freedesktop.DBus.NameHasOwner",
            FILE_MANAGER,
        ]));
        out.stdout.contains("true")
    });
    desk.activate("browse-show");
    desk.wait_until("ShowItems called", |_| shown.exists());
    let mut got: Vec<String> = std::fs::read_to_string(&shown)
        .expect("read")
        .lines()
        .map(str::to_owned)
        .collect();
    got.sort();
    let mut want = vec![
        file_uri(docs.to_str().expect("utf-8")),
        file_uri(notes_back[0].to_str().expect("utf-8")),
    ];
    want.sort();
    assert_eq!(got, want);
    desk.activate("browse-dismiss");
    desk.wait_for_browse("the folder again", |s| s == format!("{at}3:sel0"));

    // Photos, gone from the disk, back in place: restic dump carries b.jpg, restic ls did not
    // list it, so it is dropped, and the result says so under it.
    desk.activate_with("browse-select", "('Photos', true)");
    desk.wait_for_browse("Photos selected", |s| s == format!("{at}3:sel1"));
    desk.activate_with("browse-restore-to", "''");
    desk.wait_for_browse("the restore done, with a warning", |s| s == "done:warn1");
    shots.push((
        "done-warnings",
        desk.screenshot(&window, &dir.join("browse-done-warnings.png")),
    ));
    assert_distinct_screenshots(&shots);
    let photos = home.join("Photos");
    assert_eq!(std::fs::read(photos.join("a.jpg")).expect("read"), b"a");
    assert!(
        !photos.join("b.jpg").exists(),
        "the dropped entry is not there"
    );
}
