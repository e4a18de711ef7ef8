# Pure helpers shared by the package, the NixOS modules and the VM tests. Builtins only (no
# nixpkgs), so scripts/check-nix.sh can evaluate and test them without a Nix store:
#   nix-instantiate --eval --strict nix/lib-tests.nix
rec {
  # The placeholders of units/ and units/etc/ (see scripts/install.sh `fill`), as the pairs a
  # `sed -e s|FROM|TO|g` or `substituteInPlace --replace-fail FROM TO` needs.
  placeholders =
    {
      bindir,
      libexecdir,
      sysconfdir ? "/etc",
      docdir,
      trustDomain ? "spike.internal",
      keepers ? 3,
      threshold ? majority keepers,
    }:
    [
      {
        from = "@bindir@";
        to = bindir;
      }
      {
        from = "@libexecdir@";
        to = libexecdir;
      }
      {
        from = "@sysconfdir@";
        to = sysconfdir;
      }
      {
        from = "@docdir@";
        to = docdir;
      }
      {
        from = "@trust_domain@";
        to = trustDomain;
      }
      {
        from = "@keepers@";
        to = toString keepers;
      }
      {
        from = "@threshold@";
        to = toString threshold;
      }
      {
        from = "@keeper_peers@";
        to = builtins.concatStringsSep ", " (
          map (u: "\"${u}\"") (localKeeperPeers {
            instances = range 1 keepers;
          })
        );
      }
    ];

  # `sed` arguments for `placeholders` (values must not contain `|`).
  sedArgs = pairs: builtins.concatStringsSep " " (map (p: "-e 's|${p.from}|${p.to}|g'") pairs);

  # [ from .. to ], like lib.range.
  range = from: to: if from > to then [ ] else builtins.genList (i: from + i) (to - from + 1);

  # The default threshold: a majority of the shares (3 of 5, 2 of 3, 1 of 1).
  majority = shares: shares / 2 + 1;

  # Keeper N listens on basePort + N (scripts/install.sh keeper_port: 8440 + N).
  keeperPort = basePort: instance: basePort + instance;

  # The keeper URLs Nexus and Bootstrap dial, in shard order, for keepers on one host.
  localKeeperPeers =
    {
      instances,
      host ? "127.0.0.1",
      basePort ? 8440,
    }:
    map (i: "https://${host}:${toString (keeperPort basePort i)}") instances;

  # "host:port", with brackets around an IPv6 address.
  hostPort =
    host: port:
    if builtins.match ".*:.*" host != null && builtins.substring 0 1 host != "[" then
      "[${host}]:${toString port}"
    else
      "${host}:${toString port}";

  # The address to dial for a socket listening on `addr`: the wildcard addresses mean loopback.
  dialHost =
    addr:
    if addr == "0.0.0.0" || addr == "" then
      "127.0.0.1"
    else if addr == "::" || addr == "[::]" then
      "[::1]"
    else if builtins.match ".*:.*" addr != null && builtins.substring 0 1 addr != "[" then
      "[${addr}]"
    else
      addr;

  # The port of a Go-style listen address (":8553", "10.0.0.1:8553", "[::1]:8553").
  listenPort =
    addr:
    let
      m = builtins.match ".*:([0-9]+)" addr;
    in
    if m == null then null else builtins.head m;

  # A Go-style listen address (":8553", "127.0.0.1:8553", "[::1]:8553") as a systemd
  # ListenStream= value ("8553" means every address, as ":8553" does in Go).
  goListenToSystemd =
    addr: if builtins.substring 0 1 addr == ":" then builtins.substring 1 (-1) addr else addr;

  # The directories below /run that must exist for a socket path, relative to /run, outermost
  # first: "/run/spire-server/private/api.sock" -> [ "spire-server" "spire-server/private" ].
  # Used to add RuntimeDirectory= entries when a socket lives outside a unit's own directory.
  runtimeDirsFor =
    socketPath:
    let
      parts = builtins.filter (p: builtins.isString p && p != "") (builtins.split "/" socketPath);
      dirs = if builtins.length parts < 3 then [ ] else builtins.tail (dropLast parts);
      dropLast = l: builtins.genList (builtins.elemAt l) (builtins.length l - 1);
      prefixes = builtins.genList (
        n: builtins.concatStringsSep "/" (builtins.genList (builtins.elemAt dirs) (n + 1))
      ) (builtins.length dirs);
    in
    if builtins.head parts == "run" && builtins.substring 0 5 socketPath == "/run/" then
      prefixes
    else
      [ ];

  # Why a secret file option's value is unacceptable, or null. Secrets must stay out of the
  # world-readable Nix store: a store path (or a Nix path literal, which is copied into the
  # store when used) is refused, and so is a relative path.
  secretPathProblem =
    option: value:
    if value == null then
      null
    else if builtins.isPath value then
      "${option} is a Nix path literal, which would copy the secret into the world-readable Nix store; give it as a string (\"/run/keys/...\")"
    else if builtins.substring 0 (builtins.stringLength builtins.storeDir + 1) value == "${builtins.storeDir}/" then
      "${option} (${value}) is in the Nix store, which every local user can read; keep secrets outside it (e.g. /run/keys, /var/lib/secrets)"
    else if builtins.substring 0 1 value != "/" then
      "${option} (${value}) must be an absolute path"
    else
      null;

  # What is wrong with one trust-roots value ("example.org, example.org/tenant-a"), as a list of
  # messages naming `option`. The daemons enforce the same rules at start (docs/config.md).
  trustRootProblems =
    option: value:
    let
      elems = map trim (builtins.filter builtins.isString (builtins.split "," value));
      bad = builtins.filter (e: e == "") elems;
      ids = builtins.filter (e: builtins.substring 0 9 e == "spiffe://") elems;
    in
    (if trim value == "" then [ "${option} is empty: no peer would ever be accepted" ] else [ ])
    ++ (
      if trim value != "" && bad != [ ] then
        [ "${option} (\"${value}\") has an empty element" ]
      else
        [ ]
    )
    ++ (
      if ids != [ ] then
        [
          "${option} (\"${value}\") lists SPIFFE IDs; trust roots are trust domains, optionally with a path (\"example.org\", \"example.org/tenant-a\")"
        ]
      else
        [ ]
    );

  trim =
    s:
    let
      m = builtins.match "[[:space:]]*(.*[^[:space:]])[[:space:]]*" s;
    in
    if m == null then "" else builtins.head m;

  # SPIKE's SPIFFE IDs (docs/protocol.md#identities-and-authorization; units/libexec/spike-register).
  spiffeIds = td: {
    nexus = "spiffe://${td}/spike/nexus";
    bootstrap = "spiffe://${td}/spike/bootstrap";
    keeper = i: "spiffe://${td}/spike/keeper/${toString i}";
    superuser = "spiffe://${td}/spike/pilot/role/superuser";
    recover = "spiffe://${td}/spike/pilot/role/recover";
    restore = "spiffe://${td}/spike/pilot/role/restore";
  };

  # The SPIRE registration entries of the SPIKE parts on one host, attested by their systemd
  # unit (selector systemd:id:<unit>); the superuser CLI by unix uid; on the Nexus host, the
  # operator's way back (recover, restore) by the transient units spike-operator starts, which
  # only root can start.
  registrations =
    {
      trustDomain,
      parentId,
      nexus ? false,
      bootstrap ? false,
      keepers ? [ ],
      superuserUids ? [ ],
    }:
    let
      ids = spiffeIds trustDomain;
      entry = spiffeId: selector: { inherit spiffeId parentId selector; };
    in
    (if nexus then [ (entry ids.nexus "systemd:id:spike-nexus.service") ] else [ ])
    ++ (if bootstrap then [ (entry ids.bootstrap "systemd:id:spike-bootstrap.service") ] else [ ])
    ++ map (i: entry (ids.keeper i) "systemd:id:spike-keeper@${toString i}.service") keepers
    ++ map (uid: entry ids.superuser "unix:uid:${toString uid}") superuserUids
    ++ (
      if nexus then
        [
          (entry ids.recover "systemd:id:spike-recover.service")
          (entry ids.restore "systemd:id:spike-restore.service")
        ]
      else
        [ ]
    );

  # The value after `flag` in a scripts/install.sh argument list (as the nspawn runner passes a
  # scenario node's "install"), else `default`: installArg "--role" "all" [ "--role" "keeper" ].
  installArg =
    flag: default: args:
    let
      n = builtins.length args;
      at = builtins.filter (i: builtins.elemAt args i == flag) (range 0 (n - 2));
    in
    if at == [ ] then default else builtins.elemAt args (builtins.head at + 1);

  # install.sh's `--shard-sealing-pcrs` value ("7+11", as systemd-creds --tpm2-pcrs= takes it;
  # "" for none) as a list of PCR indexes.
  parsePcrs =
    s: map builtins.fromJSON (builtins.filter (p: builtins.isString p && p != "") (builtins.split "[+,]" s));

  # POSIX shell quoting.
  shellQuote = s: "'" + builtins.replaceStrings [ "'" ] [ "'\\''" ] s + "'";

  # The body of the registration script: one idempotent `register` call per entry (the
  # function itself is defined by the script's prelude).
  registerCalls =
    entries:
    builtins.concatStringsSep "\n" (
      map (
        e: "register ${shellQuote e.spiffeId} ${shellQuote e.parentId} ${shellQuote e.selector}"
      ) entries
    );
}
