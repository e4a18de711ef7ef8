# Where nix/eval-modules.nix is as strict as nixpkgs: configurations that nixpkgs' types
# reject must fail under the stand-in too, with the module system's message, and their
# neighbours that nixpkgs accepts must still evaluate. Each rejected configuration below
# evaluated without an error under the stand-in before it took nixpkgs' types.
#
# scripts/check-nix.sh runs it (when SPIKE_NIXPKGS_LIB is set) with `part`:
#   "cases"          the list of failed cases ([] when every case passes);
#   "names"          the names of the rejected configurations;
#   "message:NAME"   the text NAME's error must contain (printed as a Nix string);
#   "reject:NAME"    evaluates NAME, which must fail.
#   nix-instantiate --eval --strict nix/eval-strictness-tests.nix \
#     --arg lib 'import /path/to/nixpkgs.lib/lib' --argstr part cases
{
  lib,
  part ? "cases",
}:
let
  eval = configuration: import ./eval-modules.nix { inherit lib configuration; };
  case = name: actual: expected: { inherit name actual expected; };

  # The README's quick start with something added. `failedAssertions` renders the system
  # once the assertions hold (see eval-modules.nix), so a rejected value throws there.
  quickStart =
    extra:
    eval (lib.recursiveUpdate (import ./quick-start.nix { inherit lib; } { keepers = 3; }) extra);

  notTOML = option: "A definition for option `${option}' is not of type `TOML value'";

  # name -> { extra: added to the quick start; message: what the error must contain }.
  rejects = {
    # nixpkgs' spire/agent.nix: plugin_data of the agent's join_token is `submodule { }`.
    agent-join-token-plugin-data = {
      extra.services.spire.agent.settings.plugins.NodeAttestor.join_token.plugin_data.token_file =
        "/run/keys/join-token";
      message = "The option `services.spire.agent.settings.plugins.NodeAttestor.join_token.plugin_data.token_file' does not exist";
    };
    # pkgs.formats.toml's type (lib.types.toml) has no null: in a freeform key...
    nexus-null = {
      extra.services.spike.nexus.settings.keeper_timeout = null;
      message = notTOML "services.spike.nexus.settings.keeper_timeout";
    };
    # ...in a nested table...
    keepers-nested-null = {
      extra.services.spike.keepers.settings.extra.inner = null;
      message = notTOML "services.spike.keepers.settings.extra.inner";
    };
    # ...in a list (which the modules' filterAttrsRecursive does not look into)...
    bootstrap-null-in-list = {
      extra.services.spike.bootstrap.settings.extra_list = [
        "a"
        null
      ];
      message = notTOML "services.spike.bootstrap.settings.extra_list.\"[definition 1-entry 2]\"";
    };
    # ...and in pilot.toml.
    pilot-trust-roots-null = {
      extra.services.spike.pilot.settings.trust_root_extra = null;
      message = notTOML "services.spike.pilot.settings.trust_root_extra";
    };
  };

  # Neighbours that nixpkgs accepts.
  serverPluginData = quickStart {
    services.spire.server.settings.plugins.NodeAttestor.join_token.plugin_data.extra = "x";
  };
  agentOtherPlugin = quickStart {
    services.spire.agent.settings.plugins.WorkloadAttestor.docker.plugin_data.docker_socket_path =
      "unix:///run/docker.sock";
  };
  # SPIRE's settings are hcl1, whose type is JSON's: null is allowed, and left out of the file.
  spireNull = quickStart {
    services.spire.agent.settings.agent.log_file = null;
    services.spire.server.settings.server.log_file = null;
  };
  # A null default of a typed SPIKE option is fine (it is not a freeform TOML value).
  memoryNexus = eval {
    services.spike = {
      trustDomain = "example.org";
      nexus = {
        enable = true;
        settings.backend_store = "memory";
      };
    };
  };

  throws = v: !(builtins.tryEval (builtins.deepSeq v v)).success;

  cases =
    lib.mapAttrsToList (
      name: r: case "rejected: ${name}" (throws (quickStart r.extra).failedAssertions) true
    ) rejects
    ++ [
      (case "server join_token plugin_data is freeform" serverPluginData.failedAssertions [ ])
      (case "server join_token plugin_data kept"
        serverPluginData.config.services.spire.server.settings.plugins.NodeAttestor.join_token.plugin_data
        { extra = "x"; }
      )
      (case "agent: other plugins stay freeform" agentOtherPlugin.failedAssertions [ ])
      (case "agent: the modules' empty join_token plugin_data"
        (quickStart { }).config.services.spire.agent.settings.plugins.NodeAttestor.join_token.plugin_data
        { }
      )
      (case "null in SPIRE (hcl1) settings accepted" spireNull.failedAssertions [ ])
      (case "memory nexus: typed null keeper_peers" memoryNexus.config.services.spike.nexus.settings.keeper_peers null)
      (case "memory nexus: renders" memoryNexus.failedAssertions [ ])
    ];
  failures = builtins.filter (t: t.actual != t.expected) cases;

in
if part == "cases" then
  failures
else if part == "names" then
  builtins.attrNames rejects
else if lib.hasPrefix "message:" part then
  rejects.${lib.removePrefix "message:" part}.message
else if lib.hasPrefix "reject:" part then
  (quickStart rejects.${lib.removePrefix "reject:" part}.extra).failedAssertions
else
  throw "eval-strictness-tests.nix: unknown part ${part}"
