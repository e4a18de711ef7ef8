{
  description = "SPIKE, the SPIFFE-native secrets manager, as a Rust systemd appliance";

  # services.spire (nixos/modules/services/security/spire) entered nixpkgs in January 2026;
  # nixos-26.05 is the first stable release that has it. flake.lock pins this branch to
  # a0374025a863 (2026-06-11); `nix flake update` moves it (see README, "Pinned nixpkgs").
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      buildId = self.shortRev or self.dirtyShortRev or "dirty";
      spikePackage = pkgs: pkgs.callPackage ./nix/package.nix { inherit buildId; };

      # Evaluation-time tests of the Nix code itself (they also run in scripts/check-nix.sh).
      nixTests =
        let
          failures = {
            lib = import ./nix/lib-tests.nix;
            modules = import ./nix/module-tests.nix { inherit lib; };
            # The accepted neighbours; the rejected configurations run in scripts/check-nix.sh.
            strictness = import ./nix/eval-strictness-tests.nix { inherit lib; };
          };
        in
        if failures.lib == [ ] && failures.modules == [ ] && failures.strictness == [ ] then
          true
        else
          throw "Nix tests failed: ${builtins.toJSON failures}";
    in
    {
      overlays.default = final: _prev: { spike-rs = spikePackage final; };

      packages = forAllSystems (pkgs: rec {
        spike-rs = spikePackage pkgs;
        default = spike-rs;
      });

      # services.spike.{nexus,keepers,bootstrap,pilot,spire}; see nixos-modules/default.nix.
      nixosModules.default =
        { lib, pkgs, ... }:
        {
          imports = [ ./nixos-modules ];
          services.spike.package = lib.mkDefault (
            self.packages.${pkgs.stdenv.hostPlatform.system}.default or (spikePackage pkgs)
          );
        };

      checks = forAllSystems (
        pkgs:
        let
          spike = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
          vmTest =
            file:
            pkgs.testers.runNixOSTest {
              imports = [ file ];
              defaults.services.spike.package = spike;
            };
          scenario = name: lib.optionalAttrs (builtins.pathExists (./vm-tests/scenarios + "/${name}.py")) {
            "vm-${lib.replaceStrings [ "_" ] [ "-" ] name}" = vmTest (./vm-tests + "/${name}.nix");
          };
        in
        {
          # Builds every binary and runs the workspace's tests (hermetic: no SPIRE, no Go).
          package = spike;

          clippy = spike.overrideAttrs (old: {
            pname = "spike-rs-clippy";
            nativeBuildInputs = old.nativeBuildInputs ++ [ pkgs.clippy ];
            buildPhase = ''
              runHook preBuild
              cargo clippy --workspace --all-targets --locked --offline -- -D warnings
              runHook postBuild
            '';
            doCheck = false;
            doInstallCheck = false;
            postInstall = "";
            installPhase = "touch $out";
          });

          fmt =
            pkgs.runCommand "spike-rs-fmt"
              {
                nativeBuildInputs = [ pkgs.rustfmt ];
                src = lib.fileset.toSource {
                  root = ./.;
                  fileset = lib.fileset.unions [
                    ./rustfmt.toml
                    (lib.fileset.fileFilter (f: f.hasExt "rs") ./crates)
                  ];
                };
              }
              ''
                cd "$src"
                find crates -name '*.rs' -print0 | xargs -0 rustfmt --check --edition 2024
                touch $out
              '';

          nix = assert nixTests; pkgs.runCommand "spike-nix-tests" { } "touch $out";
        }
        // scenario "fresh_boot"
        // scenario "restarts"
        // scenario "hardening"
        // scenario "pitfalls"
        // scenario "multi_host"
        // scenario "power_cut"
        // scenario "power_cut_sealed"
        // scenario "sealing_hosts"
        // scenario "ha"
      );

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          inputsFrom = [ self.packages.${pkgs.stdenv.hostPlatform.system}.default ];
          packages = [
            pkgs.clippy
            pkgs.rustfmt
            pkgs.rust-analyzer
            pkgs.cargo-deny
            pkgs.spire
            pkgs.go
            pkgs.nixfmt
          ];
        };
      });

      formatter = forAllSystems (pkgs: pkgs.nixfmt-tree);
    };
}
