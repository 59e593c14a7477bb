//! The "Browse backups" page's glue: its model ([`Browse`]), the thread of its bus client
//! (src/browse_client.rs), and the app's `browse-*` actions, which turn clicks into model calls
//! and the model's requests into bus calls. Also the two things that leave the app: the
//! "Restore to…" file chooser, and "Show in Files".
//!
//! Actions (org.gtk.Actions at [`APP_PATH`](igotchuu_monitor::APP_PATH); the tests drive them):
//! `browse-profile(s)`, `browse-refresh`, `browse-snapshot(s id)`, `browse-back`,
//! `browse-go(s path)`, `browse-open(s name)`, `browse-up`, `browse-select((sb) name, on)`,
//! `browse-restore` (the file chooser), `browse-restore-to(s folder; "" = the original place)`,
//! `browse-answer(s "keep"|"replace"|"cancel")`, `browse-cancel`, `browse-dismiss`,
//! `browse-show`, and the read-only `browse`, whose state is the page's
//! [`BrowseScreen::tag`].

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

use adw::prelude::*;
use gtk::{gio, glib};
use tokio::sync::mpsc;

use igotchuu_monitor::browse_client;
use igotchuu_monitor::browse_model::{file_uri, Answer, Browse, Request, Target};
use igotchuu_monitor::now;

use crate::browse_page::BrowsePage;

pub struct BrowseApp {
    model: Browse,
    requests: mpsc::UnboundedSender<Request>,
    /// Whether the snapshots were asked for once (they are, when the page is first shown).
    loaded: bool,
    page: Option<BrowsePage>,
    /// The window the page is in (the parent of the chooser and the question).
    window: Option<adw::ApplicationWindow>,
    /// The read-only `browse` action.
    action: gio::SimpleAction,
    /// The open "Restore to…" chooser, kept alive while it is shown.
    chooser: Option<gtk::FileChooserNative>,
    /// The profiles the status page knows (the daemon's `Profiles`).
    profiles: Vec<String>,
}

pub type Shared = Rc<RefCell<BrowseApp>>;

/// The page's state; `requests` go to the client [`start_client`] runs.
pub fn new(requests: mpsc::UnboundedSender<Request>) -> Shared {
    let action = gio::SimpleAction::new_stateful("browse", None, &"snapshots:loading".to_variant());
    action.set_enabled(false);
    let home = glib::home_dir().to_string_lossy().into_owned();
    let offset = glib::DateTime::now_local()
        .map(|d| d.utc_offset().as_seconds())
        .unwrap_or(0);
    Rc::new(RefCell::new(BrowseApp {
        model: Browse::new(&home, offset),
        requests,
        loaded: false,
        page: None,
        window: None,
        action,
        chooser: None,
        profiles: Vec::new(),
    }))
}

/// The browse client on a thread of its own (a tokio runtime, as zbus needs); its events are
/// applied on the main loop.
pub fn start_client(shared: &Shared, requests: mpsc::UnboundedReceiver<Request>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let spawned = std::thread::Builder::new()
        .name("igotchuu-browse".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(browse_client::serve(None, tx, requests)),
                Err(e) => eprintln!("igotchuu-monitor: cannot start the async runtime: {e}"),
            }
        });
    if let Err(e) = spawned {
        eprintln!("igotchuu-monitor: cannot start the browse thread: {e}");
    }
    let shared = shared.clone();
    glib::spawn_future_local(async move {
        while let Some(event) = rx.recv().await {
            shared.borrow_mut().model.apply(event);
            render(&shared);
        }
    });
}

/// A new page (one window at a time): its root widget, for the window's stack. The window is
/// given by [`set_window`] once it exists.
pub fn attach(shared: &Shared) -> gtk::Widget {
    let page = BrowsePage::new();
    let root = page.root.clone().upcast();
    shared.borrow_mut().page = Some(page);
    root
}

pub fn set_window(shared: &Shared, window: &adw::ApplicationWindow) {
    shared.borrow_mut().window = Some(window.clone());
    render(shared);
}

/// The window was closed.
pub fn detach(shared: &Shared) {
    let mut s = shared.borrow_mut();
    s.page = None;
    s.window = None;
}

/// The page was shown: the snapshots are asked for the first time.
pub fn shown(shared: &Shared) {
    let first = !std::mem::replace(&mut shared.borrow_mut().loaded, true);
    if first {
        let profile = shared.borrow().model.profile().to_owned();
        act(shared, |m| Some(m.load(&profile)));
    }
}

/// The profiles the status page learnt (the daemon's `Profiles`).
pub fn set_profiles(shared: &Shared, profiles: &[String]) {
    if shared.borrow().profiles != profiles {
        shared.borrow_mut().profiles = profiles.to_vec();
        render(shared);
    }
}

pub fn render(shared: &Shared) {
    let mut s = shared.borrow_mut();
    let s = &mut *s;
    let screen = s.model.screen(now());
    s.action.set_state(&screen.tag().to_variant());
    if let Some(page) = s.page.as_mut() {
        page.set_profiles(&s.profiles, s.model.profile());
        page.render(&screen, s.window.as_ref());
    }
}

/// Runs `f` on the model, sends the request it gives, renders.
fn act(shared: &Shared, f: impl FnOnce(&mut Browse) -> Option<Request>) {
    {
        let mut s = shared.borrow_mut();
        if let Some(r) = f(&mut s.model) {
            let _ = s.requests.send(r);
        }
    }
    render(shared);
}

/// Whether `p` exists on the user's disk now (the monitor runs as the user): a restore there
/// would meet it. A dangling symlink counts.
fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

fn add(
    app: &adw::Application,
    name: &str,
    ty: Option<&glib::VariantTy>,
    f: impl Fn(Option<&glib::Variant>) + 'static,
) {
    let a = gio::SimpleAction::new(name, ty);
    a.connect_activate(move |_, p| f(p));
    app.add_action(&a);
}

fn string(p: Option<&glib::Variant>) -> String {
    p.and_then(|v| v.get::<String>()).unwrap_or_default()
}

pub fn add_actions(app: &adw::Application, shared: &Shared) {
    app.add_action(&shared.borrow().action);
    let s = shared.clone();
    let on = move |name: &str,
                   ty: Option<&glib::VariantTy>,
                   f: fn(&mut Browse, Option<&glib::Variant>) -> Option<Request>| {
        let s = s.clone();
        add(app, name, ty, move |p| act(&s, |m| f(m, p)));
    };
    let st = Some(glib::VariantTy::STRING);
    on("browse-profile", st, |m, p| Some(m.load(&string(p))));
    on("browse-refresh", None, |m, _| {
        let profile = m.profile().to_owned();
        Some(m.load(&profile))
    });
    on("browse-snapshot", st, |m, p| m.choose_snapshot(&string(p)));
    on("browse-back", None, |m, _| {
        m.back_to_snapshots();
        None
    });
    on("browse-go", st, |m, p| m.go(&string(p)));
    on("browse-open", st, |m, p| m.open(&string(p)));
    on("browse-up", None, |m, _| m.up());
    on(
        "browse-select",
        Some(glib::VariantTy::new("(sb)").expect("a valid type")),
        |m, p| {
            if let Some((name, selected)) = p.and_then(|v| v.get::<(String, bool)>()) {
                m.set_selected(&name, selected);
            }
            None
        },
    );
    {
        // A target given here supersedes an open chooser (scripts and the tests use this).
        let s = shared.clone();
        add(app, "browse-restore-to", st, move |p| {
            let chooser = s.borrow_mut().chooser.take();
            if let Some(c) = chooser {
                c.destroy();
            }
            let target = match string(p) {
                t if t.is_empty() => Target::InPlace,
                t => Target::Folder(t),
            };
            act(&s, |m| m.restore_to(target, &exists));
        });
    }
    on("browse-answer", st, |m, p| {
        m.answer(match string(p).as_str() {
            "keep" => Answer::KeepBoth,
            "replace" => Answer::Replace,
            _ => Answer::Cancel,
        })
    });
    on("browse-cancel", None, |m, _| m.cancel());
    on("browse-dismiss", None, |m, _| {
        m.dismiss();
        None
    });
    {
        let s = shared.clone();
        add(app, "browse-restore", None, move |_| choose_target(&s));
    }
    {
        let s = shared.clone();
        add(app, "browse-show", None, move |_| show_in_files(&s));
    }
}

/// "Restore to…": a folder chooser opened at the original place (the folder browsed, as it is
/// on disk now; the home when that is gone). The folder picked goes to the model, which asks
/// before anything would be replaced.
fn choose_target(shared: &Shared) {
    let Some(window) = shared.borrow().window.clone() else {
        return;
    };
    let original = shared.borrow().model.folder().to_owned();
    let chooser = gtk::FileChooserNative::new(
        Some("Restore to"),
        Some(&window),
        gtk::FileChooserAction::SelectFolder,
        Some("_Restore Here"),
        Some("_Cancel"),
    );
    chooser.set_modal(true);
    let start = Path::new(&original);
    let start = if start.is_dir() {
        start.to_owned()
    } else {
        glib::home_dir()
    };
    if let Err(e) = chooser.set_current_folder(Some(&gio::File::for_path(&start))) {
        eprintln!(
            "igotchuu-monitor: cannot open the chooser at {}: {e}",
            start.display()
        );
    }
    {
        let s = shared.clone();
        chooser.connect_response(move |c, response| {
            let folder = c.file().and_then(|f| f.path());
            s.borrow_mut().chooser = None;
            if response != gtk::ResponseType::Accept {
                return;
            }
            if let Some(folder) = folder {
                let target = Target::Folder(folder.to_string_lossy().into_owned());
                act(&s, |m| m.restore_to(target, &exists));
            }
        });
    }
    chooser.show();
    shared.borrow_mut().chooser = Some(chooser);
}

/// "Show in Files": the file manager's org.freedesktop.FileManager1.ShowItems on the session
/// bus (it opens the folders with the restored entries selected); without one, the folder of the
/// first entry through GTK's launcher (the desktop's default for folders).
fn show_in_files(shared: &Shared) {
    let placed = shared.borrow().model.placed();
    let Some(first) = placed.first().cloned() else {
        return;
    };
    let window = shared.borrow().window.clone();
    let uris: Vec<String> = placed.iter().map(|p| file_uri(p)).collect();
    glib::spawn_future_local(async move {
        let shown = async {
            let bus = gio::bus_get_future(gio::BusType::Session).await?;
            bus.call_future(
                Some("org.freedesktop.FileManager1"),
                "/org/freedesktop/FileManager1",
                "org.freedesktop.FileManager1",
                "ShowItems",
                Some(&(uris, "").to_variant()),
                None,
                gio::DBusCallFlags::NONE,
                10_000,
            )
            .await
        }
        .await;
        if let Err(e) = shown {
            eprintln!(
                "igotchuu-monitor: no file manager answers ShowItems ({e}); opening the folder"
            );
            let folder = Path::new(&first)
                .parent()
                .map_or_else(|| "/".to_owned(), |p| p.to_string_lossy().into_owned());
            gtk::show_uri(window.as_ref(), &file_uri(&folder), gtk::gdk::CURRENT_TIME);
        }
    });
}
