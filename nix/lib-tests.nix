# Tests of nix/lib.nix, evaluated without nixpkgs by scripts/check-nix.sh:
#   nix-instantiate --eval --strict nix/lib-tests.nix
# Evaluates to the list of failures ([] when every case passes), each with what was
# expected and what came out.
let
  l = import ./lib.nix;
  case = name: actual: expected: { inherit name actual expected; };
  cases = [
    (case "range" (l.range 1 5) [
      1
      2
      3
      4
      5
    ])
    (case "range empty" (l.range 1 0) [ ])
    (case "majority of 5" (l.majority 5) 3)
    (case "majority of 3" (l.majority 3) 2)
    (case "majority of 1" (l.majority 1) 1)
    (case "keeper port" (l.keeperPort 8440 3) 8443)
    (case "local keeper peers"
      (l.localKeeperPeers {
        instances = [
          1
          2
        ];
      })
      [
        "https://127.0.0.1:8441"
        "https://127.0.0.1:8442"
      ]
    )
    (case "remote keeper peer"
      (l.localKeeperPeers {
        instances = [ 3 ];
        host = "keeper3";
      })
      [ "https://keeper3:8443" ]
    )
    (case "listen :port" (l.goListenToSystemd ":8553") "8553")
    (case "listen ip:port" (l.goListenToSystemd "127.0.0.1:8553") "127.0.0.1:8553")
    (case "listen [v6]:port" (l.goListenToSystemd "[::1]:8553") "[::1]:8553")
    (case "host:port v4" (l.hostPort "10.0.0.1" 8441) "10.0.0.1:8441")
    (case "host:port v6" (l.hostPort "::" 8441) "[::]:8441")
    (case "dial wildcard v4" (l.dialHost "0.0.0.0") "127.0.0.1")
    (case "dial wildcard v6" (l.dialHost "::") "[::1]")
    (case "dial v6" (l.dialHost "fd00::2") "[fd00::2]")
    (case "dial name" (l.dialHost "keeper1") "keeper1")
    (case "listen port" (l.listenPort ":8553") "8553")
    (case "listen port v6" (l.listenPort "[::1]:9000") "9000")
    (case "listen port missing" (l.listenPort "8553") null)
    (case "runtime dirs of the appliance server socket" (l.runtimeDirsFor "/run/spire-server/private/api.sock") [
      "spire-server"
      "spire-server/private"
    ])
    (case "runtime dirs of a socket directly in /run" (l.runtimeDirsFor "/run/api.sock") [ ])
    (case "runtime dirs outside /run" (l.runtimeDirsFor "/var/run2/x/api.sock") [ ])
    (case "secret path ok" (l.secretPathProblem "o" "/run/keys/token") null)
    (case "secret path null" (l.secretPathProblem "o" null) null)
    (case "secret path in the store"
      (l.secretPathProblem "services.x.tokenFile" "${builtins.storeDir}/abc-token")
      "services.x.tokenFile (${builtins.storeDir}/abc-token) is in the Nix store, which every local user can read; keep secrets outside it (e.g. /run/keys, /var/lib/secrets)"
    )
    (case "secret path literal refused" (l.secretPathProblem "o" ./lib.nix != null) true)
    (case "secret path relative" (l.secretPathProblem "o" "keys/t") "o (keys/t) must be an absolute path")
    (case "trust root ok" (l.trustRootProblems "o" "example.org, example.org/tenant-a") [ ])
    (case "trust root empty" (l.trustRootProblems "o" " ") [
      "o is empty: no peer would ever be accepted"
    ])
    (case "trust root empty element" (l.trustRootProblems "o" "a.org,") [
      "o (\"a.org,\") has an empty element"
    ])
    (case "trust root spiffe id" (builtins.length (l.trustRootProblems "o" "spiffe://a.org")) 1)
    (case "registrations"
      (l.registrations {
        trustDomain = "td";
        parentId = "spiffe://td/node/local";
        nexus = true;
        keepers = [ 2 ];
        superuserUids = [ 0 ];
      })
      [
        {
          spiffeId = "spiffe://td/spike/nexus";
          parentId = "spiffe://td/node/local";
          selector = "systemd:id:spike-nexus.service";
        }
        {
          spiffeId = "spiffe://td/spike/keeper/2";
          parentId = "spiffe://td/node/local";
          selector = "systemd:id:spike-keeper@2.service";
        }
        {
          spiffeId = "spiffe://td/spike/pilot/role/superuser";
          parentId = "spiffe://td/node/local";
          selector = "unix:uid:0";
        }
        {
          spiffeId = "spiffe://td/spike/pilot/role/recover";
          parentId = "spiffe://td/node/local";
          selector = "systemd:id:spike-recover.service";
        }
        {
          spiffeId = "spiffe://td/spike/pilot/role/restore";
          parentId = "spiffe://td/node/local";
          selector = "systemd:id:spike-restore.service";
        }
      ]
    )
    (case "shell quote" (l.shellQuote "it's") "'it'\\''s'")
    (case "register calls"
      (l.registerCalls [
        {
          spiffeId = "spiffe://td/a";
          parentId = "spiffe://td/p";
          selector = "unix:uid:0";
        }
      ])
      "register 'spiffe://td/a' 'spiffe://td/p' 'unix:uid:0'"
    )
    (case "placeholders: keeper peers"
      (builtins.elemAt (l.placeholders {
        bindir = "/b";
        libexecdir = "/l";
        docdir = "/d";
        keepers = 2;
      }) 7).to
      "\"https://127.0.0.1:8441\", \"https://127.0.0.1:8442\""
    )
    (case "placeholders: default threshold"
      (builtins.elemAt (l.placeholders {
        bindir = "/b";
        libexecdir = "/l";
        docdir = "/d";
        keepers = 5;
      }) 6).to
      "3"
    )
    (case "install arg" (l.installArg "--shard-sealing" "off" [
      "--role"
      "keeper"
      "--shard-sealing"
      "tpm2"
    ]) "tpm2")
    (case "install arg absent" (l.installArg "--shard-sealing" "off" [ "--role" ]) "off")
    (case "install arg without a value" (l.installArg "--role" "all" [ "--role" ]) "all")
    (case "install arg of nothing" (l.installArg "--role" "all" [ ]) "all")
    (case "pcrs" (l.parsePcrs "7+11") [
      7
      11
    ])
    (case "no pcrs" (l.parsePcrs "") [ ])
    (case "sed args"
      (l.sedArgs [
        {
          from = "@a@";
          to = "/x";
        }
      ])
      "-e 's|@a@|/x|g'"
    )
  ];
in
builtins.filter (c: c.actual != c.expected) cases
