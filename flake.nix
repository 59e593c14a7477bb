{
  description = "igotchuu: consistent restic backups of a live Linux system from read-only btrfs or ZFS snapshots";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (pkgs: rec {
        igotchuu = pkgs.callPackage ./nix/package.nix { };
        # The desktop monitor (GTK 4, libadwaita), a package of its own; see nix/monitor.nix.
        monitor = pkgs.callPackage ./nix/monitor.nix { };
        default = igotchuu;
      });

      overlays.default = final: prev: {
        igotchuu = final.callPackage ./nix/package.nix { };
      };

      # services.igotchuu; see nix/module.nix and docs/install.md.
      nixosModules.default = ./nix/module.nix;
      nixosModules.igotchuu = ./nix/module.nix;

      formatter = forAllSystems (pkgs: pkgs.nixpkgs-fmt);
    };
}
