//! The GTK application: one process for the window and background mode. The D-Bus client runs
//! on a thread of its own (a tokio runtime, as zbus needs); its events reach the main loop over
//! a channel and go through the [`Watcher`] (the view model plus background mode's decisions).
//!
//! GtkApplication makes the process unique on the session bus under [`APP_ID`]: started with
//! `--background` at login, a later `igotchuu-monitor` (the menu entry) or a notification's
//! action opens the window in it, so the window shows the errors the background saw. Its actions
//! are exported there (org.gtk.Actions at [`APP_PATH`]): `backup-now`, `stop`, `show-window`.
//!
//! Notifications go through GNotification, which on a desktop without a portal or GNOME Shell's
//! org.gtk.Notifications sends them to org.freedesktop.Notifications and maps their buttons
//! back to the app's actions.

use std::cell::RefCell;
use std::process::ExitCode;
use std::rc::Rc;

use adw::prelude::*;
use gtk::{gio, glib};
use tokio::sync::mpsc;

use igotchuu_monitor::background::{Memory, Note, Settings, Watcher};
use igotchuu_monitor::client::{self, Request};
use igotchuu_monitor::model::{Event, Screen};
use igotchuu_monitor::{now, APP_ID};

use crate::browse_app;
use crate::window::Window;

/// How often the "… ago" texts are refreshed while the window is open.
const REFRESH_SECONDS: u32 = 30;
/// How often background mode checks for "no success in N days" after the check at login.
const STALE_CHECK_SECONDS: u32 = 24 * 3600;

struct State {
    watcher: Watcher,
    memory_path: Option<std::path::PathBuf>,
    window: Option<Window>,
    background: bool,
    requests: mpsc::UnboundedSender<Request>,
    /// Whether the first event arrived (the stale check waits for the daemon's LastSuccess).
    first_event_seen: bool,
    /// The read-only `screen` action: its state is [`Screen::tag`](igotchuu_monitor::model::Screen::tag).
    screen_action: gio::SimpleAction,
    /// The "Browse backups" page (its own state: it works where the status is denied).
    browse: browse_app::Shared,
    _hold: Option<gio::ApplicationHoldGuard>,
}

/// The settings file's settings, or the defaults (saying why when the file is bad).
fn load_settings() -> Settings {
    match Settings::path().map(|p| Settings::load(&p)) {
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            eprintln!("igotchuu-monitor: {e}; using the defaults");
            Settings::default()
        }
        None => Settings::default(),
    }
}

pub fn run(background: bool) -> ExitCode {
    let settings = load_settings();
    let memory_path = Memory::path();
    let memory = memory_path.as_deref().map(Memory::load).unwrap_or_default();
    let loaded_since = memory.watching_since;

    let app = adw::Application::builder().application_id(APP_ID).build();
    let (req_tx, req_rx) = mpsc::unbounded_channel();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let (browse_tx, browse_rx) = mpsc::unbounded_channel();
    let state = Rc::new(RefCell::new(State {
        watcher: Watcher::new(settings, memory, now()),
        memory_path,
        window: None,
        background,
        requests: req_tx,
        first_event_seen: false,
        screen_action: screen_action(),
        browse: browse_app::new(browse_tx),
        _hold: None,
    }));
    // The first start in background mode begins the "no success for N days" count: kept.
    if background && state.borrow().watcher.memory.watching_since != loaded_since {
        save_memory(&state.borrow());
    }
    // Set by the primary instance's own first activation in background mode, which must not
    // open the window; later activations (the menu entry, a notification) do.
    let skip_activate = Rc::new(std::cell::Cell::new(background));

    let ev_rx = RefCell::new(Some((ev_tx, ev_rx, req_rx, browse_rx)));
    {
        let state = state.clone();
        app.connect_startup(move |app| {
            add_actions(app, &state);
            if state.borrow().background {
                let guard = app.hold();
                state.borrow_mut()._hold = Some(guard);
            }
            let Some((ev_tx, ev_rx, req_rx, browse_rx)) = ev_rx.borrow_mut().take() else {
                return;
            };
            start_client(ev_tx, req_rx);
            let browse = state.borrow().browse.clone();
            browse_app::start_client(&browse, browse_rx);
            receive_events(app, &state, ev_rx);
            start_timers(app, &state);
        });
    }
    {
        let state = state.clone();
        app.connect_activate(move |app| {
            if skip_activate.replace(false) {
                return;
            }
            show_window(app, &state);
        });
    }
    // A second `--background` (autostart and a manual start, or two sessions' autostarts)
    // leaves the running one alone instead of asking it to open the window.
    if background {
        match app.register(gio::Cancellable::NONE) {
            Ok(()) if app.is_remote() => return ExitCode::SUCCESS,
            Ok(()) => {}
            Err(e) => eprintln!("igotchuu-monitor: cannot register on the session bus: {e}"),
        }
    }
    // GApplication's own option parsing sees only the program name: ours is done (main.rs).
    let argv0 = std::env::args()
        .next()
        .unwrap_or_else(|| "igotchuu-monitor".into());
    let code = app.run_with_args(&[argv0]);
    if code == glib::ExitCode::SUCCESS {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn start_client(events: mpsc::UnboundedSender<Event>, requests: mpsc::UnboundedReceiver<Request>) {
    let spawned = std::thread::Builder::new()
        .name("igotchuu-dbus".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(client::watch(None, events, requests)),
                Err(e) => {
                    let _ =
                        events.send(Event::NoBus(format!("cannot start the async runtime: {e}")));
                }
            }
        });
    if let Err(e) = spawned {
        eprintln!("igotchuu-monitor: cannot start the D-Bus thread: {e}");
    }
}

fn receive_events(
    app: &adw::Application,
    state: &Rc<RefCell<State>>,
    mut rx: mpsc::UnboundedReceiver<Event>,
) {
    let (state, app) = (state.clone(), app.clone());
    glib::spawn_future_local(async move {
        while let Some(event) = rx.recv().await {
            let note = {
                let mut s = state.borrow_mut();
                let before = s.watcher.memory.clone();
                let note = s.watcher.on_event(event, now());
                if s.watcher.memory != before {
                    save_memory(&s);
                }
                note
            };
            let first = !std::mem::replace(&mut state.borrow_mut().first_event_seen, true);
            let background = state.borrow().background;
            if background {
                if let Some(note) = note {
                    notify(&app, &note);
                }
                if first {
                    stale_check(&app, &state);
                }
            }
            render(&state);
        }
    });
}

fn save_memory(s: &State) {
    if let Some(p) = &s.memory_path {
        if let Err(e) = s.watcher.memory.save(p) {
            eprintln!("igotchuu-monitor: {e}");
        }
    }
}

fn start_timers(app: &adw::Application, state: &Rc<RefCell<State>>) {
    let s = state.clone();
    glib::timeout_add_seconds_local(REFRESH_SECONDS, move || {
        render(&s);
        glib::ControlFlow::Continue
    });
    if state.borrow().background {
        let (s, app) = (state.clone(), app.clone());
        glib::timeout_add_seconds_local(STALE_CHECK_SECONDS, move || {
            stale_check(&app, &s);
            glib::ControlFlow::Continue
        });
    }
}

fn stale_check(app: &adw::Application, state: &Rc<RefCell<State>>) {
    let note = state.borrow().watcher.stale(now());
    if let Some(note) = note {
        notify(app, &note);
    }
}

fn notify(app: &adw::Application, note: &Note) {
    let n = gio::Notification::new(&note.title());
    n.set_body(Some(&note.body()));
    n.set_icon(&gio::ThemedIcon::new(APP_ID));
    n.set_default_action("app.show-window");
    if note.shows_errors() {
        n.set_priority(gio::NotificationPriority::High);
        n.add_button("Show errors", "app.show-window");
    }
    app.send_notification(Some(note.id()), &n);
}

fn render(state: &Rc<RefCell<State>>) {
    let browse = {
        let mut s = state.borrow_mut();
        let screen = s.watcher.model().screen(now());
        s.screen_action.set_state(&screen.tag().to_variant());
        if let Some(w) = s.window.as_mut() {
            w.render(&screen);
        }
        if let Screen::Idle(v) = &screen {
            browse_app::set_profiles(&s.browse, &v.profiles);
        }
        s.browse.clone()
    };
    // The "… ago" of the backups' dates, too.
    browse_app::render(&browse);
}

fn show_window(app: &adw::Application, state: &Rc<RefCell<State>>) {
    let existing = state.borrow().window.as_ref().map(|w| w.window.clone());
    if let Some(w) = existing {
        w.present();
        return;
    }
    let browse = state.borrow().browse.clone();
    let window = Window::new(app, &browse_app::attach(&browse));
    browse_app::set_window(&browse, &window.window);
    {
        let b = browse.clone();
        window.on_page_change(move |browsing| {
            if browsing {
                browse_app::shown(&b);
            }
        });
    }
    {
        // Closing the window forgets it; background mode's hold keeps the process running.
        let (s, b) = (state.clone(), browse);
        window.window.connect_close_request(move |_| {
            s.borrow_mut().window = None;
            browse_app::detach(&b);
            glib::Propagation::Proceed
        });
    }
    let w = window.window.clone();
    state.borrow_mut().window = Some(window);
    render(state);
    w.present();
}

/// What the app shows, as a disabled stateful action: `gdbus call --session --dest
/// com.nyantec.IGotChuu.Monitor --object-path /com/nyantec/IGotChuu/Monitor --method
/// org.gtk.Actions.Describe screen` answers e.g. `((false, '', [<'idle:success'>]),)`.
fn screen_action() -> gio::SimpleAction {
    let a = gio::SimpleAction::new_stateful("screen", None, &"connecting".to_variant());
    a.set_enabled(false);
    a
}

fn add_actions(app: &adw::Application, state: &Rc<RefCell<State>>) {
    let backup_now = gio::SimpleAction::new("backup-now", None);
    {
        let s = state.clone();
        backup_now.connect_activate(move |_, _| {
            let s = s.borrow();
            let profile = s
                .window
                .as_ref()
                .map(Window::chosen_profile)
                .unwrap_or_default();
            let _ = s.requests.send(Request::Start(profile));
        });
    }
    // The same for a named profile ("" = the top level), for scripts and the tests:
    // `gdbus call … --method org.gtk.Actions.Activate backup-profile "[<'home'>]" {}`.
    let backup_profile = gio::SimpleAction::new("backup-profile", Some(glib::VariantTy::STRING));
    {
        let s = state.clone();
        backup_profile.connect_activate(move |_, param| {
            let profile = param.and_then(|p| p.get::<String>()).unwrap_or_default();
            let _ = s.borrow().requests.send(Request::Start(profile));
        });
    }
    let stop = gio::SimpleAction::new("stop", None);
    {
        let s = state.clone();
        stop.connect_activate(move |_, _| {
            let _ = s.borrow().requests.send(Request::Stop);
        });
    }
    let show = gio::SimpleAction::new("show-window", None);
    {
        let (s, a) = (state.clone(), app.clone());
        show.connect_activate(move |_, _| show_window(&a, &s));
    }
    // Opens the window at "Browse backups" (issue 20).
    let show_browse = gio::SimpleAction::new("show-browse", None);
    {
        let (s, a) = (state.clone(), app.clone());
        show_browse.connect_activate(move |_, _| {
            show_window(&a, &s);
            if let Some(w) = s.borrow().window.as_ref() {
                w.show_browse();
            }
        });
    }
    browse_app::add_actions(app, &state.borrow().browse);
    let quit = gio::SimpleAction::new("quit", None);
    {
        let a = app.clone();
        quit.connect_activate(move |_, _| a.quit());
    }
    for a in [
        &backup_now,
        &backup_profile,
        &stop,
        &show,
        &show_browse,
        &quit,
        &state.borrow().screen_action,
    ] {
        app.add_action(a);
    }
    app.set_accels_for_action("app.quit", &["<Control>q"]);
}
