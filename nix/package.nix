# The igotchuu package: the binary, the D-Bus policy (share/dbus-1/system.d, which
# services.dbus.packages picks up), the systemd units of dist/ with ExecStart pointing into
# the store (lib/systemd/system, which systemd.packages picks up), the man page and completions.
{ lib, rustPlatform, installShellFiles }:

let
  # A Cargo workspace: the version is the workspace's, the description the tool crate's.
  workspaceToml = lib.importTOML ../Cargo.toml;
  cargoToml = lib.importTOML ../crates/igotchuu/Cargo.toml;
in
rustPlatform.buildRustPackage {
  pname = "igotchuu";
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

  nativeBuildInputs = [ installShellFiles ];

  # Unit tests only: the integration tests need root, loop devices, btrfs and restic, none of
  # which the build sandbox has.
  cargoTestFlags = [ "--bins" ];
  # The tool only; the desktop monitor is packages.monitor.
  cargoBuildFlags = [ "-p" "igotchuu" ];

  postInstall = ''
    install -Dm644 dist/dbus-1/system.d/com.nyantec.IGotChuu.conf \
      $out/share/dbus-1/system.d/com.nyantec.IGotChuu.conf
    install -Dm644 -t $out/lib/systemd/system dist/systemd/*
    substituteInPlace $out/lib/systemd/system/igotchuu.service $out/lib/systemd/system/igotchuu@.service \
      $out/lib/systemd/system/igotchuu-daemon.service \
      --replace-fail /usr/bin/igotchuu $out/bin/igotchuu
    # igotchuu daemon: D-Bus activation and polkit (issue 9).
    install -Dm644 dist/dbus-1/system-services/com.nyantec.IGotChuu.service \
      $out/share/dbus-1/system-services/com.nyantec.IGotChuu.service
    substituteInPlace $out/share/dbus-1/system-services/com.nyantec.IGotChuu.service \
      --replace-fail /usr/bin/igotchuu $out/bin/igotchuu
    install -Dm644 dist/polkit-1/actions/com.nyantec.igotchuu.policy \
      $out/share/polkit-1/actions/com.nyantec.igotchuu.policy
    install -Dm644 dist/polkit-1/rules.d/50-igotchuu.rules \
      $out/share/polkit-1/rules.d/50-igotchuu.rules
    install -Dm644 dist/sysusers.d/igotchuu.conf $out/lib/sysusers.d/igotchuu.conf
    install -Dm644 dist/igotchuu.example.toml $out/share/doc/igotchuu/examples/igotchuu.toml
    # The man page and completions committed under dist/ by scripts/generate: the same files
    # the .deb ships (Cargo.toml's [package.metadata.deb] assets).
    installManPage dist/man/igotchuu.1
    installShellCompletion --cmd igotchuu \
      --bash dist/completions/igotchuu.bash \
      --zsh dist/completions/_igotchuu \
      --fish dist/completions/igotchuu.fish
  '';

  meta = {
    description = cargoToml.package.description;
    homepage = "https://github.com/nyantec/igotchuu";
    license = lib.licenses.mit;
    platforms = lib.platforms.linux;
    mainProgram = "igotchuu";
  };
}
