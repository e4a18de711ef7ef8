# Every SPIKE binary (spike-nexus, spike-keeper, spike-bootstrap, spike), built from Cargo.lock,
# with the systemd units of units/ (paths filled in), their helper scripts, shell completions
# and the man page.
#
# Units: $out/lib/systemd/system holds the SPIKE units only, so `systemd.packages` on NixOS
# picks them up. The SPIRE units of the Debian appliance (spire-server.service,
# spire-agent.service) go to $out/share/spike/units/ instead: NixOS has its own
# services.spire.{server,agent}, and a unit file of the same name in a package would turn
# those modules' units into drop-ins on top of ours. The configuration templates of
# units/etc/ go to $out/share/spike/etc/ with the placeholders filled for `trustDomain`,
# `keepers` and `threshold` (overridable with `.override`).
{
  lib,
  rustPlatform,
  installShellFiles,
  spire,
  trustDomain ? "spike.internal",
  keepers ? 3,
  threshold ? null,
  # The flake passes its revision; reported by `spike-nexus --version` and /v1/sys/health.
  buildId ? "nix",
}:
let
  spikeLib = import ./lib.nix;
  root = ../.;
  cargoToml = lib.importTOML ../Cargo.toml;
  spikeUnits = [
    "spike-keeper@.socket"
    "spike-keeper@.service"
    # Provisions keeper N's shard sealing key (services.spike.keepers.shardSealing).
    "spike-keeper-sealing@.service"
    "spike-nexus.socket"
    "spike-nexus-health.socket"
    "spike-nexus-metrics.socket"
    "spike-nexus.service"
    "spike-bootstrap.service"
    "spike-ready.service"
    "spike-ready.socket"
    "spike-ready-trigger.service"
    "spike-register.service"
    # Not spike-spire-join.service: it is the Debian layout's agent join (units/libexec/
    # spire-join); on NixOS the module joins the agent (spike-spire-agent-join.service).
    "spike.target"
  ];
  spireUnits = [
    "spire-server.service"
    "spire-agent.service"
  ];
in
rustPlatform.buildRustPackage {
  pname = "spike-rs";
  inherit (cargoToml.workspace.package) version;

  # Only what the build reads, so editing docs or tests elsewhere does not rebuild.
  src = lib.fileset.toSource {
    inherit root;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../crates
      ../units
      ../config-examples
      ../README.md
      ../docs/operations.md
      ../clippy.toml
      ../rustfmt.toml
    ];
  };

  cargoLock.lockFile = ../Cargo.lock;

  nativeBuildInputs = [ installShellFiles ];

  env.SPIKE_BUILD_ID = buildId;

  # The tests are hermetic (127.0.0.1:0, an in-process Workload API); the real-SPIRE and Go
  # interoperability tests skip themselves without SPIKE_SPIRE_BIN and `go`.
  cargoTestFlags = [ "--workspace" ];

  postInstall =
    let
      fill = spikeLib.sedArgs (
        spikeLib.placeholders {
          bindir = "${placeholder "out"}/bin";
          libexecdir = "${placeholder "out"}/libexec";
          sysconfdir = "/etc";
          docdir = "${placeholder "out"}/share/doc/spike";
          inherit trustDomain keepers;
          threshold = if threshold == null then spikeLib.majority keepers else threshold;
        }
      );
      # The helper scripts and the SPIRE units call spire-server/spire-agent through @bindir@;
      # here SPIRE lives in its own package.
      spireBin = "-e 's|@bindir@/spire-|${spire}/bin/spire-|g' -e 's|BIN=\"@bindir@\"|BIN=\"${spire}/bin\"|'";
    in
    ''
      install -d $out/lib/systemd/system $out/libexec/spike $out/share/spike/units \
        $out/share/spike/etc/spike $out/share/spike/etc/spire $out/share/doc/spike
      # The shared sandbox (units/hardening.conf) replaces each unit's hardening placeholder;
      # sed reads a missing file as empty, so check it is there and that every unit got it.
      test -s units/hardening.conf
      for u in ${lib.escapeShellArgs spikeUnits}; do
        sed -e '/^@hardening@$/{r units/hardening.conf' -e 'd;}' ${spireBin} ${fill} units/"$u" \
          > $out/lib/systemd/system/"$u"
        if grep -q '^@hardening@$' units/"$u"; then
          grep -q '^DynamicUser=yes$' $out/lib/systemd/system/"$u"
        fi
      done
      for u in ${lib.escapeShellArgs spireUnits}; do
        sed ${spireBin} ${fill} units/"$u" > $out/share/spike/units/"$u"
      done
      for s in units/libexec/*; do
        sed ${spireBin} ${fill} "$s" > $out/libexec/spike/"$(basename "$s")"
        chmod 0755 $out/libexec/spike/"$(basename "$s")"
      done
      for c in units/etc/spike/* units/etc/spire/*; do
        sed ${fill} "$c" > $out/share/spike/etc/"$(basename "$(dirname "$c")")"/"$(basename "$c")"
      done
      if grep -rn '@[a-z_]*@' $out/lib/systemd/system $out/libexec/spike $out/share/spike; then
        echo "unfilled placeholders above" >&2
        exit 1
      fi
      # The spike-health group (SocketGroup= of spike-nexus-health.socket) for systemd-sysusers;
      # the NixOS module declares it as users.groups.spike-health.
      install -D -m 0644 units/sysusers.d/spike.conf $out/lib/sysusers.d/spike.conf
      # The operator's way back after a power cut, on root's PATH with the other binaries.
      ln -s $out/libexec/spike/spike-operator $out/bin/spike-operator
      install -m 0644 README.md $out/share/doc/spike/README.md
      install -m 0644 docs/operations.md $out/share/doc/spike/operations.md
      cp config-examples/*.toml $out/share/doc/spike/

      $out/bin/spike man > spike.1
      installManPage spike.1
      installShellCompletion --cmd spike \
        --bash <($out/bin/spike completions bash) \
        --zsh <($out/bin/spike completions zsh) \
        --fish <($out/bin/spike completions fish)
    '';

  # The shipped example configurations pass each daemon's own check.
  doInstallCheck = true;
  installCheckPhase = ''
    runHook preInstallCheck
    $out/bin/spike-nexus --version
    $out/bin/spike-nexus check-config --config config-examples/nexus-full.toml
    $out/bin/spike-keeper check-config --config config-examples/keeper-full.toml
    $out/bin/spike-bootstrap check-config --config config-examples/bootstrap-full.toml
    runHook postInstallCheck
  '';

  passthru = {
    inherit spikeUnits spireUnits;
  };

  meta = {
    description = "SPIKE, the SPIFFE-native secrets manager, as a Rust systemd appliance";
    homepage = cargoToml.workspace.package.repository;
    license = lib.licenses.asl20;
    mainProgram = "spike";
    platforms = lib.platforms.linux;
  };
}
