# services.spike.keepers: the shard holders. Keeper N is the template instance
# spike-keeper@N (socket and service shipped in the package), listening on basePort + N.
# With shard sealing on, spike-keeper-sealing@N (a root oneshot, also shipped in the package)
# creates or checks keeper N's sealing key before every start of the keeper, and systemd hands
# the key to the keeper with LoadCredentialEncrypted= (docs/security.md, "Shard sealing").
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.services.spike;
  kcfg = cfg.keepers;
  h = import ./helpers.nix { inherit lib pkgs; };
  prefix = "services.spike.keepers.settings";
  file = h.configFor {
    name = "keeper";
    bin = "spike-keeper";
    inherit (cfg) package;
    inherit (kcfg) settings configFile;
    check = kcfg.checkConfig;
    # `check-config` refuses "tpm2" and "host+tpm2" where no TPM2 is reachable, which at build
    # time is the build sandbox, not the target. Check the rest as "auto" (accepted anywhere,
    # PCRs included); the target's spike-keeper-sealing@N refuses an unreachable TPM2 (exit 64).
    checkFilter = ''s/^([[:space:]]*shard_sealing[[:space:]]*=[[:space:]]*)"(tpm2|host\+tpm2)"/\1"auto"/'';
  };
  forEachNamed =
    unit: f: lib.listToAttrs (map (i: lib.nameValuePair "${unit}@${toString i}" (f i)) kcfg.instances);
  forEach = forEachNamed "spike-keeper";

  sealing = kcfg.shardSealing;
  sealed = sealing != "off";
  # The modes that need this machine's TPM2 ("auto" uses it when it is there).
  needsTpm = sealing == "tpm2" || sealing == "host+tpm2";
  mayUseTpm = needsTpm || sealing == "auto";
  sealingUnit = i: "spike-keeper-sealing@${toString i}.service";
  # The mode a configFile given as a Nix path sets (readable at evaluation), else null.
  fileSealing =
    if builtins.isPath kcfg.configFile then
      (builtins.fromTOML (builtins.readFile kcfg.configFile)).shard_sealing or "off"
    else
      null;
  # Whether keeper.toml's mode is known to be `shardSealing`: generated from it, or a Nix path
  # asserted to agree. A configFile given as a string is read by the keeper only.
  modeKnown = kcfg.configFile == null || builtins.isPath kcfg.configFile;
in
{
  meta.maintainers = [ ];

  options.services.spike.keepers = {
    enable = lib.mkEnableOption "SPIKE keepers on this host, one spike-keeper@N per entry of `instances`";

    instances = lib.mkOption {
      type = lib.types.listOf lib.types.ints.positive;
      default = [
        1
        2
        3
      ];
      example = lib.literalExpression "lib.range 1 5";
      description = ''
        The keepers that run on this host. Keeper N holds shard N, is the unit
        spike-keeper@N.service (socket-activated by spike-keeper@N.socket) and has the SPIFFE ID
        `spiffe://<trustDomain>/spike/keeper/N`.
      '';
    };

    listenAddress = lib.mkOption {
      type = lib.types.str;
      default = "127.0.0.1";
      example = "0.0.0.0";
      description = ''
        The address keeper sockets listen on. Keep loopback when Nexus runs on this host; use a
        routable address (and `openFirewall`) when it runs elsewhere.
      '';
    };

    basePort = lib.mkOption {
      type = lib.types.port;
      default = 8440;
      description = "Keeper N listens on port basePort + N (8441, 8442, ...).";
    };

    openFirewall = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "Open the keepers' ports in the firewall (for a Nexus on another host).";
    };

    settings = lib.mkOption {
      default = { };
      description = ''
        Keeper configuration, shared by every instance and rendered to /etc/spike/keeper.toml.
        Every key and its default is in docs/config.md and config-examples/keeper-full.toml.
        `listen` is ignored: each instance gets its socket from spike-keeper@N.socket.
      '';
      type = lib.types.submodule {
        freeformType = h.format.type;
        options = {
          log_level = lib.mkOption {
            type = lib.types.enum [
              "DEBUG"
              "INFO"
              "WARN"
              "ERROR"
            ];
            default = "INFO";
            description = "Log level.";
          };
          # One value per concept: these two are set from shardSealing / shardSealingPcrs, which
          # also decide the units; read-only here, so a second value is an error, not a drift.
          shard_sealing = lib.mkOption {
            type = lib.types.str;
            readOnly = true;
            defaultText = lib.literalExpression "config.services.spike.keepers.shardSealing";
            description = "Set through `services.spike.keepers.shardSealing`.";
          };
          shard_sealing_pcrs = lib.mkOption {
            type = lib.types.listOf lib.types.int;
            readOnly = true;
            defaultText = lib.literalExpression "config.services.spike.keepers.shardSealingPcrs";
            description = "Set through `services.spike.keepers.shardSealingPcrs`.";
          };
          trust_roots = h.trustRootsOption {
            component = "the keepers";
            roles = [
              "nexus"
              "keeper"
              "bootstrap"
            ];
            inherit (cfg) trustDomain;
          };
        };
      };
    };

    shardSealing = lib.mkOption {
      type = lib.types.enum [
        "off"
        "host"
        "tpm2"
        "host+tpm2"
        "auto"
      ];
      default = "off";
      example = "host+tpm2";
      description = ''
        Whether each keeper keeps its shard across restarts and reboots, encrypted at rest in its
        state directory (/var/lib/private/spike-keeper/N/shard.sealed), so that after a power cut
        Nexus unseals without an operator. The file is sealed (AES-256-GCM, bound to the keeper's
        id) with a key of that keeper alone, which `systemd-creds` encrypts to
        /var/lib/spike-sealing/keeper-N/key.cred with:

        - `off`: nothing; the shard lives in RAM only (SPIKE's model). After a power cut Nexus
          stays sealed until an operator restores it with the recovery shards.
        - `host`: systemd's host key, /var/lib/systemd/credential.secret. It is on the same
          disk: this protects a copy of the state directory, not the disk.
        - `tpm2`: this machine's TPM2, optionally bound to `shardSealingPcrs`. The disk alone
          does not decrypt it.
        - `host+tpm2`: both; decrypting needs the disk's host key and this machine's TPM2.
        - `auto`: `host+tpm2` when a TPM2 is reachable when keeper N's key is first made, else
          `host`. spike-keeper-sealing@N resolves it after the TPM2's driver is up
          (`tpm2.target`), logs the mode and records it in key.cred.params next to the key, and
          keeps it for that key (a new key, after one stops decrypting, is resolved again).

        What an attacker gets in each mode, and when to keep `off`: docs/security.md, "Shard
        sealing". It is rendered to keeper.toml as `shard_sealing`; with `configFile`, set it to
        that file's `shard_sealing`, since it also decides the units: when it is not `off`,
        spike-keeper-sealing@N.service provisions keeper N's key before each start of
        spike-keeper@N.service, which gets `StateDirectory=` and `LoadCredentialEncrypted=`.
        A `configFile` given as a Nix path is read and must agree (an assertion); one given as
        a string cannot be read at evaluation, and a warning says so. A change takes effect at
        each keeper's next start (`nixos-rebuild switch` does not restart keepers: restart
        them one at a time).

        `off` with the mode known (no `configFile`, or one given as a Nix path) removes the
        sealed shards and keys of an earlier mode: systemd-tmpfiles `R` rules for
        /var/lib/spike-sealing and /var/lib/private/spike-keeper, applied at the switch and at
        every boot. With a `configFile` given as a string, nothing is removed, since the file
        may still seal (removing its state at every boot would leave that keeper without its
        key): after turning sealing off in such a file, remove those two directories yourself
        (docs/operations.md, "Turn it off").
      '';
    };

    shardSealingPcrs = lib.mkOption {
      type = lib.types.listOf (lib.types.ints.between 0 23);
      default = [ ];
      example = [ 7 ];
      description = ''
        The TPM2 PCRs the sealing key is bound to (`systemd-creds --tpm2-pcrs=`), with
        `shardSealing` `tpm2`, `host+tpm2` or `auto` (when it resolves to `host+tpm2`).

        Empty (the default) passes no `--tpm2-pcrs=`, so systemd-creds' own default applies,
        which is not necessarily "no PCRs": systemd 252 (Debian 12) binds PCR 7 ("If not used,
        defaults to PCR 7 only", man systemd-creds), and other versions may differ. Check the
        `--tpm2-pcrs=` entry of `man systemd-creds` (or `systemd-creds --help`) for the systemd
        this machine runs: where it binds PCR 7, a TPM2 seal breaks on a Secure Boot change even
        with `[ ]`.

        With PCRs bound, a change of what they measure (firmware, boot loader, Secure Boot state)
        makes the key undecryptable: the keepers then start empty and Nexus stays sealed until
        one operator restore, after which the keepers seal again under the new state. `[ 7 ]`
        (Secure Boot policy) is the usual choice; see docs/security.md, "PCR binding". Rendered
        as `shard_sealing_pcrs`.
      '';
    };

    configFile = h.configFileOption "keeper";
    checkConfig = h.checkConfigOption "spike-keeper";
  };

  config = lib.mkMerge [
    {
      services.spike.keepers.settings = {
        shard_sealing = kcfg.shardSealing;
        shard_sealing_pcrs = kcfg.shardSealingPcrs;
      };
    }

    (lib.mkIf kcfg.enable {
      environment.etc."spike/keeper.toml".source = file;

      # Template instances have no unit file of their own: a full unit generated for
      # spike-keeper@N would shadow the template, so these must be drop-ins.
      systemd.sockets = forEach (i: {
        overrideStrategy = "asDropin";
        wantedBy = [ "sockets.target" ];
        listenStreams = [
          ""
          (h.hostPort kcfg.listenAddress (h.keeperPort kcfg.basePort i))
        ];
      });

      systemd.services = forEach (_: {
        overrideStrategy = "asDropin";
        # Never restarted by `nixos-rebuild switch`: a keeper holds its shard in memory (only, unless
        # shardSealing is on), so a restart empties it until Nexus re-seeds it, and restarting
        # several at once can leave fewer than the threshold holding shards. Restart keepers one
        # at a time, deliberately.
        restartIfChanged = false;
        environment = h.spiffeEnvironment cfg.spire.agentSocket;
      });

      networking.firewall.allowedTCPPorts = lib.mkIf kcfg.openFirewall (
        map (h.keeperPort kcfg.basePort) kcfg.instances
      );

      assertions = [
        {
          assertion = lib.unique kcfg.instances == kcfg.instances;
          message = "services.spike.keepers.instances lists a keeper twice.";
        }
        {
          assertion = lib.all (i: h.keeperPort kcfg.basePort i <= 65535) kcfg.instances;
          message = "services.spike.keepers.basePort + the largest of services.spike.keepers.instances must be a port (<= 65535).";
        }
        {
          assertion = fileSealing == null || fileSealing == sealing;
          message = "services.spike.keepers.configFile (${toString kcfg.configFile}) has shard_sealing = \"${toString fileSealing}\", but services.spike.keepers.shardSealing = \"${sealing}\": set the option to the file's mode, it decides the units.";
        }
        {
          assertion = kcfg.shardSealingPcrs == [ ] || mayUseTpm;
          message = "services.spike.keepers.shardSealingPcrs (${builtins.toJSON kcfg.shardSealingPcrs}) binds to TPM2 PCRs, but services.spike.keepers.shardSealing = \"${sealing}\" uses no TPM2: use \"tpm2\", \"host+tpm2\" or \"auto\", or set no PCRs.";
        }
      ]
      ++ lib.optionals (kcfg.configFile == null) (
        h.trustRootAssertions "${prefix}.trust_roots" kcfg.settings.trust_roots
      );

      warnings = lib.optional (!modeKnown) "services.spike.keepers.configFile (${toString kcfg.configFile}) is not a Nix path, so its shard_sealing cannot be read at evaluation: services.spike.keepers.shardSealing (\"${sealing}\") must equal it, since the option decides the keeper units (sealing key, state directory, credential), and a keeper the file configures for sealing does not start without them. For the same reason the module removes no sealed shards or keys while shardSealing is \"off\": after turning sealing off in the file, remove /var/lib/spike-sealing and /var/lib/private/spike-keeper yourself. Give configFile as a Nix path to have both checked.";
    })

    # Shard sealing: the per-keeper key, provisioned by the root oneshot before every keeper
    # start and handed to the keeper (still DynamicUser, no TPM, no root) as a credential that
    # systemd decrypts into the unit's private, non-swappable credentials directory.
    (lib.mkIf (kcfg.enable && sealed) {
      systemd.services =
        forEach (i: {
          overrideStrategy = "asDropin";
          requires = [ (sealingUnit i) ];
          after = [ (sealingUnit i) ];
          # The lines install.sh's drop-in has (%i is the instance, N), so that both layouts
          # read the same in `systemctl cat spike-keeper@N`.
          serviceConfig = {
            StateDirectory = "spike-keeper/%i";
            StateDirectoryMode = "0700";
            LoadCredentialEncrypted = "shard-sealing-key:/var/lib/spike-sealing/keeper-%i/key.cred";
          };
        })
        # The oneshot runs systemd-creds: this drop-in gives it NixOS's default service PATH
        # (which has systemd's binaries). A TPM2 comes up with its driver; the key must not be
        # created, nor "auto" resolved to "host", before it is there.
        # tpm2.target is pulled in by systemd's tpm2-generator when the firmware announces a
        # TPM2; After= alone is a no-op otherwise.
        // forEachNamed "spike-keeper-sealing" (_: {
          overrideStrategy = "asDropin";
          after = lib.optional mayUseTpm "tpm2.target";
        });

      # systemd-creds runs as root and needs no more than /dev/tpmrm0 and systemd's TPM2
      # support (systemd.tpm2.enable, on by default); this adds the TPM2 userspace (tss group,
      # udev rules, tpm2-tools' configuration) for the operator who checks or clears the TPM.
      security.tpm2.enable = lib.mkIf needsTpm (lib.mkDefault true);
    })

    # Sealing off means no shard on the disk: a host switched back to "off" loses the sealed
    # shards and keys of an earlier "on" (at the switch, by systemd-tmpfiles --remove), as
    # `install.sh --shard-sealing off` removes them. The keepers keep their shards in RAM.
    # Only when keeper.toml is known to say "off" too: these rules also run at every boot, and
    # with a configFile that seals they would delete its keys and shards each time.
    (lib.mkIf (kcfg.enable && !sealed && modeKnown) {
      systemd.tmpfiles.rules = [
        "R /var/lib/spike-sealing - - - - -"
        "R /var/lib/private/spike-keeper - - - - -"
        "R /var/lib/spike-keeper - - - - -"
      ];
    })
  ];
}
