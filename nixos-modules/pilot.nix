# services.spike.pilot: the `spike` CLI (with its man page and completions) and
# /etc/spike/pilot.toml. Environment variables (SPIKE_NEXUS_API_URL, ...) override the file.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.services.spike;
  pcfg = cfg.pilot;
  h = import ./helpers.nix { inherit lib pkgs; };
  nexusPort =
    let
      p = h.listenPort cfg.nexus.settings.listen;
    in
    if p == null then "8553" else p;
in
{
  meta.maintainers = [ ];

  options.services.spike.pilot = {
    enable = lib.mkOption {
      type = lib.types.bool;
      default = cfg.nexus.enable;
      defaultText = lib.literalExpression "config.services.spike.nexus.enable";
      description = "Whether to install the `spike` CLI and /etc/spike/pilot.toml.";
    };

    settings = lib.mkOption {
      default = { };
      description = "The CLI's configuration, rendered to /etc/spike/pilot.toml.";
      type = lib.types.submodule {
        freeformType = h.format.type;
        options = {
          nexus_url = lib.mkOption {
            type = lib.types.str;
            default = "https://127.0.0.1:${nexusPort}";
            defaultText = lib.literalMD "`https://127.0.0.1:<port of services.spike.nexus.settings.listen>`";
            description = "Nexus base URL.";
          };
          spiffe_endpoint_socket = lib.mkOption {
            type = lib.types.str;
            default = "unix://${cfg.spire.agentSocket}";
            defaultText = lib.literalExpression ''"unix://''${config.services.spike.spire.agentSocket}"'';
            description = "The SPIRE agent's Workload API endpoint.";
          };
          trust_root_nexus = lib.mkOption {
            type = lib.types.str;
            default = cfg.trustDomain;
            defaultText = lib.literalExpression "config.services.spike.trustDomain";
            description = "Trust roots Nexus's SPIFFE ID must lie under.";
          };
        };
      };
    };

    configFile = lib.mkOption {
      type = lib.types.nullOr lib.types.path;
      default = null;
      description = "A pilot.toml to use instead of the one generated from `services.spike.pilot.settings`.";
    };
  };

  config = lib.mkIf pcfg.enable {
    environment.etc."spike/pilot.toml".source =
      if pcfg.configFile != null then
        pcfg.configFile
      else
        h.format.generate "spike-pilot.toml" (lib.filterAttrsRecursive (_: v: v != null) pcfg.settings);

    assertions = lib.optionals (pcfg.configFile == null) (
      map (message: {
        assertion = false;
        inherit message;
      }) (h.trustRootProblems "services.spike.pilot.settings.trust_root_nexus" pcfg.settings.trust_root_nexus)
    );
  };
}
