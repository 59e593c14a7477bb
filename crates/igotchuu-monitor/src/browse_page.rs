//! The "Browse backups" page: renders a [`BrowseScreen`] of the browse model and nothing more.
//! Every click is one of the app's actions (src/app.rs: `app.browse-*`), which change the model
//! and render again; the tests drive the same actions over org.gtk.Actions.
//!
//! Layout: a `GtkStack` of four pages: the snapshots (one row per backup, newest first, the
//! profile to choose above them when the config has profiles), a folder (back to the list, up,
//! a path bar, the entries with a check box each, "Restore N items to…"), the progress of a
//! restore (a bar, the figures, Cancel), and its end (what happened, what it warns about,
//! where the files went, "Show in Files"). The question "keep both or replace?" is an `AdwMessageDialog` over the
//! window.

use std::cell::Cell;
use std::rc::Rc;

use adw::prelude::*;
use gtk::glib;

use igotchuu_dbus::EntryKind;
use igotchuu_monitor::browse_model::{
    BrowseScreen, EntryRow, FinishedView, FolderView, Listed, Outcome, ProgressView, Question,
    SnapshotRow, SnapshotsView,
};

/// How many folders of the path the path bar shows.
const CRUMBS_SHOWN: usize = 3;

pub struct BrowsePage {
    pub root: gtk::Stack,
    // snapshots
    profile_group: adw::PreferencesGroup,
    profile: adw::ComboRow,
    profiles: gtk::StringList,
    shown_profiles: Vec<String>,
    snap_message: adw::StatusPage,
    snap_group: adw::PreferencesGroup,
    snap_rows: Vec<(SnapshotRow, adw::ActionRow)>,
    // folder
    folder_title: gtk::Label,
    up: gtk::Button,
    crumbs: gtk::Box,
    shown_crumbs: Vec<(String, String)>,
    entries_stack: gtk::Stack,
    entries_message: adw::StatusPage,
    entries: gtk::ListBox,
    entry_rows: Vec<(EntryRow, gtk::CheckButton)>,
    restore: gtk::Button,
    question: Option<(Question, adw::MessageDialog)>,
    // progress
    progress_page: adw::StatusPage,
    bar: gtk::ProgressBar,
    files: gtk::Label,
    bytes: gtk::Label,
    progress_notice: gtk::Label,
    cancel: gtk::Button,
    // finished
    finished: adw::StatusPage,
    warnings: gtk::Label,
    placed: gtk::Label,
    show: gtk::Button,
    /// Set while rendering: check boxes and the profile row changed by `render` do not count as
    /// the user's clicks.
    rendering: Rc<Cell<bool>>,
}

fn pill(label: &str, action: &str, css: &str) -> gtk::Button {
    let b = gtk::Button::builder()
        .label(label)
        .halign(gtk::Align::Center)
        .action_name(action)
        .build();
    b.add_css_class(css);
    b.add_css_class("pill");
    b
}

fn clamped(child: &impl IsA<gtk::Widget>) -> gtk::ScrolledWindow {
    gtk::ScrolledWindow::builder()
        .hscrollbar_policy(gtk::PolicyType::Never)
        .vexpand(true)
        .child(
            &adw::Clamp::builder()
                .margin_top(12)
                .margin_bottom(12)
                .margin_start(12)
                .margin_end(12)
                .child(child)
                .build(),
        )
        .build()
}

fn vbox(spacing: i32) -> gtk::Box {
    gtk::Box::new(gtk::Orientation::Vertical, spacing)
}

impl BrowsePage {
    /// Builds the four pages' widgets. Long, and left so on purpose: it is one straight widget
    /// tree, top to bottom as the page shows it, with no decision in it; split up, the tree
    /// would be harder to see.
    pub fn new() -> BrowsePage {
        let rendering = Rc::new(Cell::new(false));

        // Snapshots.
        let profiles = gtk::StringList::new(&[]);
        let profile = adw::ComboRow::builder()
            .title("Profile")
            .model(&profiles)
            .build();
        {
            let (r, l) = (rendering.clone(), profiles.clone());
            profile.connect_selected_notify(move |row| {
                if r.get() {
                    return;
                }
                let name = match row.selected() {
                    0 => String::new(),
                    i => l.string(i).map(|s| s.to_string()).unwrap_or_default(),
                };
                let _ = row.activate_action("app.browse-profile", Some(&name.to_variant()));
            });
        }
        let profile_group = adw::PreferencesGroup::new();
        profile_group.add(&profile);
        profile_group.set_visible(false);
        let snap_message = adw::StatusPage::new();
        let snap_group = adw::PreferencesGroup::builder()
            .title("Choose a backup")
            .description("Newest first. Only your own files and folders are shown.")
            .build();
        let snap_box = vbox(18);
        snap_box.append(&profile_group);
        snap_box.append(&snap_message);
        snap_box.append(&snap_group);

        // A folder.
        let back = gtk::Button::builder()
            .icon_name("go-previous-symbolic")
            .tooltip_text("All backups")
            .action_name("app.browse-back")
            .build();
        let up = gtk::Button::builder()
            .icon_name("go-up-symbolic")
            .tooltip_text("Enclosing folder")
            .action_name("app.browse-up")
            .build();
        let crumbs = gtk::Box::new(gtk::Orientation::Horizontal, 0);
        crumbs.add_css_class("linked");
        let crumbs_scroll = gtk::ScrolledWindow::builder()
            .vscrollbar_policy(gtk::PolicyType::Never)
            .hexpand(true)
            .child(&crumbs)
            .build();
        let bar_box = gtk::Box::new(gtk::Orientation::Horizontal, 6);
        bar_box.append(&back);
        bar_box.append(&up);
        bar_box.append(&crumbs_scroll);
        let folder_title = gtk::Label::builder().xalign(0.0).build();
        folder_title.add_css_class("heading");
        let entries = gtk::ListBox::builder()
            .selection_mode(gtk::SelectionMode::None)
            .build();
        entries.add_css_class("boxed-list");
        let entries_message = adw::StatusPage::new();
        let entries_stack = gtk::Stack::new();
        entries_stack.add_named(&entries, Some("list"));
        entries_stack.add_named(&entries_message, Some("message"));
        let restore = pill("Restore to…", "app.browse-restore", "suggested-action");
        let folder_inner = vbox(12);
        folder_inner.append(&folder_title);
        folder_inner.append(&entries_stack);
        let folder_box = vbox(6);
        bar_box.set_margin_top(6);
        bar_box.set_margin_start(6);
        bar_box.set_margin_end(6);
        folder_box.append(&bar_box);
        folder_box.append(&clamped(&folder_inner));
        restore.set_margin_bottom(12);
        restore.set_margin_top(6);
        folder_box.append(&restore);

        // Progress.
        let bar = gtk::ProgressBar::new();
        let files = gtk::Label::new(None);
        let bytes = gtk::Label::new(None);
        bytes.add_css_class("dim-label");
        let progress_notice = gtk::Label::builder().wrap(true).build();
        let cancel = pill("Cancel", "app.browse-cancel", "destructive-action");
        let progress_box = vbox(12);
        for w in [
            bar.upcast_ref::<gtk::Widget>(),
            files.upcast_ref(),
            bytes.upcast_ref(),
            progress_notice.upcast_ref(),
            cancel.upcast_ref(),
        ] {
            progress_box.append(w);
        }
        let progress_page = adw::StatusPage::builder()
            .icon_name("document-revert-symbolic")
            .child(&adw::Clamp::builder().child(&progress_box).build())
            .build();

        // The end. Its warnings come first, right under the result they qualify.
        let warnings = gtk::Label::builder()
            .wrap(true)
            .selectable(true)
            .justify(gtk::Justification::Center)
            .build();
        warnings.add_css_class("warning");
        let placed = gtk::Label::builder()
            .wrap(true)
            .selectable(true)
            .justify(gtk::Justification::Center)
            .build();
        let show = pill("Show in Files", "app.browse-show", "suggested-action");
        let done_box = vbox(18);
        done_box.append(&warnings);
        done_box.append(&placed);
        done_box.append(&show);
        done_box.append(&pill("Back to the Folder", "app.browse-dismiss", "flat"));
        let finished = adw::StatusPage::builder()
            .child(&adw::Clamp::builder().child(&done_box).build())
            .build();

        let root = gtk::Stack::builder().vexpand(true).build();
        root.add_named(&clamped(&snap_box), Some("snapshots"));
        root.add_named(&folder_box, Some("folder"));
        root.add_named(&progress_page, Some("progress"));
        root.add_named(&finished, Some("finished"));
        BrowsePage {
            root,
            profile_group,
            profile,
            profiles,
            shown_profiles: Vec::new(),
            snap_message,
            snap_group,
            snap_rows: Vec::new(),
            folder_title,
            up,
            crumbs,
            shown_crumbs: Vec::new(),
            entries_stack,
            entries_message,
            entries,
            entry_rows: Vec::new(),
            restore,
            question: None,
            progress_page,
            bar,
            files,
            bytes,
            progress_notice,
            cancel,
            finished,
            warnings,
            placed,
            show,
            rendering,
        }
    }

    /// The profiles to offer (from the daemon's `Profiles`, when this user may read it) and the
    /// one chosen.
    pub fn set_profiles(&mut self, names: &[String], chosen: &str) {
        self.rendering.set(true);
        if names != self.shown_profiles.as_slice() {
            let mut all = vec![igotchuu_monitor::TOP_LEVEL];
            all.extend(names.iter().map(String::as_str));
            self.profiles.splice(0, self.profiles.n_items(), &all);
            self.shown_profiles = names.to_vec();
        }
        let i = names.iter().position(|n| n == chosen).map_or(0, |i| i + 1);
        self.profile.set_selected(i as u32);
        self.profile_group.set_visible(!names.is_empty());
        self.rendering.set(false);
    }

    pub fn render(&mut self, screen: &BrowseScreen, window: Option<&adw::ApplicationWindow>) {
        self.rendering.set(true);
        match screen {
            BrowseScreen::Snapshots(v) => self.snapshots(v),
            BrowseScreen::Folder(v) => self.folder(v),
            BrowseScreen::Restoring(v) => self.progress(v),
            BrowseScreen::Finished(v) => self.end(v),
        }
        let question = match screen {
            BrowseScreen::Folder(v) => v.question.as_ref(),
            _ => None,
        };
        self.ask(question, window);
        self.rendering.set(false);
    }

    fn snapshots(&mut self, v: &SnapshotsView) {
        let rows: &[SnapshotRow] = match &v.rows {
            Listed::Rows(r) => r,
            _ => &[],
        };
        let message = match &v.rows {
            Listed::Loading => Some(("content-loading-symbolic", "Looking for backups…", "")),
            Listed::Empty => Some((
                "document-open-recent-symbolic",
                "No backups yet",
                "This profile has no snapshots in the repository.",
            )),
            Listed::Failed(e) => Some((
                "dialog-error-symbolic",
                "Cannot list the backups",
                e.as_str(),
            )),
            Listed::Rows(_) => None,
        };
        set_message(&self.snap_message, message);
        let same = self.snap_rows.len() == rows.len()
            && self.snap_rows.iter().zip(rows).all(|((r, _), n)| r == n);
        if !same {
            for (_, w) in self.snap_rows.drain(..) {
                self.snap_group.remove(&w);
            }
            for r in rows {
                let row = adw::ActionRow::builder()
                    .title(glib::markup_escape_text(&r.title).as_str())
                    .subtitle(glib::markup_escape_text(&r.subtitle).as_str())
                    .activatable(true)
                    .action_name("app.browse-snapshot")
                    .action_target(&r.id.to_variant())
                    .build();
                row.add_prefix(&gtk::Image::from_icon_name("document-open-recent-symbolic"));
                row.add_suffix(&gtk::Image::from_icon_name("go-next-symbolic"));
                self.snap_group.add(&row);
                self.snap_rows.push((r.clone(), row));
            }
        }
        self.snap_group.set_visible(!rows.is_empty());
        self.root.set_visible_child_name("snapshots");
    }

    fn folder(&mut self, v: &FolderView) {
        self.folder_title.set_label(&v.snapshot);
        self.up.set_sensitive(v.can_go_up);
        if self.shown_crumbs != v.crumbs {
            while let Some(c) = self.crumbs.first_child() {
                self.crumbs.remove(&c);
            }
            // The last few folders, the current one last and bold; "…" before them goes to the
            // folder above the first one shown (a long path must not push the current folder
            // out of sight).
            let skip = v.crumbs.len().saturating_sub(CRUMBS_SHOWN);
            let mut shown: Vec<(&str, &str)> = Vec::new();
            if skip > 0 {
                shown.push(("…", v.crumbs[skip - 1].1.as_str()));
            }
            shown.extend(
                v.crumbs[skip..]
                    .iter()
                    .map(|(l, p)| (l.as_str(), p.as_str())),
            );
            for (i, (label, path)) in shown.iter().enumerate() {
                let b = gtk::Button::builder()
                    .label(*label)
                    .action_name("app.browse-go")
                    .action_target(&path.to_variant())
                    .tooltip_text(*path)
                    .build();
                if i + 1 == shown.len() {
                    if let Some(l) = b.child().and_downcast::<gtk::Label>() {
                        l.add_css_class("heading");
                    }
                }
                self.crumbs.append(&b);
            }
            self.shown_crumbs = v.crumbs.clone();
        }
        let rows: &[EntryRow] = match &v.entries {
            Listed::Rows(r) => r,
            _ => &[],
        };
        let message = match &v.entries {
            Listed::Loading => Some(("content-loading-symbolic", "Reading the backup…", "")),
            Listed::Empty => Some((
                "folder-symbolic",
                "Nothing to restore here",
                "This folder is empty in this backup, or holds nothing of yours.",
            )),
            Listed::Failed(e) => Some((
                "dialog-error-symbolic",
                "Cannot open this folder",
                e.as_str(),
            )),
            Listed::Rows(_) => None,
        };
        set_message(&self.entries_message, message);
        self.entries_stack
            .set_visible_child_name(if message.is_some() { "message" } else { "list" });
        self.entry_list(rows);
        self.restore.set_label(&v.restore_label);
        self.restore.set_sensitive(v.selected > 0);
        self.root.set_visible_child_name("folder");
    }

    /// The entries: rebuilt when the listing changes, only the check boxes updated when only
    /// the selection did (so a click keeps the list where it is).
    fn entry_list(&mut self, rows: &[EntryRow]) {
        let same_list =
            self.entry_rows.len() == rows.len()
                && self.entry_rows.iter().zip(rows).all(|((a, _), b)| {
                    a.name == b.name && a.detail == b.detail && a.kind == b.kind
                });
        if same_list {
            for ((shown, check), new) in self.entry_rows.iter_mut().zip(rows) {
                check.set_active(new.selected);
                shown.selected = new.selected;
            }
            return;
        }
        while let Some(c) = self.entries.first_child() {
            self.entries.remove(&c);
        }
        self.entry_rows.clear();
        for r in rows {
            let row = adw::ActionRow::builder()
                .title(glib::markup_escape_text(&r.name).as_str())
                .subtitle(glib::markup_escape_text(&r.detail).as_str())
                .build();
            let check = gtk::CheckButton::builder()
                .active(r.selected)
                .sensitive(r.selectable)
                .valign(gtk::Align::Center)
                .tooltip_text("Select for restoring")
                .build();
            {
                let (rendering, name) = (self.rendering.clone(), r.name.clone());
                check.connect_toggled(move |c| {
                    if rendering.get() {
                        return;
                    }
                    let _ = c.activate_action(
                        "app.browse-select",
                        Some(&(name.as_str(), c.is_active()).to_variant()),
                    );
                });
            }
            row.add_prefix(&check);
            row.add_prefix(&gtk::Image::from_icon_name(match r.kind {
                EntryKind::Dir => "folder-symbolic",
                EntryKind::File => "text-x-generic-symbolic",
                EntryKind::Symlink => "emblem-symbolic-link-symbolic",
                EntryKind::Other => "action-unavailable-symbolic",
            }));
            if r.kind == EntryKind::Dir {
                row.set_activatable(true);
                row.set_action_name(Some("app.browse-open"));
                row.set_action_target_value(Some(&r.name.to_variant()));
                row.add_suffix(&gtk::Image::from_icon_name("go-next-symbolic"));
            } else if r.selectable {
                // A click on a file's row selects it, like its check box.
                row.set_activatable_widget(Some(&check));
            }
            self.entries.append(&row);
            self.entry_rows.push((r.clone(), check));
        }
    }

    /// Shows, keeps or closes the question "keep both or replace?".
    fn ask(&mut self, q: Option<&Question>, window: Option<&adw::ApplicationWindow>) {
        if self.question.as_ref().map(|(shown, _)| shown) == q {
            return;
        }
        if let Some((_, d)) = self.question.take() {
            d.close();
        }
        let (Some(q), Some(window)) = (q, window) else {
            return;
        };
        let d = adw::MessageDialog::builder()
            .transient_for(window)
            .modal(true)
            .heading(&q.title)
            .body(&q.body)
            .build();
        d.add_responses(&[
            ("cancel", "_Cancel"),
            ("replace", "_Replace"),
            ("keep", "_Keep Both"),
        ]);
        d.set_response_appearance("replace", adw::ResponseAppearance::Destructive);
        d.set_response_appearance("keep", adw::ResponseAppearance::Suggested);
        d.set_default_response(Some("keep"));
        d.set_close_response("cancel");
        let rendering = self.rendering.clone();
        d.connect_response(None, move |d, response| {
            // Closed by `render` (the question went away): not the user's answer.
            if rendering.get() {
                return;
            }
            let _ = d.activate_action("app.browse-answer", Some(&response.to_variant()));
        });
        d.present();
        self.question = Some((q.clone(), d));
    }

    fn progress(&mut self, v: &ProgressView) {
        self.progress_page.set_title(&v.title);
        match v.fraction {
            Some(f) => self.bar.set_fraction(f),
            None => self.bar.pulse(),
        }
        self.files.set_label(&v.files);
        self.bytes.set_label(&v.bytes);
        self.progress_notice.set_visible(v.notice.is_some());
        self.progress_notice
            .set_label(v.notice.as_deref().unwrap_or_default());
        self.cancel.set_sensitive(v.can_cancel);
        self.root.set_visible_child_name("progress");
    }

    fn end(&mut self, v: &FinishedView) {
        self.finished.set_icon_name(Some(match v.outcome {
            Outcome::Done => "emblem-ok-symbolic",
            Outcome::Cancelled => "process-stop-symbolic",
            Outcome::Failed => "dialog-error-symbolic",
        }));
        self.finished.set_title(&v.title);
        self.finished
            .set_description(Some(glib::markup_escape_text(&v.body).as_str()));
        self.warnings.set_visible(!v.warnings.is_empty());
        self.warnings.set_label(&v.warnings.join("\n"));
        self.placed.set_visible(!v.placed.is_empty());
        self.placed.set_label(&v.placed.join("\n"));
        self.show.set_visible(!v.placed.is_empty());
        self.root.set_visible_child_name("finished");
    }
}

fn set_message(page: &adw::StatusPage, m: Option<(&str, &str, &str)>) {
    page.set_visible(m.is_some());
    if let Some((icon, title, body)) = m {
        page.set_icon_name(Some(icon));
        page.set_title(title);
        page.set_description(Some(glib::markup_escape_text(body).as_str()));
    }
}
