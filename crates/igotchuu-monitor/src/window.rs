//! The window: renders a [`Screen`] of the view model. It holds no state of its own beyond the
//! widgets; every change comes from `render`.
//!
//! Layout, after the GNOME HIG: an `AdwApplicationWindow` with a header bar and a `GtkStack` of
//! three pages: a status page for "no igotchuu / not allowed / connecting", the idle page (a
//! status page with the last backup's facts and "Back up now"), and the running page (the step,
//! a progress bar, the figures, Stop, the errors as they arrive).

use adw::prelude::*;
use gtk::glib;

use igotchuu_dbus::OutcomeKind;
use igotchuu_monitor::model::{IdleView, RunningView, Screen, StartAbility};
use igotchuu_monitor::{TOP_LEVEL, WINDOW_TITLE};

/// A group of labelled values (title on the left, the value on the right); only the known
/// ones are shown, and the group hides when none is. Rows are rebuilt when the set of titles
/// changes (hiding and showing rows of an AdwPreferencesGroup left them hidden under GTK 4.8),
/// otherwise only the values change.
struct Facts {
    group: adw::PreferencesGroup,
    rows: Vec<(String, adw::ActionRow, gtk::Label)>,
}

impl Facts {
    fn new() -> Facts {
        let group = adw::PreferencesGroup::new();
        group.set_visible(false);
        Facts {
            group,
            rows: Vec::new(),
        }
    }

    fn set(&mut self, items: &[(&str, Option<&str>)]) {
        let known: Vec<(&str, &str)> = items
            .iter()
            .filter_map(|(t, v)| v.map(|v| (*t, v)))
            .collect();
        let same =
            self.rows.len() == known.len() && self.rows.iter().zip(&known).all(|(r, k)| r.0 == k.0);
        if !same {
            for (_, row, _) in self.rows.drain(..) {
                self.group.remove(&row);
            }
            for (title, _) in &known {
                let value = gtk::Label::builder()
                    .selectable(true)
                    .ellipsize(gtk::pango::EllipsizeMode::Middle)
                    .xalign(1.0)
                    .build();
                value.add_css_class("dim-label");
                let row = adw::ActionRow::builder().title(*title).build();
                row.add_suffix(&value);
                self.group.add(&row);
                self.rows.push(((*title).to_owned(), row, value));
            }
        }
        for ((_, _, label), (_, v)) in self.rows.iter().zip(&known) {
            label.set_label(v);
        }
        self.group.set_visible(!known.is_empty());
    }
}

/// A group listing errors, one row each; hidden when there are none.
struct ErrorList {
    group: adw::PreferencesGroup,
    rows: Vec<adw::ActionRow>,
}

impl ErrorList {
    fn new() -> ErrorList {
        let group = adw::PreferencesGroup::builder().title("Errors").build();
        group.set_visible(false);
        ErrorList {
            group,
            rows: Vec::new(),
        }
    }

    fn set(&mut self, errors: &[String]) {
        let same = self.rows.len() == errors.len()
            && self
                .rows
                .iter()
                .zip(errors)
                .all(|(r, e)| r.title().as_str() == glib::markup_escape_text(e).as_str());
        if same {
            return;
        }
        for r in self.rows.drain(..) {
            self.group.remove(&r);
        }
        for e in errors {
            let row = adw::ActionRow::builder()
                .title(glib::markup_escape_text(e).as_str())
                .title_lines(4)
                .build();
            row.add_prefix(&gtk::Image::from_icon_name("dialog-warning-symbolic"));
            self.group.add(&row);
            self.rows.push(row);
        }
        self.group.set_visible(!errors.is_empty());
    }
}

pub struct Window {
    pub window: adw::ApplicationWindow,
    /// The status page and the browse page.
    pages: adw::ViewStack,
    stack: gtk::Stack,
    message: adw::StatusPage,
    // idle
    idle: adw::StatusPage,
    facts: Facts,
    profile_group: adw::PreferencesGroup,
    profile: adw::ComboRow,
    profiles: gtk::StringList,
    backup_now: gtk::Button,
    idle_notice: gtk::Label,
    idle_errors: ErrorList,
    // running
    running: adw::StatusPage,
    progress: gtk::ProgressBar,
    figures: Facts,
    running_notice: gtk::Label,
    running_errors: ErrorList,
}

fn page_box() -> gtk::Box {
    gtk::Box::builder()
        .orientation(gtk::Orientation::Vertical)
        .spacing(18)
        .build()
}

fn notice_label() -> gtk::Label {
    let l = gtk::Label::builder()
        .wrap(true)
        .justify(gtk::Justification::Center)
        .build();
    l.set_visible(false);
    l
}

fn scrolled(page: &adw::StatusPage) -> gtk::ScrolledWindow {
    gtk::ScrolledWindow::builder()
        .hscrollbar_policy(gtk::PolicyType::Never)
        .child(page)
        .build()
}

impl Window {
    /// The window, with `browse` (the "Browse backups" page, src/browse_page.rs) as its second
    /// page. Long on purpose: one straight widget tree, top to bottom as the window shows it,
    /// with no decision in it; split up, the tree would be harder to see.
    pub fn new(app: &adw::Application, browse: &gtk::Widget) -> Window {
        let message = adw::StatusPage::new();

        let facts = Facts::new();
        let profiles = gtk::StringList::new(&[]);
        let profile = adw::ComboRow::builder()
            .title("Profile")
            .model(&profiles)
            .build();
        let profile_group = adw::PreferencesGroup::new();
        profile_group.add(&profile);
        let backup_now = gtk::Button::builder()
            .label("Back up now")
            .halign(gtk::Align::Center)
            .action_name("app.backup-now")
            .build();
        backup_now.add_css_class("suggested-action");
        backup_now.add_css_class("pill");
        let idle_notice = notice_label();
        let idle_errors = ErrorList::new();
        let idle_box = page_box();
        idle_box.append(&facts.group);
        idle_box.append(&profile_group);
        idle_box.append(&backup_now);
        idle_box.append(&idle_notice);
        idle_box.append(&idle_errors.group);
        let idle = adw::StatusPage::builder()
            .child(&adw::Clamp::builder().child(&idle_box).build())
            .build();

        let progress = gtk::ProgressBar::builder().show_text(true).build();
        let figures = Facts::new();
        let stop = gtk::Button::builder()
            .label("Stop")
            .halign(gtk::Align::Center)
            .action_name("app.stop")
            .build();
        stop.add_css_class("destructive-action");
        stop.add_css_class("pill");
        let running_notice = notice_label();
        let running_errors = ErrorList::new();
        let running_box = page_box();
        running_box.append(&progress);
        running_box.append(&figures.group);
        running_box.append(&stop);
        running_box.append(&running_notice);
        running_box.append(&running_errors.group);
        let running = adw::StatusPage::builder()
            .icon_name("emblem-synchronizing-symbolic")
            .child(&adw::Clamp::builder().child(&running_box).build())
            .build();

        let stack = gtk::Stack::builder().vexpand(true).build();
        stack.add_named(&message, Some("message"));
        stack.add_named(&scrolled(&idle), Some("idle"));
        stack.add_named(&scrolled(&running), Some("running"));

        // Two pages: the backups' status (above), and "Browse backups" (issue 20), which works
        // for every local user, also where the status needs the group `igotchuu`.
        let pages = adw::ViewStack::new();
        pages.set_vexpand(true);
        pages
            .add_titled(&stack, Some(STATUS_PAGE), "Status")
            .set_icon_name(Some("emblem-synchronizing-symbolic"));
        pages
            .add_titled(browse, Some(BROWSE_PAGE), "Browse Backups")
            .set_icon_name(Some("document-open-recent-symbolic"));
        let header = adw::HeaderBar::new();
        header.set_title_widget(Some(
            &adw::ViewSwitcher::builder()
                .stack(&pages)
                .policy(adw::ViewSwitcherPolicy::Wide)
                .build(),
        ));
        let content = gtk::Box::new(gtk::Orientation::Vertical, 0);
        content.append(&header);
        content.append(&pages);
        let window = adw::ApplicationWindow::builder()
            .application(app)
            .title(WINDOW_TITLE)
            .default_width(520)
            // Tall enough for the idle page of the usual install (the daemon, its timer, a
            // profile): the last run's facts, the next run, the profile and "Back up now"
            // without scrolling.
            .default_height(768)
            .content(&content)
            .build();
        Window {
            window,
            pages,
            stack,
            message,
            idle,
            facts,
            profile_group,
            profile,
            profiles,
            backup_now,
            idle_notice,
            idle_errors,
            running,
            progress,
            figures,
            running_notice,
            running_errors,
        }
    }

    /// Shows the "Browse backups" page.
    pub fn show_browse(&self) {
        self.pages.set_visible_child_name(BROWSE_PAGE);
    }

    /// Calls `f` whenever the page shown changes, with whether it is the browse page.
    pub fn on_page_change(&self, f: impl Fn(bool) + 'static) {
        self.pages.connect_visible_child_name_notify(move |p| {
            f(p.visible_child_name().as_deref() == Some(BROWSE_PAGE))
        });
    }

    /// The profile chosen for "Back up now" ("" = the top-level config).
    pub fn chosen_profile(&self) -> String {
        if !self.profile.is_visible() {
            return String::new();
        }
        // Entry 0 is the top-level config, whatever a profile is called.
        match self.profile.selected() {
            0 => String::new(),
            i => self
                .profiles
                .string(i)
                .map(|s| s.to_string())
                .unwrap_or_default(),
        }
    }

    pub fn render(&mut self, screen: &Screen) {
        match screen {
            Screen::Connecting => self.message_page(
                "content-loading-symbolic",
                "Connecting…",
                "Looking for igotchuu on the system bus.",
            ),
            Screen::NoBus(why) => self.message_page(
                "network-offline-symbolic",
                "The system bus is not available",
                &format!("The monitor cannot reach the system D-Bus: {why}"),
            ),
            Screen::NotInstalled => self.message_page(
                "system-software-install-symbolic",
                "igotchuu is not installed or not running",
                "No igotchuu answers on the system bus. Install the igotchuu package and enable \
                 its timer (systemctl enable --now igotchuu.timer); while a backup runs, this \
                 window shows it.",
            ),
            Screen::NotAllowed => {
                let user = glib::user_name();
                let user = user.to_string_lossy();
                self.message_page(
                    "action-unavailable-symbolic",
                    "Not allowed to watch backups",
                    &format!(
                        "Only members of the group “{group}” may watch and control system \
                         backups. Ask an administrator to run\n\nsudo usermod -aG {group} {user}\n\n\
                         then log out and log in again.\n\nYour own files can be restored \
                         from “Browse Backups” all the same.",
                        group = igotchuu_dbus::GROUP
                    ),
                )
            }
            Screen::Idle(v) => self.idle_page(v),
            Screen::Running(v) => self.running_page(v),
        }
    }

    fn message_page(&self, icon: &str, title: &str, description: &str) {
        self.message.set_icon_name(Some(icon));
        self.message.set_title(title);
        self.message
            .set_description(Some(glib::markup_escape_text(description).as_str()));
        self.stack.set_visible_child_name("message");
    }

    fn idle_page(&mut self, v: &IdleView) {
        let (icon, title) = match &v.last {
            Some(l) => (
                match l.outcome {
                    Some(OutcomeKind::Success) => "emblem-ok-symbolic",
                    Some(OutcomeKind::Partial) => "dialog-warning-symbolic",
                    Some(OutcomeKind::Skipped) => "media-playback-pause-symbolic",
                    _ => "dialog-error-symbolic",
                },
                l.headline.clone(),
            ),
            None => ("document-save-symbolic", "No backup yet".to_owned()),
        };
        self.idle.set_icon_name(Some(icon));
        self.idle.set_title(&title);
        let last = v.last.as_ref();
        // A postponed scheduled run says why ("postponed: on battery") instead of when it ended.
        let when = last.and_then(|l| l.when.as_deref());
        let description = match (&v.postponed, when) {
            (Some(p), Some(w)) => Some(format!("{p} ({w})")),
            (Some(p), None) => Some(p.clone()),
            (None, w) => w.map(|w| format!("Finished {w}")),
        };
        self.idle.set_description(description.as_deref());
        let exit_code = last
            .and_then(|l| l.exit_code)
            .filter(|c| *c != 0)
            .map(|c| c.to_string());
        self.facts.set(&[
            ("Duration", last.and_then(|l| l.duration.as_deref())),
            ("Data added", last.and_then(|l| l.data_added.as_deref())),
            ("Snapshot", last.and_then(|l| l.snapshot_id.as_deref())),
            ("Exit code", exit_code.as_deref()),
            ("Last success", v.last_success.as_deref()),
            ("Next scheduled backup", v.next_run.as_deref()),
            // Issue 18 §6: shown when the daemon knows them.
            ("Retention", v.forget.as_ref().map(|o| o.text.as_str())),
            (
                "Repository check",
                v.check.as_ref().map(|o| o.text.as_str()),
            ),
        ]);
        self.set_profiles(&v.profiles);
        self.backup_now
            .set_visible(v.start == StartAbility::Available);
        let notice = v.notice.clone().or_else(|| {
            (v.start == StartAbility::NoDaemon).then(|| {
                "Backups run from igotchuu's timer; this igotchuu cannot start one from here \
                 (its D-Bus daemon is not running)."
                    .to_owned()
            })
        });
        let notice = notice.or_else(|| ops_notice(v));
        set_notice(&self.idle_notice, notice.as_deref());
        self.idle_errors.set(&v.errors);
        self.stack.set_visible_child_name("idle");
    }

    fn set_profiles(&mut self, names: &[String]) {
        let current: Vec<String> = (0..self.profiles.n_items())
            .filter_map(|i| self.profiles.string(i).map(|s| s.to_string()))
            .skip(1)
            .collect();
        if current != names || self.profiles.n_items() == 0 {
            let mut all = vec![TOP_LEVEL];
            all.extend(names.iter().map(String::as_str));
            self.profiles.splice(0, self.profiles.n_items(), &all);
        }
        self.profile.set_visible(!names.is_empty());
        self.profile_group.set_visible(!names.is_empty());
    }

    fn running_page(&mut self, v: &RunningView) {
        self.running.set_title(&v.step);
        match v.fraction {
            Some(f) => self.progress.set_fraction(f),
            None => self.progress.pulse(),
        }
        self.progress.set_text(Some(&v.percent));
        self.figures.set(&[
            ("Files", Some(&v.files)),
            ("Data", Some(&v.bytes)),
            ("Time left", Some(&v.eta)),
            (
                "Current file",
                Some(v.current_file.as_str()).filter(|f| !f.is_empty()),
            ),
        ]);
        set_notice(&self.running_notice, v.notice.as_deref());
        self.running_errors.set(&v.errors);
        self.stack.set_visible_child_name("running");
    }
}

/// The view stack's page names.
const STATUS_PAGE: &str = "status";
const BROWSE_PAGE: &str = "browse";

fn set_notice(label: &gtk::Label, text: Option<&str>) {
    label.set_visible(text.is_some());
    label.set_label(text.unwrap_or(""));
}

/// What the idle page says of a last forget or check that did not succeed (issue 18 §6), so it
/// is not only a row among the facts.
fn ops_notice(v: &IdleView) -> Option<String> {
    let check = v.check.as_ref().filter(|c| c.is_bad()).map(|c| {
        format!(
            "The last repository check: {}. See `igotchuu status` and run `igotchuu verify` again \
             once it is dealt with.",
            c.text
        )
    });
    let forget = v.forget.as_ref().filter(|f| f.is_bad()).map(|f| {
        let why = match f.outcome {
            igotchuu_dbus::OpOutcome::Refused => {
                " because its keep rules would remove every snapshot; nothing was forgotten"
            }
            _ => "",
        };
        format!(
            "Forgetting old snapshots: {}{why}. The repository keeps growing until it works; \
             see `igotchuu status`.",
            f.text
        )
    });
    match (check, forget) {
        (Some(c), Some(f)) => Some(format!("{c}\n{f}")),
        (c, f) => c.or(f),
    }
}
