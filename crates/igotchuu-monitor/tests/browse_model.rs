//! The "Browse backups" page's view model, headless (no bus, no GTK): navigation, selection,
//! the question before anything is replaced, and every state of the page (loading, empty,
//! error, progress, done with or without warnings, failed, cancelled). The same model against a
//! real daemon is in tests/browse.rs (browse → restore under Xvfb).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use igotchuu_dbus::{DirEntry, EntryKind, RestoreState, RestoreStatus, SnapshotEntry};
use igotchuu_monitor::browse_model::{
    date_time, file_uri, Answer, Browse, BrowseScreen, Event, Listed, Outcome, Request, Target,
    Warnings,
};

const ID_OLD: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const ID_NEW: &str = "2222222222222222222222222222222222222222222222222222222222222222";

fn snap(id: &str, time: i64, paths: &[&str]) -> SnapshotEntry {
    SnapshotEntry {
        id: id.into(),
        time,
        hostname: "host".into(),
        paths: paths.iter().map(|p| p.to_string()).collect(),
    }
}

fn entry(name: &str, kind: EntryKind, size: u64) -> DirEntry {
    DirEntry {
        name: name.into(),
        kind,
        mode: 0o644,
        size,
        mtime: 0,
    }
}

fn nothing_exists(_: &Path) -> bool {
    false
}

/// A model with two snapshots loaded, the newer one opened at /home/a and listed.
fn at_home() -> Browse {
    let mut b = Browse::new("/home/a/", 0);
    assert_eq!(
        b.load(""),
        Request::Snapshots {
            profile: String::new()
        }
    );
    b.apply(Event::Snapshots {
        profile: String::new(),
        result: Ok(vec![
            snap(ID_OLD, 1_000, &["/home"]),
            snap(ID_NEW, 90_000, &["/home"]),
        ]),
    });
    let req = b.choose_snapshot(ID_NEW);
    assert_eq!(
        req,
        Some(Request::List {
            snapshot: ID_NEW.into(),
            path: "/home/a".into()
        })
    );
    b.apply(Event::Listing {
        snapshot: ID_NEW.into(),
        path: "/home/a".into(),
        result: Ok(vec![
            entry("notes.txt", EntryKind::File, 2048),
            entry("Documents", EntryKind::Dir, 0),
            entry("fifo", EntryKind::Other, 0),
            entry("link", EntryKind::Symlink, 0),
        ]),
    });
    b
}

fn folder(b: &Browse) -> igotchuu_monitor::browse_model::FolderView {
    match b.screen(100_000) {
        BrowseScreen::Folder(f) => f,
        other => panic!("not a folder: {other:?}"),
    }
}

#[test]
fn snapshots_load_newest_first_by_date_or_say_empty_or_why_not() {
    let mut b = Browse::new("/home/a", 3600);
    b.load("");
    assert_eq!(b.screen(0).tag(), "snapshots:loading");
    b.apply(Event::Snapshots {
        profile: String::new(),
        result: Ok(vec![
            snap(ID_OLD, 0, &["/home"]),
            snap(ID_NEW, 86_400 + 120, &["/home"]),
        ]),
    });
    let BrowseScreen::Snapshots(v) = b.screen(86_400 + 3 * 3600) else {
        panic!()
    };
    let Listed::Rows(rows) = v.rows else { panic!() };
    // Local time one hour east of UTC.
    assert_eq!(rows[0].title, "2 Jan 1970, 01:02");
    assert_eq!(rows[0].subtitle, "2 hours ago · host · 22222222");
    assert_eq!(rows[1].title, "1 Jan 1970, 01:00");

    // An answer for another profile than the one asked last is dropped.
    b.load("home");
    b.apply(Event::Snapshots {
        profile: String::new(),
        result: Ok(vec![]),
    });
    assert_eq!(b.screen(0).tag(), "snapshots:loading");
    b.apply(Event::Snapshots {
        profile: "home".into(),
        result: Ok(vec![]),
    });
    assert_eq!(b.screen(0).tag(), "snapshots:empty");
    b.load("home");
    b.apply(Event::Snapshots {
        profile: "home".into(),
        result: Err("Not allowed: polkit said no".into()),
    });
    let BrowseScreen::Snapshots(v) = b.screen(0) else {
        panic!()
    };
    assert_eq!(v.rows, Listed::Failed("Not allowed: polkit said no".into()));
    assert_eq!(b.screen(0).tag(), "snapshots:failed");
}

#[test]
fn a_snapshot_opens_at_home_or_at_the_root_when_home_is_not_in_it() {
    let b = at_home();
    let f = folder(&b);
    assert_eq!(f.path, "/home/a");
    assert_eq!(f.snapshot, "Backup of 2 Jan 1970, 01:00");
    assert_eq!(
        f.crumbs,
        [
            ("/".to_owned(), "/".to_owned()),
            ("home".to_owned(), "/home".to_owned()),
            ("a".to_owned(), "/home/a".to_owned())
        ]
    );
    // Folders first, then by name.
    let Listed::Rows(rows) = f.entries else {
        panic!()
    };
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["Documents", "fifo", "link", "notes.txt"]);
    assert_eq!(rows[3].detail, "2.0 KiB");
    assert!(!rows[1].selectable, "a fifo is never restored");

    let mut b = Browse::new("/home/a", 0);
    b.load("");
    b.apply(Event::Snapshots {
        profile: String::new(),
        result: Ok(vec![snap(ID_OLD, 0, &["/srv/data"])]),
    });
    assert_eq!(
        b.choose_snapshot(&ID_OLD[..8]),
        Some(Request::List {
            snapshot: ID_OLD.into(),
            path: "/".into()
        })
    );
    assert_eq!(b.choose_snapshot("nope"), None);
}

#[test]
fn navigation_opens_folders_goes_up_to_the_root_and_drops_late_answers() {
    let mut b = at_home();
    assert_eq!(b.open("notes.txt"), None, "a file is not opened");
    assert_eq!(b.open("missing"), None);
    assert_eq!(
        b.open("Documents"),
        Some(Request::List {
            snapshot: ID_NEW.into(),
            path: "/home/a/Documents".into()
        })
    );
    assert_eq!(b.screen(0).tag(), "folder:/home/a/Documents:loading:sel0");
    // The home's listing, arriving late, is not shown for Documents.
    b.apply(Event::Listing {
        snapshot: ID_NEW.into(),
        path: "/home/a".into(),
        result: Ok(vec![entry("x", EntryKind::File, 1)]),
    });
    assert_eq!(b.screen(0).tag(), "folder:/home/a/Documents:loading:sel0");
    b.apply(Event::Listing {
        snapshot: ID_NEW.into(),
        path: "/home/a/Documents".into(),
        result: Ok(vec![]),
    });
    assert_eq!(b.screen(0).tag(), "folder:/home/a/Documents:empty:sel0");
    assert_eq!(
        b.up(),
        Some(Request::List {
            snapshot: ID_NEW.into(),
            path: "/home/a".into()
        })
    );
    b.apply(Event::Listing {
        snapshot: ID_NEW.into(),
        path: "/home/a".into(),
        result: Err("no such directory in snapshot 22222222".into()),
    });
    let f = folder(&b);
    assert_eq!(
        f.entries,
        Listed::Failed("no such directory in snapshot 22222222".into())
    );
    assert!(f.can_go_up);
    b.go("/").expect("the root");
    assert!(!folder(&b).can_go_up);
    assert_eq!(b.up(), None, "nothing above /");
    assert_eq!(b.go("relative"), None);
    // Back to the list, which stays loaded.
    b.back_to_snapshots();
    assert_eq!(b.screen(0).tag(), "snapshots:2");
}

#[test]
fn selection_is_per_folder_and_counts_in_the_button() {
    let mut b = at_home();
    assert_eq!(
        folder(&b).restore_label,
        "Select files or folders to restore"
    );
    b.toggle("notes.txt");
    b.toggle("Documents");
    b.toggle("fifo");
    b.toggle("not-listed");
    assert_eq!(b.selected(), ["Documents", "notes.txt"]);
    assert_eq!(folder(&b).restore_label, "Restore 2 items to…");
    assert_eq!(b.screen(0).tag(), "folder:/home/a:4:sel2");
    b.set_selected("Documents", false);
    b.set_selected("notes.txt", true);
    assert_eq!(b.selected(), ["notes.txt"]);
    assert_eq!(folder(&b).restore_label, "Restore 1 item to…");
    b.open("Documents");
    assert!(b.selected().is_empty(), "another folder, a new selection");
}

#[test]
fn a_target_without_the_names_restores_at_once_and_never_overwrites() {
    let mut b = at_home();
    assert_eq!(
        b.restore_to(Target::InPlace, &nothing_exists),
        None,
        "nothing selected"
    );
    b.toggle("notes.txt");
    b.toggle("Documents");
    let req = b.restore_to(Target::Folder("/tmp/x/".into()), &nothing_exists);
    assert_eq!(
        req,
        Some(Request::Restore {
            snapshot: ID_NEW.into(),
            paths: vec!["/home/a/Documents".into(), "/home/a/notes.txt".into()],
            target: Some("/tmp/x".into()),
            overwrite: false,
        })
    );
    assert_eq!(b.screen(0).tag(), "restoring");
}

#[test]
fn an_existing_name_asks_keep_both_or_replace_and_only_replace_overwrites() {
    let existing: HashSet<PathBuf> = [PathBuf::from("/home/a/notes.txt")].into();
    let exists = |p: &Path| existing.contains(p);

    // The original folder picked in the file chooser is the in-place restore.
    let mut b = at_home();
    b.toggle("notes.txt");
    assert_eq!(
        b.restore_to(Target::Folder("/home/a".into()), &exists),
        None
    );
    assert_eq!(b.screen(0).tag(), "folder:/home/a:4:ask");
    let q = folder(&b).question.expect("a question");
    assert_eq!(q.conflicts, ["notes.txt"]);
    assert!(
        q.body.starts_with("/home/a already has notes.txt."),
        "{q:?}"
    );
    // While asking, nothing else starts and the selection stays.
    assert_eq!(b.restore_to(Target::InPlace, &exists), None);
    b.toggle("Documents");
    assert_eq!(b.selected(), ["notes.txt"]);
    assert_eq!(b.answer(Answer::KeepBoth), Some(notes_in_place(false)));

    let mut b = at_home();
    b.toggle("notes.txt");
    b.restore_to(Target::InPlace, &exists);
    assert_eq!(b.answer(Answer::Replace), Some(notes_in_place(true)));

    let mut b = at_home();
    b.toggle("notes.txt");
    b.restore_to(Target::InPlace, &exists);
    assert_eq!(b.answer(Answer::Cancel), None);
    assert_eq!(b.screen(0).tag(), "folder:/home/a:4:sel1");
    assert_eq!(b.answer(Answer::Replace), None, "no question pending");
}

/// The restore of /home/a/notes.txt in place.
fn notes_in_place(overwrite: bool) -> Request {
    Request::Restore {
        snapshot: ID_NEW.into(),
        paths: vec!["/home/a/notes.txt".into()],
        target: None,
        overwrite,
    }
}

fn status(state: RestoreState, done: u64, placed: &[&str], message: &str) -> RestoreStatus {
    RestoreStatus {
        state,
        files_total: 4,
        files_done: done,
        bytes_total: 4096,
        bytes_done: done * 1024,
        message: message.into(),
        placed: placed.iter().map(|p| p.to_string()).collect(),
    }
}

/// A model whose restore of notes.txt runs as job "j1".
fn running() -> Browse {
    let mut b = at_home();
    b.toggle("notes.txt");
    b.restore_to(Target::InPlace, &nothing_exists)
        .expect("starts");
    b.apply(Event::Started(Ok("j1".into())));
    b
}

#[test]
fn progress_then_done_with_where_the_files_went() {
    let mut b = running();
    let BrowseScreen::Restoring(p) = b.screen(0) else {
        panic!()
    };
    assert_eq!(p.fraction, None, "not counted yet: the bar pulses");
    assert!(p.can_cancel);
    b.apply(Event::Status {
        job: "j1".into(),
        result: Ok(status(RestoreState::Running, 1, &[], "")),
    });
    // Another job's status is not ours.
    b.apply(Event::Status {
        job: "j2".into(),
        result: Ok(status(RestoreState::Done, 4, &["/elsewhere"], "")),
    });
    let BrowseScreen::Restoring(p) = b.screen(0) else {
        panic!()
    };
    assert_eq!(p.fraction, Some(0.25));
    assert_eq!(p.files, "1 of 4 files");
    assert_eq!(p.bytes, "1.0 KiB of 4.0 KiB");
    assert_eq!(b.screen(0).tag(), "restoring:progress");
    b.apply(Event::Status {
        job: "j1".into(),
        result: Ok(status(
            RestoreState::Done,
            4,
            &["/home/a/notes.txt.restored-22222222"],
            "",
        )),
    });
    let BrowseScreen::Finished(f) = b.screen(0) else {
        panic!()
    };
    assert_eq!(f.outcome, Outcome::Done);
    assert_eq!(f.body, "Restored 4 of 4 files, 4.0 KiB of 4.0 KiB.");
    assert_eq!(b.placed(), ["/home/a/notes.txt.restored-22222222"]);
    assert_eq!(b.screen(0).tag(), "done");
    b.dismiss();
    assert_eq!(b.screen(0).tag(), "folder:/home/a:4:sel0");
}

/// A done restore's warnings (RestoreJob.Warnings) stay with its result and are shown under
/// it; when the daemon could not be asked, the page says it does not know rather than nothing.
#[test]
fn a_done_restore_shows_its_warnings_or_that_they_are_unknown() {
    const DROPPED: &str = "restic dump gave an entry restic ls did not list; dropped";
    let mut b = running();
    b.apply(Event::Done {
        job: "j1".into(),
        status: status(RestoreState::Done, 3, &["/home/a/notes.txt"], ""),
        warnings: Warnings::Said(vec![DROPPED.into()]),
    });
    let BrowseScreen::Finished(f) = b.screen(0) else {
        panic!()
    };
    assert_eq!(f.outcome, Outcome::Done);
    assert_eq!(f.body, "Restored 3 of 4 files, 3.0 KiB of 4.0 KiB.");
    assert_eq!(f.warnings, [DROPPED]);
    assert_eq!(b.screen(0).tag(), "done:warn1");
    // Leaving the result leaves its warnings behind.
    b.dismiss();
    assert_eq!(b.screen(0).tag(), "folder:/home/a:4:sel0");

    // Another job's end is not ours.
    let mut b = running();
    b.apply(Event::Done {
        job: "j2".into(),
        status: status(RestoreState::Done, 4, &[], ""),
        warnings: Warnings::Said(vec![DROPPED.into()]),
    });
    assert_eq!(b.screen(0).tag(), "restoring");

    // None said (a daemon older than the method says none either): a clean result.
    b.apply(Event::Done {
        job: "j1".into(),
        status: status(RestoreState::Done, 4, &[], ""),
        warnings: Warnings::none(),
    });
    let BrowseScreen::Finished(f) = b.screen(0) else {
        panic!()
    };
    assert!(f.warnings.is_empty(), "{f:?}");
    assert_eq!(b.screen(0).tag(), "done");

    let mut b = running();
    b.apply(Event::Done {
        job: "j1".into(),
        status: status(RestoreState::Done, 4, &[], ""),
        warnings: Warnings::Unknown("Not allowed: not your job".into()),
    });
    let BrowseScreen::Finished(f) = b.screen(0) else {
        panic!()
    };
    assert_eq!(
        f.warnings,
        [
            "Whether any file was left out is not known: the daemon did not say (Not allowed: not \
          your job)."
        ]
    );
    assert_eq!(b.screen(0).tag(), "done:warn1");
}

#[test]
fn cancel_is_asked_once_and_ends_cancelled() {
    let mut b = running();
    assert_eq!(b.cancel(), Some(Request::Cancel { job: "j1".into() }));
    assert_eq!(b.cancel(), None, "asked already");
    let BrowseScreen::Restoring(p) = b.screen(0) else {
        panic!()
    };
    assert_eq!(p.title, "Cancelling the restore…");
    assert!(!p.can_cancel);
    // A refused cancel lets the user try again and says why.
    b.apply(Event::CancelFailed {
        job: "j1".into(),
        error: "Not allowed: not your job".into(),
    });
    let BrowseScreen::Restoring(p) = b.screen(0) else {
        panic!()
    };
    assert_eq!(
        p.notice.as_deref(),
        Some("Cannot cancel: Not allowed: not your job")
    );
    assert_eq!(b.cancel(), Some(Request::Cancel { job: "j1".into() }));
    b.apply(Event::Status {
        job: "j1".into(),
        result: Ok(status(RestoreState::Cancelled, 2, &[], "cancelled")),
    });
    let BrowseScreen::Finished(f) = b.screen(0) else {
        panic!()
    };
    assert_eq!(f.outcome, Outcome::Cancelled);
    assert!(f.body.contains("Nothing half written"), "{f:?}");
    assert_eq!(b.screen(0).tag(), "cancelled");
}

#[test]
fn failures_say_why_a_refused_restore_a_failed_job_a_lost_job() {
    let mut b = at_home();
    b.toggle("notes.txt");
    b.restore_to(Target::InPlace, &nothing_exists);
    b.apply(Event::Started(Err("Not allowed: polkit said no".into())));
    let BrowseScreen::Finished(f) = b.screen(0) else {
        panic!()
    };
    assert_eq!(f.outcome, Outcome::Failed);
    assert_eq!(f.title, "The restore did not start");
    assert_eq!(f.body, "Not allowed: polkit said no");
    assert!(b.placed().is_empty());

    let mut b = running();
    b.apply(Event::Status {
        job: "j1".into(),
        result: Ok(status(
            RestoreState::Failed,
            1,
            &[],
            "no space left on device",
        )),
    });
    let BrowseScreen::Finished(f) = b.screen(0) else {
        panic!()
    };
    assert_eq!(
        (f.outcome, f.body.as_str()),
        (Outcome::Failed, "no space left on device")
    );

    let mut b = running();
    b.apply(Event::Status {
        job: "j1".into(),
        result: Err("igotchuu is not installed or not running".into()),
    });
    let BrowseScreen::Finished(f) = b.screen(0) else {
        panic!()
    };
    assert!(f.body.starts_with("Lost track of the restore"), "{f:?}");
    assert_eq!(b.screen(0).tag(), "failed");
}

#[test]
fn nothing_moves_while_a_restore_runs() {
    let mut b = running();
    assert_eq!(b.open("Documents"), None);
    assert_eq!(b.up(), None);
    b.toggle("Documents");
    assert_eq!(b.selected(), ["notes.txt"]);
    assert_eq!(b.restore_to(Target::InPlace, &nothing_exists), None);
}

#[test]
fn dates_and_uris() {
    assert_eq!(date_time(0, 0), "1 Jan 1970, 00:00");
    // 2024-02-29 12:34:56 UTC, leap day.
    assert_eq!(date_time(1_709_210_096, 0), "29 Feb 2024, 12:34");
    assert_eq!(date_time(1_709_210_096, -13 * 3600), "28 Feb 2024, 23:34");
    assert_eq!(
        file_uri("/home/a/my notes#1 ü.txt"),
        "file:///home/a/my%20notes%231%20%C3%BC.txt"
    );
}
