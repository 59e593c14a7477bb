# The desktop monitor (crates/igotchuu-monitor): a GTK 4 + libadwaita app, a package of its own
# so that the tool's package (nix/package.nix) never pulls in GTK. Installs the binary, the
# .desktop file, the autostart entry (etc/xdg/autostart, which NixOS links into /etc/xdg through
# environment.pathsToLink), the icon and the AppStream metainfo. wrapGAppsHook4 sets
# XDG_DATA_DIRS and GSETTINGS_SCHEMA_DIR for GTK's own schemas and icons.
{ lib, rustPlatform, pkg-config, wrapGAppsHook4, gtk4, libadwaita, glib }:

let
  workspaceToml = lib.importTOML ../Cargo.toml;
  cargoToml = lib.importTOML ../crates/igotchuu-monitor/Cargo.toml;
in
rustPlatform.buildRustPackage {
  pname = "igotchuu-monitor";
  inherit (workspaceToml.workspace.package) version;

  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../README.md
      ../docs
      ../crates
      ../dist
    ];
  };

  cargoLock.lockFile = ../Cargo.lock;

  nativeBuildInputs = [ pkg-config wrapGAppsHook4 ];
  buildInputs = [ gtk4 libadwaita glib ];

  cargoBuildFlags = [ "-p" "igotchuu-monitor" ];
  # The view model's unit tests; the integration tests need root, btrfs, restic, Xvfb and dunst.
  cargoTestFlags = [ "-p" "igotchuu-monitor" "--lib" ];

  postInstall = ''
    install -Dm644 dist/monitor/com.nyantec.IGotChuu.Monitor.desktop \
      $out/share/applications/com.nyantec.IGotChuu.Monitor.desktop
    install -Dm644 dist/monitor/com.nyantec.IGotChuu.Monitor-autostart.desktop \
      $out/etc/xdg/autostart/com.nyantec.IGotChuu.Monitor.desktop
    substituteInPlace $out/etc/xdg/autostart/com.nyantec.IGotChuu.Monitor.desktop \
      --replace-fail "Exec=igotchuu-monitor" "Exec=$out/bin/igotchuu-monitor"
    install -Dm644 dist/monitor/com.nyantec.IGotChuu.Monitor.svg \
      $out/share/icons/hicolor/scalable/apps/com.nyantec.IGotChuu.Monitor.svg
    install -Dm644 dist/monitor/com.nyantec.IGotChuu.Monitor.metainfo.xml \
      $out/share/metainfo/com.nyantec.IGotChuu.Monitor.metainfo.xml
  '';

  meta = {
    description = cargoToml.package.description;
    homepage = "https://github.com/nyantec/igotchuu";
    license = lib.licenses.mit;
    platforms = lib.platforms.linux;
    mainProgram = "igotchuu-monitor";
  };
}
