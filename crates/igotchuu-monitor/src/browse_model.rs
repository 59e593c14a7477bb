//! The "Browse backups" page's view model (issue 20): choose a snapshot by date, walk the
//! user's own folders in it (starting at their home), select files or folders, restore them,
//! follow the restore job, then show where the files went. Plain Rust, no GTK, like
//! [`crate::model`]: the page (src/browse_page.rs) only draws a [`BrowseScreen`], and the user's
//! clicks become calls here, which answer with the [`Request`] for the bus client
//! (src/browse_client.rs) to make. What the bus answers comes back as an [`Event`].
//!
//! Decisions:
//! - The selection belongs to one folder: moving to another folder clears it. "The original
//!   place" of the selection is then that folder, which is what "Restore to…" offers first.
//! - Nothing is overwritten without asking: a restore whose target already holds one of the
//!   chosen names stops at a question ([`Question`]): keep both (the restored copy goes beside
//!   the current one, the daemon's default) or replace (the `overwrite` option). A target with
//!   none of the names restores at once, without `overwrite`.
//! - Answers that arrive late (a listing of a folder the user has left, a status of a job that is
//!   no longer shown) are dropped.

use std::collections::BTreeSet;
use std::path::Path;

use igotchuu_dbus::format;
use igotchuu_dbus::{DirEntry, EntryKind, RestoreState, RestoreStatus, SnapshotEntry};

/// What the bus client is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `ListSnapshots(profile)`.
    Snapshots { profile: String },
    /// `ListDirectory(snapshot, path)`.
    List { snapshot: String, path: String },
    /// `Restore(snapshot, paths, target, {overwrite})`, then `RestoreJob.Status` until the job
    /// ends. `target` `None`: in place.
    Restore {
        snapshot: String,
        paths: Vec<String>,
        target: Option<String>,
        overwrite: bool,
    },
    /// `CancelRestore(job)`.
    Cancel { job: String },
}

/// What the bus client answers. Errors are texts for a person (the client words them).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Snapshots {
        profile: String,
        result: Result<Vec<SnapshotEntry>, String>,
    },
    Listing {
        snapshot: String,
        path: String,
        result: Result<Vec<DirEntry>, String>,
    },
    /// The answer to `Restore`: the job id, or why it was refused.
    Started(Result<String, String>),
    /// One reading of the job's `Status` (the client polls until the job ends).
    Status {
        job: String,
        result: Result<RestoreStatus, String>,
    },
    /// The last reading of a job that ended `done`, with its warnings (`RestoreJob.Warnings`,
    /// asked once it is done). One event, not a `Status` and then the warnings, so the page
    /// never shows a done restore as clean and then takes that back.
    Done {
        job: String,
        status: RestoreStatus,
        warnings: Warnings,
    },
    /// The answer to `CancelRestore` when it failed (a success shows in the next status).
    CancelFailed { job: String, error: String },
}

/// What a restore that ended `done` warns about (`RestoreJob.Warnings`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warnings {
    /// The daemon's lines (escaped by it), each an entry dropped where `restic dump` and
    /// `restic ls` disagreed. Empty also from a daemon older than the method: it dropped such
    /// entries without a word, and `igotchuu restore` says nothing then either.
    Said(Vec<String>),
    /// The daemon could not be asked (why, in a person's words): whether anything was dropped
    /// is not known, and the page says so rather than show the restore as clean.
    Unknown(String),
}

impl Warnings {
    pub fn none() -> Warnings {
        Warnings::Said(Vec::new())
    }
}

/// Something asked for and not yet answered, answered, or refused.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Load<T> {
    Loading,
    Ready(T),
    Failed(String),
}

/// Where a restore goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Back where the files were (the folder being browsed).
    InPlace,
    /// Into this folder of the user's.
    Folder(String),
}

/// The answer to "some of these exist there already".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Restore beside the current versions (nothing is replaced).
    KeepBoth,
    /// Replace the current versions (the `overwrite` option).
    Replace,
    Cancel,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Job {
    None,
    Asking {
        target: Target,
        conflicts: Vec<String>,
    },
    /// `Restore` was called; no job id yet.
    Starting,
    Running {
        id: String,
        status: Option<RestoreStatus>,
        cancelling: bool,
        notice: Option<String>,
    },
    /// The job ended (done, failed or cancelled), or `Restore` was refused (`status` None).
    Ended {
        status: Option<RestoreStatus>,
        refusal: Option<String>,
        /// Only a done job has any.
        warnings: Warnings,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Browse {
    profile: String,
    home: String,
    /// The local time's offset from UTC in seconds, for the dates shown.
    utc_offset: i64,
    snapshots: Load<Vec<SnapshotEntry>>,
    snapshot: Option<SnapshotEntry>,
    folder: String,
    listing: Load<Vec<DirEntry>>,
    selected: BTreeSet<String>,
    job: Job,
}

impl Browse {
    /// A page for the user whose home is `home` (an absolute path), showing dates at
    /// `utc_offset` seconds from UTC. Nothing is asked yet: [`Browse::load`].
    pub fn new(home: &str, utc_offset: i64) -> Browse {
        Browse {
            profile: String::new(),
            home: normalise(home),
            utc_offset,
            snapshots: Load::Loading,
            snapshot: None,
            folder: String::from("/"),
            listing: Load::Loading,
            selected: BTreeSet::new(),
            job: Job::None,
        }
    }

    /// (Re)loads the snapshot list of `profile` ("" = the top-level config) and goes back to it.
    pub fn load(&mut self, profile: &str) -> Request {
        self.profile = profile.to_owned();
        self.snapshots = Load::Loading;
        self.snapshot = None;
        self.selected.clear();
        Request::Snapshots {
            profile: profile.to_owned(),
        }
    }

    pub fn profile(&self) -> &str {
        &self.profile
    }

    /// The folder being browsed (in the snapshot, which is also where its files came from).
    pub fn folder(&self) -> &str {
        &self.folder
    }

    /// Opens snapshot `id` at the user's home (or, when the snapshot holds nothing on the way
    /// to it, at `/`). `None` when no such snapshot is listed.
    pub fn choose_snapshot(&mut self, id: &str) -> Option<Request> {
        let Load::Ready(list) = &self.snapshots else {
            return None;
        };
        let snap = list
            .iter()
            .find(|s| s.id == id || s.short_id() == id)?
            .clone();
        let start = start_folder(&snap, &self.home);
        let snapshot = snap.id.clone();
        self.snapshot = Some(snap);
        self.job = Job::None;
        Some(self.visit(start, snapshot))
    }

    /// Back to the list of snapshots (the list stays as loaded).
    pub fn back_to_snapshots(&mut self) {
        self.snapshot = None;
        self.selected.clear();
        self.job = Job::None;
    }

    fn visit(&mut self, path: String, snapshot: String) -> Request {
        self.folder = path.clone();
        self.listing = Load::Loading;
        self.selected.clear();
        Request::List { snapshot, path }
    }

    /// Goes to `path` (a path bar's button) in the chosen snapshot.
    pub fn go(&mut self, path: &str) -> Option<Request> {
        let snapshot = self.snapshot.as_ref()?.id.clone();
        if self.busy() || !path.starts_with('/') {
            return None;
        }
        Some(self.visit(normalise(path), snapshot))
    }

    /// Opens the sub-folder `name` of the folder shown.
    pub fn open(&mut self, name: &str) -> Option<Request> {
        let Load::Ready(entries) = &self.listing else {
            return None;
        };
        entries
            .iter()
            .find(|e| e.name == name && e.kind == EntryKind::Dir)?;
        let path = join(&self.folder, name);
        self.go(&path)
    }

    /// The parent folder; `None` at `/`.
    pub fn up(&mut self) -> Option<Request> {
        let parent = Path::new(&self.folder).parent()?.to_str()?.to_owned();
        self.go(&parent)
    }

    /// Selects or unselects `name` of the folder shown. Only files, folders and symlinks can
    /// be chosen (devices, fifos and sockets are never restored).
    pub fn toggle(&mut self, name: &str) {
        let Load::Ready(entries) = &self.listing else {
            return;
        };
        let restorable = entries
            .iter()
            .any(|e| e.name == name && e.kind != EntryKind::Other);
        if !restorable || self.busy() {
            return;
        }
        if !self.selected.remove(name) {
            self.selected.insert(name.to_owned());
        }
    }

    /// Sets whether `name` is selected (a check button's new state).
    pub fn set_selected(&mut self, name: &str, on: bool) {
        if self.selected.contains(name) != on {
            self.toggle(name);
        }
    }

    pub fn selected(&self) -> Vec<String> {
        self.selected.iter().cloned().collect()
    }

    fn busy(&self) -> bool {
        matches!(
            self.job,
            Job::Starting | Job::Running { .. } | Job::Asking { .. }
        )
    }

    /// Restores the selection to `target`. `exists` says whether a path exists now on the
    /// user's disk (the page passes a real check; tests a set): when one of the chosen names
    /// exists in the target, nothing starts and the page asks ([`Question`]).
    pub fn restore_to(
        &mut self,
        target: Target,
        exists: &dyn Fn(&Path) -> bool,
    ) -> Option<Request> {
        if self.selected.is_empty() || self.busy() || self.snapshot.is_none() {
            return None;
        }
        // The folder chosen in the file chooser may be the original place itself.
        let target = match target {
            Target::Folder(f) if normalise(&f) == self.folder => Target::InPlace,
            t => t,
        };
        let dir = match &target {
            Target::InPlace => self.folder.clone(),
            Target::Folder(f) => normalise(f),
        };
        let conflicts: Vec<String> = self
            .selected
            .iter()
            .filter(|n| exists(Path::new(&join(&dir, n))))
            .cloned()
            .collect();
        if conflicts.is_empty() {
            return self.start(target, false);
        }
        self.job = Job::Asking { target, conflicts };
        None
    }

    /// Answers the question "keep both or replace?".
    pub fn answer(&mut self, answer: Answer) -> Option<Request> {
        let Job::Asking { target, .. } = &self.job else {
            return None;
        };
        let target = target.clone();
        self.job = Job::None;
        match answer {
            Answer::KeepBoth => self.start(target, false),
            Answer::Replace => self.start(target, true),
            Answer::Cancel => None,
        }
    }

    fn start(&mut self, target: Target, overwrite: bool) -> Option<Request> {
        let snapshot = self.snapshot.as_ref()?.id.clone();
        let paths = self
            .selected
            .iter()
            .map(|n| join(&self.folder, n))
            .collect();
        self.job = Job::Starting;
        Some(Request::Restore {
            snapshot,
            paths,
            target: match target {
                Target::InPlace => None,
                Target::Folder(f) => Some(normalise(&f)),
            },
            overwrite,
        })
    }

    /// Cancels the running restore.
    pub fn cancel(&mut self) -> Option<Request> {
        let Job::Running { id, cancelling, .. } = &mut self.job else {
            return None;
        };
        if *cancelling {
            return None;
        }
        *cancelling = true;
        Some(Request::Cancel { job: id.clone() })
    }

    /// Leaves the finished restore's page: back to the folder, with nothing selected.
    pub fn dismiss(&mut self) {
        if matches!(self.job, Job::Ended { .. }) {
            self.job = Job::None;
            self.selected.clear();
        }
    }

    /// Where the last restore put its entries (for "Show in Files").
    pub fn placed(&self) -> Vec<String> {
        match &self.job {
            Job::Ended {
                status: Some(s), ..
            } => s.placed.clone(),
            _ => Vec::new(),
        }
    }

    pub fn apply(&mut self, event: Event) {
        match event {
            Event::Snapshots { profile, result } if profile == self.profile => {
                self.snapshots = match result {
                    Ok(mut list) => {
                        // Newest first: the backup a user looks for is usually a recent one.
                        list.sort_by(|a, b| b.time.cmp(&a.time).then(a.id.cmp(&b.id)));
                        Load::Ready(list)
                    }
                    Err(e) => Load::Failed(e),
                }
            }
            Event::Listing {
                snapshot,
                path,
                result,
            } if path == self.folder
                && self.snapshot.as_ref().is_some_and(|s| s.id == snapshot) =>
            {
                self.listing = match result {
                    Ok(mut entries) => {
                        // Folders first, then by name.
                        entries.sort_by(|a, b| {
                            (a.kind != EntryKind::Dir, &a.name)
                                .cmp(&(b.kind != EntryKind::Dir, &b.name))
                        });
                        Load::Ready(entries)
                    }
                    Err(e) => Load::Failed(e),
                }
            }
            Event::Started(result) if self.job == Job::Starting => {
                self.job = match result {
                    Ok(id) => Job::Running {
                        id,
                        status: None,
                        cancelling: false,
                        notice: None,
                    },
                    Err(e) => Job::Ended {
                        status: None,
                        refusal: Some(e),
                        warnings: Warnings::none(),
                    },
                }
            }
            Event::Status { job, result } => self.status(&job, result, Warnings::none()),
            Event::Done {
                job,
                status,
                warnings,
            } => self.status(&job, Ok(status), warnings),
            Event::CancelFailed { job, error } => {
                if let Job::Running {
                    id,
                    cancelling,
                    notice,
                    ..
                } = &mut self.job
                {
                    if *id == job {
                        *cancelling = false;
                        *notice = Some(format!("Cannot cancel: {error}"));
                    }
                }
            }
            _ => {}
        }
    }

    /// A reading of job `job`; `warnings` are kept when it has ended.
    fn status(&mut self, job: &str, result: Result<RestoreStatus, String>, warnings: Warnings) {
        let Job::Running {
            id, status, notice, ..
        } = &mut self.job
        else {
            return;
        };
        if id != job {
            return;
        }
        match result {
            Ok(s) if s.state == RestoreState::Running => {
                *status = Some(s);
                *notice = None;
            }
            Ok(s) => {
                self.job = Job::Ended {
                    status: Some(s),
                    refusal: None,
                    warnings,
                }
            }
            // The client stops polling after an error: the job's fate is unknown.
            Err(e) => {
                self.job = Job::Ended {
                    status: None,
                    refusal: Some(format!("Lost track of the restore: {e}")),
                    warnings: Warnings::none(),
                }
            }
        }
    }

    /// What the page shows, at `now` (Unix seconds) for the "… ago" texts.
    pub fn screen(&self, now: u64) -> BrowseScreen {
        match &self.job {
            Job::Starting => return BrowseScreen::Restoring(self.progress_view(None, false, None)),
            Job::Running {
                status,
                cancelling,
                notice,
                ..
            } => {
                return BrowseScreen::Restoring(self.progress_view(
                    status.as_ref(),
                    *cancelling,
                    notice.clone(),
                ))
            }
            Job::Ended {
                status,
                refusal,
                warnings,
            } => {
                return BrowseScreen::Finished(finished_view(
                    status.as_ref(),
                    refusal.as_deref(),
                    warnings,
                ))
            }
            Job::None | Job::Asking { .. } => {}
        }
        match &self.snapshot {
            None => BrowseScreen::Snapshots(self.snapshots_view(now)),
            Some(s) => BrowseScreen::Folder(self.folder_view(s, now)),
        }
    }

    fn snapshots_view(&self, now: u64) -> SnapshotsView {
        let rows = match &self.snapshots {
            Load::Loading => Listed::Loading,
            Load::Failed(e) => Listed::Failed(e.clone()),
            Load::Ready(list) if list.is_empty() => Listed::Empty,
            Load::Ready(list) => Listed::Rows(
                list.iter()
                    .map(|s| SnapshotRow {
                        id: s.id.clone(),
                        title: date_time(s.time, self.utc_offset),
                        subtitle: format!(
                            "{} · {} · {}",
                            crate::model::ago(now, u64::try_from(s.time).unwrap_or(0)),
                            s.hostname,
                            s.short_id()
                        ),
                    })
                    .collect(),
            ),
        };
        SnapshotsView {
            profile: self.profile.clone(),
            rows,
        }
    }

    fn folder_view(&self, snap: &SnapshotEntry, _now: u64) -> FolderView {
        let entries = match &self.listing {
            Load::Loading => Listed::Loading,
            Load::Failed(e) => Listed::Failed(e.clone()),
            Load::Ready(list) if list.is_empty() => Listed::Empty,
            Load::Ready(list) => Listed::Rows(
                list.iter()
                    .map(|e| EntryRow {
                        name: e.name.clone(),
                        kind: e.kind,
                        detail: entry_detail(e, self.utc_offset),
                        selectable: e.kind != EntryKind::Other,
                        selected: self.selected.contains(&e.name),
                    })
                    .collect(),
            ),
        };
        let n = self.selected.len();
        FolderView {
            snapshot: format!("Backup of {}", date_time(snap.time, self.utc_offset)),
            path: self.folder.clone(),
            crumbs: crumbs(&self.folder),
            can_go_up: self.folder != "/",
            entries,
            selected: n,
            restore_label: match n {
                0 => "Select files or folders to restore".to_owned(),
                1 => "Restore 1 item to…".to_owned(),
                n => format!("Restore {n} items to…"),
            },
            question: match &self.job {
                Job::Asking { target, conflicts } => {
                    Some(question(target, conflicts, &self.folder))
                }
                _ => None,
            },
        }
    }

    fn progress_view(
        &self,
        s: Option<&RestoreStatus>,
        cancelling: bool,
        notice: Option<String>,
    ) -> ProgressView {
        let counted = s.is_some_and(|s| s.bytes_total > 0 || s.files_total > 0);
        let fraction = s.filter(|_| counted).map(|s| {
            if s.bytes_total > 0 {
                s.bytes_done as f64 / s.bytes_total as f64
            } else {
                s.files_done as f64 / s.files_total.max(1) as f64
            }
            .clamp(0.0, 1.0)
        });
        ProgressView {
            title: if cancelling {
                "Cancelling the restore…".to_owned()
            } else {
                "Restoring…".to_owned()
            },
            fraction,
            files: s
                .filter(|_| counted)
                .map(|s| format!("{} of {} files", s.files_done, s.files_total))
                .unwrap_or_else(|| "preparing…".to_owned()),
            bytes: s
                .filter(|_| counted)
                .map(|s| {
                    format!(
                        "{} of {}",
                        format::bytes(s.bytes_done),
                        format::bytes(s.bytes_total)
                    )
                })
                .unwrap_or_default(),
            can_cancel: !cancelling && matches!(self.job, Job::Running { .. }),
            notice,
        }
    }
}

/// The folder a snapshot opens at: `home` when the snapshot has it or something on the way to
/// or below it (restic keeps the parents of what it backed up), else `/`.
fn start_folder(snap: &SnapshotEntry, home: &str) -> String {
    let related = snap.paths.iter().any(|p| {
        let p = normalise(p);
        is_within(home, &p) || is_within(&p, home)
    });
    if related && home.starts_with('/') {
        home.to_owned()
    } else {
        "/".to_owned()
    }
}

/// Whether `path` is `dir` or below it.
fn is_within(path: &str, dir: &str) -> bool {
    Path::new(path).starts_with(Path::new(dir))
}

/// `path` without a trailing slash, `.` or empty components (`/` stays `/`). `..` is left to
/// the daemon, which refuses it.
fn normalise(path: &str) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// The path bar: ("/", "/"), ("home", "/home"), ("a", "/home/a").
fn crumbs(path: &str) -> Vec<(String, String)> {
    let mut out = vec![("/".to_owned(), "/".to_owned())];
    let mut at = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        at.push('/');
        at.push_str(part);
        out.push((part.to_owned(), at.clone()));
    }
    out
}

fn question(target: &Target, conflicts: &[String], folder: &str) -> Question {
    let place = match target {
        Target::InPlace => folder.to_owned(),
        Target::Folder(f) => f.clone(),
    };
    let names = conflicts
        .iter()
        .take(5)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    let more = match conflicts.len() {
        0..=5 => String::new(),
        n => format!(" and {} more", n - 5),
    };
    Question {
        title: if conflicts.len() == 1 {
            "Replace the current version?".to_owned()
        } else {
            "Replace the current versions?".to_owned()
        },
        body: format!(
            "{place} already has {names}{more}. “Keep Both” puts each restored file that \
             exists now beside the current one, named after the backup, and merges folders; \
             “Replace” overwrites what is there now."
        ),
        conflicts: conflicts.to_vec(),
    }
}

fn finished_view(
    s: Option<&RestoreStatus>,
    refusal: Option<&str>,
    warnings: &Warnings,
) -> FinishedView {
    let Some(s) = s else {
        return FinishedView {
            outcome: Outcome::Failed,
            title: "The restore did not start".to_owned(),
            body: refusal.unwrap_or_default().to_owned(),
            placed: Vec::new(),
            warnings: Vec::new(),
        };
    };
    let (outcome, title) = match s.state {
        RestoreState::Done => (Outcome::Done, "Files restored".to_owned()),
        RestoreState::Cancelled => (Outcome::Cancelled, "Restore cancelled".to_owned()),
        RestoreState::Failed | RestoreState::Running => {
            (Outcome::Failed, "The restore failed".to_owned())
        }
    };
    let counts = format!(
        "{} of {} files, {} of {}",
        s.files_done,
        s.files_total,
        format::bytes(s.bytes_done),
        format::bytes(s.bytes_total)
    );
    let body = match (outcome, s.message.is_empty()) {
        (Outcome::Done, true) => format!("Restored {counts}."),
        (Outcome::Done, false) => format!("Restored {counts}. {}", s.message),
        (Outcome::Cancelled, _) => {
            format!("Stopped after {counts}. Nothing half written was left under its name.")
        }
        (Outcome::Failed, _) => s.message.clone(),
    };
    let warnings = match (outcome, warnings) {
        (Outcome::Done, Warnings::Said(lines)) => lines.clone(),
        (Outcome::Done, Warnings::Unknown(e)) => vec![format!(
            "Whether any file was left out is not known: the daemon did not say ({e})."
        )],
        _ => Vec::new(),
    };
    FinishedView {
        outcome,
        title,
        body,
        placed: s.placed.clone(),
        warnings,
    }
}

fn entry_detail(e: &DirEntry, utc_offset: i64) -> String {
    let when = if e.mtime > 0 {
        date_time(e.mtime, utc_offset)
    } else {
        String::new()
    };
    let what = match e.kind {
        EntryKind::Dir => "Folder".to_owned(),
        EntryKind::File => format::bytes(e.size),
        EntryKind::Symlink => "Link".to_owned(),
        EntryKind::Other => "Special file (not restored)".to_owned(),
    };
    if when.is_empty() {
        what
    } else {
        format!("{what} · {when}")
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// "5 Dec 2026, 03:12" at `utc_offset` seconds from UTC.
pub fn date_time(unix: i64, utc_offset: i64) -> String {
    let t = unix.saturating_add(utc_offset);
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{d} {} {y}, {:02}:{:02}",
        MONTHS[(m - 1) as usize],
        secs / 3600,
        secs % 3600 / 60
    )
}

/// Howard Hinnant's days-to-civil: (year, month 1..=12, day 1..=31) of days since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A `file://` URI of an absolute path, as org.freedesktop.FileManager1.ShowItems takes them:
/// every byte but the unreserved ones and `/` percent-encoded.
pub fn file_uri(path: &str) -> String {
    let mut s = String::from("file://");
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// What the page shows.
#[derive(Debug, Clone, PartialEq)]
pub enum BrowseScreen {
    Snapshots(SnapshotsView),
    Folder(FolderView),
    Restoring(ProgressView),
    Finished(FinishedView),
}

impl BrowseScreen {
    /// A short description for scripts and tests (the app's `browse` action's state):
    /// "snapshots:loading", "snapshots:3", "folder:/home/a:2:sel1", "folder:/home/a:2:ask",
    /// "restoring", "done", "done:warn1" (one warning), "failed", "cancelled".
    pub fn tag(&self) -> String {
        fn listed<T>(l: &Listed<T>) -> String {
            match l {
                Listed::Loading => "loading".to_owned(),
                Listed::Empty => "empty".to_owned(),
                Listed::Failed(_) => "failed".to_owned(),
                Listed::Rows(r) => r.len().to_string(),
            }
        }
        match self {
            BrowseScreen::Snapshots(v) => format!("snapshots:{}", listed(&v.rows)),
            BrowseScreen::Folder(v) => format!(
                "folder:{}:{}:{}",
                v.path,
                listed(&v.entries),
                if v.question.is_some() {
                    "ask".to_owned()
                } else {
                    format!("sel{}", v.selected)
                }
            ),
            BrowseScreen::Restoring(v) => match v.fraction {
                Some(_) => "restoring:progress".to_owned(),
                None => "restoring".to_owned(),
            },
            BrowseScreen::Finished(v) => match v.warnings.len() {
                0 => v.outcome.as_str().to_owned(),
                n => format!("{}:warn{n}", v.outcome.as_str()),
            },
        }
    }
}

/// A list that is loading, empty, failed, or has rows.
#[derive(Debug, Clone, PartialEq)]
pub enum Listed<T> {
    Loading,
    Empty,
    Failed(String),
    Rows(Vec<T>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotsView {
    pub profile: String,
    pub rows: Listed<SnapshotRow>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotRow {
    pub id: String,
    /// The date: "5 Dec 2026, 03:12".
    pub title: String,
    /// "3 hours ago · host · 1a2b3c4d".
    pub subtitle: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FolderView {
    /// "Backup of 5 Dec 2026, 03:12".
    pub snapshot: String,
    pub path: String,
    /// The path bar's buttons: (label, path).
    pub crumbs: Vec<(String, String)>,
    pub can_go_up: bool,
    pub entries: Listed<EntryRow>,
    pub selected: usize,
    pub restore_label: String,
    /// Shown over the folder: the target has some of the chosen names already.
    pub question: Option<Question>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EntryRow {
    pub name: String,
    pub kind: EntryKind,
    /// "1.2 KiB · 5 Dec 2026, 03:12".
    pub detail: String,
    pub selectable: bool,
    pub selected: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Question {
    pub title: String,
    pub body: String,
    pub conflicts: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProgressView {
    pub title: String,
    /// `None` until the job has counted what it restores (the bar pulses).
    pub fraction: Option<f64>,
    pub files: String,
    pub bytes: String,
    pub can_cancel: bool,
    pub notice: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Failed,
    Cancelled,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Failed => "failed",
            Outcome::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct FinishedView {
    pub outcome: Outcome,
    pub title: String,
    pub body: String,
    /// Where the restored entries are ("Show in Files" shows them).
    pub placed: Vec<String>,
    /// What the user must know about a done restore (entries dropped, one line each), shown
    /// under its result in the warning style.
    pub warnings: Vec<String>,
}
