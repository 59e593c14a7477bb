//! The desktop monitor's parts that need no GTK: the view model ([`model`]), the D-Bus client
//! that feeds it ([`client`]), and background mode's decisions and settings ([`background`]);
//! the "Browse backups" page's model ([`browse_model`]) and its bus client ([`browse_client`]).
//! The binary (src/main.rs, src/window.rs) renders them with GTK 4 and libadwaita.

pub mod background;
pub mod browse_client;
pub mod browse_model;
pub mod client;
pub mod model;

/// The application id: the .desktop file's name, the icon's, the metainfo's, and the name the
/// app owns on the session bus (its actions are at [`APP_PATH`]).
pub const APP_ID: &str = "com.nyantec.IGotChuu.Monitor";
/// Where GtkApplication exports its actions (org.gtk.Actions) on the session bus.
pub const APP_PATH: &str = "/com/nyantec/IGotChuu/Monitor";
/// The window's title, which tests find it by.
pub const WINDOW_TITLE: &str = "igotchuu Backups";

/// The profile lists' entry for the top-level config ("" on the bus).
pub const TOP_LEVEL: &str = "Default";

/// Now, in Unix seconds (0 if the clock is before 1970).
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
