//! The monitor's packaging files (dist/monitor/): the .desktop file and the autostart entry
//! pass `desktop-file-validate`, the metainfo passes `appstreamcli validate --no-net`, the app
//! id is the same everywhere, the Debian package's assets exist, and the workspace builds the
//! monitor only when asked (servers building the tool must not need GTK).

// The tool's harness: the test kit crate (crates/igotchuu-testkit).
use igotchuu_testkit as common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::bus::run;
use common::have;
use igotchuu_monitor::APP_ID;

fn dist(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../dist/monitor")
        .join(name)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// `Key=value` of a .desktop file's [Desktop Entry].
fn key(text: &str, k: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{k}=")))
        .map(str::to_owned)
}

#[test]
fn desktop_entries_validate_and_name_the_app() {
    if !have(&["desktop-file-validate"]) {
        return;
    }
    let app = dist(&format!("{APP_ID}.desktop"));
    let autostart = dist(&format!("{APP_ID}-autostart.desktop"));
    for f in [&app, &autostart] {
        let out = run(Command::new("desktop-file-validate").arg(f));
        out.assert_code(0);
        assert!(
            !out.stdout.contains("error") && !out.stdout.contains("warning"),
            "{out}"
        );
    }
    let app = read(&app);
    let autostart = read(&autostart);
    assert_eq!(key(&app, "Exec").as_deref(), Some("igotchuu-monitor"));
    assert_eq!(
        key(&autostart, "Exec").as_deref(),
        Some("igotchuu-monitor --background")
    );
    for t in [&app, &autostart] {
        assert_eq!(key(t, "Icon").as_deref(), Some(APP_ID));
    }
    assert_eq!(key(&autostart, "NoDisplay").as_deref(), Some("true"));
    assert!(dist(&format!("{APP_ID}.svg")).is_file(), "the icon");
}

#[test]
fn metainfo_passes_appstreamcli_and_names_the_app() {
    if !have(&["appstreamcli"]) {
        return;
    }
    let path = dist(&format!("{APP_ID}.metainfo.xml"));
    let out = run(Command::new("appstreamcli")
        .args(["validate", "--no-net"])
        .arg(&path));
    out.assert_code(0);
    let xml = read(&path);
    assert!(xml.contains(&format!("<id>{APP_ID}</id>")), "{xml}");
    assert!(
        xml.contains(&format!(
            r#"<launchable type="desktop-id">{APP_ID}.desktop</launchable>"#
        )),
        "{xml}"
    );
    // The screenshots it names are the committed ones.
    for name in ["running.png", "idle.png"] {
        assert!(xml.contains(&format!("docs/screenshots/{name}")));
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../docs/screenshots")
            .join(name);
        assert!(p.is_file(), "{} is committed", p.display());
    }
}

#[test]
fn the_debian_package_assets_exist_and_gtk_is_not_a_default_member() {
    let manifest: toml::Value = toml::from_str(&read(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"),
    ))
    .expect("Cargo.toml parses");
    let assets = manifest["package"]["metadata"]["deb"]["assets"]
        .as_array()
        .expect("deb assets");
    for a in assets {
        let src = a[0].as_str().expect("source");
        if src.starts_with("target/") {
            continue;
        }
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(src);
        assert!(p.is_file(), "deb asset {src} is missing");
    }
    let dests: Vec<&str> = assets.iter().filter_map(|a| a[1].as_str()).collect();
    assert!(
        dests.contains(&"etc/xdg/autostart/com.nyantec.IGotChuu.Monitor.desktop"),
        "{dests:?}"
    );
    let root: toml::Value = toml::from_str(&read(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml"),
    ))
    .expect("the workspace's Cargo.toml parses");
    let list = |k: &str| -> Vec<String> {
        root["workspace"][k]
            .as_array()
            .expect("a list")
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    assert!(list("members").contains(&"crates/igotchuu-monitor".to_owned()));
    assert!(
        !list("default-members").contains(&"crates/igotchuu-monitor".to_owned()),
        "a plain `cargo build` must not need GTK"
    );
}
