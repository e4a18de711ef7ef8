# NixOS VM test running vm-tests/scenarios/ha.py: two Nexus instances sharing one PostgreSQL
# store (docs/ha.md), keepers on hosts of their own.
#
#   db         PostgreSQL 5432: the primary (nixpkgs' services.postgresql, postgresql.service)
#              with the Nexus role `spike-nexus` owning the database `spike-nexus`; a
#              synchronous standby streaming from it beside it, postgresql-standby.service on
#              5433 (application_name and slot `standby1`, data in /var/lib/postgresql-standby,
#              promoted with `pg_ctl promote -D /var/lib/postgresql-standby` as postgres). Both
#              serve TLS only to the Nexus hosts (a certificate for "db" from a test CA) with
#              the role's password (SCRAM).
#   nexus1     SPIRE server and agent, Nexus, Bootstrap (the one bootstrap of the cluster), the
#              `spike` CLI
#   nexus2     a SPIRE agent of its own, Nexus, the `spike` CLI; no Bootstrap
#              (services.spike.bootstrap.enable = false). The scenario joins its agent as it
#              joins a keeper host (the same paths as keeper-host.nix) and registers this
#              host's Nexus, its superuser CLI (unix:uid:0) and, where it restores, the
#              operator's recover/restore units under it (spike-register is masked here).
#   keeper1-3  keeper-host.nix: keeper N at 8440 + N, under an agent the scenario joins
#
# Each Nexus reads the connection string `host=db,db port=5432,5433 … sslmode=verify-full
# target_session_attrs=read-write` from /etc/spike/nexus-db.conninfo (the test's password,
# root's alone) through LoadCredential=, so after the standby is promoted it reconnects to it.
# The primary restarts by itself (nixpkgs' Restart=always): a scenario that fails it over
# stops postgresql.service (as docs/ha.md's runbook fences the old primary) rather than kills
# it, or it comes back as a second primary at the head of the connection string.
{ lib, ... }:
let
  trustDomain = "spike.internal";
  keepers = [
    1
    2
    3
  ];
  keeperHost = i: "keeper${toString i}";
  keeperPort = i: 8440 + i;
  keeperPeers = map (i: "https://${keeperHost i}:${toString (keeperPort i)}") keepers;
  # The test driver's network (vlan 1): keepers and the database.
  testNet = "192.168.1.0/24";

  db = "spike-nexus";
  password = "vm-test-only";
  standbyDir = "/var/lib/postgresql-standby";
  conninfo = "host=db,db port=5432,5433 dbname=${db} user=${db} password=${password} sslmode=verify-full target_session_attrs=read-write application_name=spike-nexus connect_timeout=5";

  # A test CA and the database's certificate (DNS:db), made at build time with explicit
  # OpenSSL sections (no reliance on a default openssl.cnf). One derivation for every node (the
  # same pkgs), so all of them see the same CA. The server key is in the store, acceptable for
  # a throwaway test only; PostgreSQL refuses a key others can read, so each server copies it
  # into its data directory (0600) before it starts.
  tlsFor =
    pkgs:
    pkgs.runCommand "spike-vm-test-postgres-tls" { nativeBuildInputs = [ pkgs.openssl ]; } ''
      mkdir "$out"
      cat > ca.cnf <<'EOF'
      [req]
      distinguished_name = dn
      prompt = no
      x509_extensions = ca
      [dn]
      CN = spike-vm-test-postgres-ca
      [ca]
      basicConstraints = critical,CA:TRUE
      keyUsage = critical,keyCertSign,cRLSign
      subjectKeyIdentifier = hash
      EOF
      cat > server.cnf <<'EOF'
      [req]
      distinguished_name = dn
      prompt = no
      [dn]
      CN = db
      [server]
      subjectAltName = DNS:db
      basicConstraints = critical,CA:FALSE
      keyUsage = critical,digitalSignature
      extendedKeyUsage = serverAuth
      authorityKeyIdentifier = keyid
      EOF
      openssl req -x509 -config ca.cnf -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -days 3650 -keyout ca.key -out "$out/ca.pem"
      openssl req -new -config server.cnf -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$out/server.key" -out server.csr
      openssl x509 -req -in server.csr -CA "$out/ca.pem" -CAkey ca.key -set_serial 2 \
        -days 3650 -extfile server.cnf -extensions server -out "$out/server.crt"
    '';
  installKey = tls: dir: "install -m 0600 ${tls}/server.key ${dir}/server.key";

  dbNode =
    { config, pkgs, ... }:
    let
      tls = tlsFor pkgs;
      pg = config.services.postgresql.package;
      # The standby's own configuration: pg_basebackup copies the primary's data directory,
      # whose postgresql.conf is the primary's (port, synchronous_standby_names).
      standbyHba = pkgs.writeText "pg_hba-standby.conf" ''
        local all postgres peer
        hostssl ${db} ${db} ${testNet} scram-sha-256
      '';
      standbyConf = pkgs.writeText "postgresql-standby.conf" ''
        port = 5433
        listen_addresses = '*'
        unix_socket_directories = '/run/postgresql-standby'
        hba_file = '${standbyHba}'
        ident_file = '${pkgs.writeText "pg_ident-standby.conf" ""}'
        ssl = on
        ssl_cert_file = '${tls}/server.crt'
        ssl_key_file = 'server.key'
        cluster_name = 'standby1'
        primary_conninfo = 'host=/run/postgresql port=5432 user=postgres application_name=standby1'
        primary_slot_name = 'standby1'
        hot_standby = on
        wal_level = replica
        max_wal_senders = 4
        log_destination = 'stderr'
      '';
    in
    {
      services.postgresql = {
        enable = true;
        enableTCPIP = true;
        ensureDatabases = [ db ];
        ensureUsers = [
          {
            name = db;
            ensureDBOwnership = true;
          }
        ];
        authentication = ''
          hostssl ${db} ${db} ${testNet} scram-sha-256
          local replication postgres peer map=postgres
        '';
        settings = {
          ssl = true;
          ssl_cert_file = "${tls}/server.crt";
          # Relative to the data directory.
          ssl_key_file = "server.key";
          wal_level = "replica";
          max_wal_senders = 4;
          # A commit returns once the standby has it too (docs/ha.md, "Guarantees").
          synchronous_standby_names = "standby1";
        };
      };
      systemd.services.postgresql.preStart = lib.mkAfter (installKey tls "$PGDATA");
      # The role's password, after nixpkgs' setup created the role.
      systemd.services.postgresql-setup.script = lib.mkAfter ''
        psql -d postgres -v ON_ERROR_STOP=1 -c "ALTER ROLE \"${db}\" PASSWORD '${password}'"
      '';

      systemd.services.postgresql-standby = {
        description = "PostgreSQL synchronous standby of the primary (VM test)";
        wantedBy = [ "multi-user.target" ];
        # Wants, not Requires: it must outlive the primary to be promoted. After the server,
        # not its setup: the setup's commits wait for this synchronous standby.
        wants = [ "postgresql.service" ];
        after = [ "postgresql.service" ];
        path = [ pg ];
        preStart = ''
          if [ ! -e ${standbyDir}/PG_VERSION ]; then
            pg_basebackup --pgdata=${standbyDir} --host=/run/postgresql --port=5432 \
              --username=postgres --wal-method=stream --checkpoint=fast \
              --create-slot --slot=standby1
            touch ${standbyDir}/standby.signal
          fi
          ${installKey tls standbyDir}
        '';
        serviceConfig = {
          Type = "notify";
          User = "postgres";
          Group = "postgres";
          StateDirectory = "postgresql-standby";
          StateDirectoryMode = "0700";
          RuntimeDirectory = "postgresql-standby";
          ExecStart = "${pg}/bin/postgres -D ${standbyDir} -c config_file=${standbyConf}";
          # As nixpkgs' postgresql.service: fast shutdown.
          KillSignal = "SIGINT";
          KillMode = "mixed";
          TimeoutSec = 120;
          Restart = "on-failure";
        };
      };

      networking.firewall.allowedTCPPorts = [
        5432
        5433
      ];
      virtualisation.memorySize = 1024;
    };

  # What both Nexus hosts share: the keepers, the database, its CA.
  nexusNode =
    { pkgs, ... }:
    {
      services.spike = {
        inherit trustDomain keeperPeers;
        shamir.threshold = 2;
        nexus = {
          enable = true;
          openFirewall = true;
          # Nexus dials the keepers and the database on the test network (vlan 1).
          ipAddressAllow = [ testNet ];
          postgres = {
            connectionFile = "/etc/spike/nexus-db.conninfo";
            caFile = "/etc/spike/postgres-ca.pem";
          };
        };
      };
      environment.etc."spike/nexus-db.conninfo" = {
        text = conninfo;
        mode = "0400";
      };
      environment.etc."spike/postgres-ca.pem".source = "${tlsFor pkgs}/ca.pem";
      virtualisation = {
        memorySize = 2048;
        cores = 2;
      };
    };

  # nexus2's SPIRE agent, joined by the scenario as it joins a keeper host.
  joinedAgent = import ./joined-agent.nix {
    inherit trustDomain;
    serverAddress = "nexus1";
  };

  keeperNode =
    i:
    import ./keeper-host.nix {
      inherit trustDomain;
      keeperId = i;
      serverAddress = "nexus1";
    };

  nodes = {
    db = dbNode;
    nexus1 = {
      imports = [ nexusNode ];
      services.spike = {
        # The keepers' and nexus2's identities are registered by the scenario.
        spire.enable = true;
        bootstrap.ipAddressAllow = [ testNet ];
      };
      services.spire.server = {
        openFirewall = true;
        settings.server.bind_address = "0.0.0.0";
      };
    };
    nexus2 = {
      imports = [
        nexusNode
        joinedAgent
      ];
      # Bootstrap runs once for the cluster, on nexus1.
      services.spike.bootstrap.enable = false;
    };
  }
  // lib.listToAttrs (map (i: lib.nameValuePair (keeperHost i) (keeperNode i)) keepers);

  script = import ./scenario-script.nix "ha";
  # The scenario's `# vm-test:` machines (the nspawn run's), if it names any, are these.
  specNodes = builtins.attrNames script.spec.nodes;
in
{
  name = "spike-ha";

  defaults.imports = [ ../nixos-modules ];

  inherit nodes;

  testScript =
    assert lib.assertMsg (
      specNodes == [ "machine" ] || specNodes == builtins.attrNames nodes
    ) "vm-tests/ha.nix: scenarios/ha.py's machines (${toString specNodes}) differ from this test's nodes (${toString (builtins.attrNames nodes)})";
    script.testScript;

  # See scenario.nix.
  skipTypeCheck = true;
  skipLint = true;
}
