#!/usr/bin/env bash
# Bare-metal install of the SPIKE appliance (no Nix): binaries, systemd units with their paths
# filled in, default configs, and `spike.target` enabled.
#
#   scripts/install.sh [options]             install (as root)
#   scripts/install.sh --uninstall [--root DIR]
#                                            remove everything but the data, which it names
# Options:
#   --root DIR          install into another root (an image or container tree); default /
#   --prefix DIR        default /usr/local (bin, libexec, lib/systemd/system, share/doc)
#   --from DIR          SPIKE binaries (default: target/release, built by `cargo build --release`)
#   --spire-from DIR    spire-server and spire-agent (default: scripts/build-spire.sh)
#   --keepers N         keeper instances on this host (default 3)
#   --threshold T       Shamir threshold (default: a majority of the keepers, 2 of 3, 3 of 5;
#                       the NixOS module's default too); 1 works but is warned about: each
#                       keeper's shard alone is then the whole root key
#   --trust-domain TD   SPIFFE trust domain (default spike.internal)
#   --shard-sealing M   keepers keep their shard across reboots, sealed to this machine: off
#                       (default: RAM only, as SPIKE), host, tpm2, host+tpm2 or auto (docs/security.md
#                       "Shard sealing"); writes keeper.toml's shard_sealing and the keeper drop-in.
#                       Without the flag, the mode already in keeper.toml is kept.
#   --shard-sealing-pcrs P  TPM2 PCRs to bind the sealing key to, e.g. 7 or 7+11 (default:
#                       systemd-creds' own, which is PCR 7 on systemd 252)
#   --no-enable         do not enable spike.target
#   --force-config      overwrite existing files in /etc/spike and /etc/spire
# Several hosts (keepers on their own machines):
#   --role server --keeper-peers URL,URL,... --allow-net CIDR
#                       SPIRE server, Nexus and bootstrap; no local keepers; SPIRE and Nexus
#                       reachable from CIDR
#   --role keeper --keeper-id N --server-address IP
#                       a SPIRE agent (joined by the operator) and keeper N listening on :8443
# High availability on PostgreSQL (docs/ha.md):
#   --role database --pg-cert FILE --pg-key FILE --db-password-file FILE --allow-net CIDR[,CIDR]
#                   [--standby-port PORT] [--pg-port PORT] [--db-name NAME] [--db-user NAME]
#                   [--db-host HOST]
#                       PostgreSQL 15 (Debian's postgresql-15, installed beforehand) for Nexus: a
#                       primary cluster (15/spike_primary, :5432) and, with --standby-port, a
#                       synchronous streaming standby of it on this host (15/spike_standby).
#                       TLS only, with the operator's certificate and key (the names or IPs the
#                       Nexus hosts dial must be in its subjectAltName); the role --db-user
#                       (default spike-nexus) with the password in --db-password-file (letters,
#                       digits and ._~+/=- only) owns the database --db-name (default
#                       spike-nexus); pg_hba.conf: `hostssl DB ROLE CIDR scram-sha-256` for each
#                       --allow-net CIDR, everything else rejected. The clusters are made by
#                       spike-db-setup.service (now on a running host, else at the next boot).
#                       Prints the connection string and files to copy to the Nexus hosts;
#                       --db-host names this host in it (default: its host name). No SPIKE
#                       binaries are installed.
#   --role nexus --keeper-peers URL,... --allow-net CIDR --server-address IP
#                --db-conninfo FILE --db-ca FILE [--db-allow ADDR[,ADDR]]
#                       another Nexus host sharing the database: a SPIRE agent (joined by the
#                       operator, as a keeper host) and Nexus with backend_store = "postgres";
#                       no SPIRE server, no keepers, Bootstrap masked (it runs once, on the
#                       server host)
#   --db-conninfo FILE  (roles server and nexus) the libpq connection string for Nexus,
#                       installed as /etc/spike/nexus-db.conninfo (0600 root) and handed to Nexus
#                       as the credential nexus-db; nexus.toml gets backend_store = "postgres"
#   --db-ca FILE        the CA of the database servers' certificates -> /etc/spike/postgres-ca.pem
#                       (required when the connection string names TCP hosts)
#   --db-allow ADDRS    database addresses for spike-nexus.service's IPAddressAllow= (default:
#                       the IP addresses in the connection string's host=)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"

ROOT=/ PREFIX=/usr/local FROM="$here/target/release" SPIRE_FROM="" KEEPERS=3 THRESHOLD=""
TD=spike.internal ENABLE=1 FORCE_CONFIG=0 UNINSTALL=0 ROLE=all PEERS_ARG="" ALLOW_NET="" KEEPER_ID=1
SERVER_ADDRESS=127.0.0.1 SEALING="" SEALING_PCRS=""
DB_CONNINFO="" DB_CA="" DB_ALLOW="" PG_CERT="" PG_KEY="" DB_PASSWORD_FILE="" PG_PORT=5432 STANDBY_PORT=""
DB_NAME=spike-nexus DB_USER=spike-nexus DB_HOST=""
while (($#)); do
  case "$1" in
    --root) ROOT="$2"; shift 2 ;;
    --prefix) PREFIX="$2"; shift 2 ;;
    --from) FROM="$2"; shift 2 ;;
    --spire-from) SPIRE_FROM="$2"; shift 2 ;;
    --keepers) KEEPERS="$2"; shift 2 ;;
    --threshold) THRESHOLD="$2"; shift 2 ;;
    --trust-domain) TD="$2"; shift 2 ;;
    --no-enable) ENABLE=0; shift ;;
    --force-config) FORCE_CONFIG=1; shift ;;
    --uninstall) UNINSTALL=1; shift ;;
    --role) ROLE="$2"; shift 2 ;;
    --keeper-peers) PEERS_ARG="$2"; shift 2 ;;
    --allow-net) ALLOW_NET="$2"; shift 2 ;;
    --keeper-id) KEEPER_ID="$2"; shift 2 ;;
    --server-address) SERVER_ADDRESS="$2"; shift 2 ;;
    --shard-sealing) SEALING="$2"; shift 2 ;;
    --shard-sealing-pcrs) SEALING_PCRS="$2"; shift 2 ;;
    --db-conninfo) DB_CONNINFO="$2"; shift 2 ;;
    --db-ca) DB_CA="$2"; shift 2 ;;
    --db-allow) DB_ALLOW="$2"; shift 2 ;;
    --pg-cert) PG_CERT="$2"; shift 2 ;;
    --pg-key) PG_KEY="$2"; shift 2 ;;
    --db-password-file) DB_PASSWORD_FILE="$2"; shift 2 ;;
    --pg-port) PG_PORT="$2"; shift 2 ;;
    --standby-port) STANDBY_PORT="$2"; shift 2 ;;
    --db-name) DB_NAME="$2"; shift 2 ;;
    --db-user) DB_USER="$2"; shift 2 ;;
    --db-host) DB_HOST="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;p}' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 64 ;;
  esac
done
[[ "$KEEPERS" =~ ^[1-9][0-9]?$ ]] || { echo "install.sh: --keepers must be 1..99 (got $KEEPERS)" >&2; exit 64; }
if [[ -z "$THRESHOLD" ]]; then
  THRESHOLD=$((KEEPERS / 2 + 1))
  # An existing appliance keeps its threshold: a new one would make Nexus re-seed the keepers
  # from another polynomial than the recovery shards the operator holds.
  old_threshold=$(sed -n 's/^shamir_threshold *= *\([0-9]*\).*/\1/p' "${ROOT%/}/etc/spike/nexus.toml" 2>/dev/null || true)
  if [[ -n "$old_threshold" && "$old_threshold" != "$THRESHOLD" && $FORCE_CONFIG -eq 1 ]]; then
    echo "install.sh: this appliance uses threshold $old_threshold; pass --threshold $old_threshold to keep it" \
      "(a different threshold needs a new root key: docs/operations.md)" >&2
    exit 64
  fi
fi
[[ "$THRESHOLD" =~ ^[1-9][0-9]?$ ]] && ((THRESHOLD <= KEEPERS)) \
  || { echo "install.sh: --threshold must be 1..keepers (got $THRESHOLD with $KEEPERS keepers)" >&2; exit 64; }
if ((THRESHOLD == 1)); then
  echo "install.sh: warning: threshold 1: every keeper's shard alone is the whole root key, so one" \
    "compromised keeper (or its memory) discloses every secret; use --threshold 2 or more" >&2
fi
[[ "$TD" =~ ^[a-z0-9.-]+$ ]] || { echo "install.sh: invalid trust domain $TD" >&2; exit 64; }
case "$ROLE" in all|server|keeper|nexus|database) ;;
  *) echo "install.sh: --role must be all, server, keeper, nexus or database" >&2; exit 64 ;; esac
[[ "$KEEPER_ID" =~ ^[1-9][0-9]?$ ]] || { echo "install.sh: --keeper-id must be 1..99" >&2; exit 64; }
case "$SEALING" in ""|off|host|tpm2|host+tpm2|auto) ;;
  *) echo "install.sh: --shard-sealing must be off, host, tpm2, host+tpm2 or auto (got $SEALING)" >&2; exit 64 ;; esac
SEALING_ARG="$SEALING"  # what the operator asked for now (the mode in use may be carried over)
pcr='(1?[0-9]|2[0-3])'
[[ -z "$SEALING_PCRS" || "$SEALING_PCRS" =~ ^$pcr([+,]$pcr)*$ ]] \
  || { echo "install.sh: --shard-sealing-pcrs takes PCRs 0..23 joined by + (got $SEALING_PCRS)" >&2; exit 64; }
[[ -z "$SEALING_PCRS" || -n "$SEALING" ]] \
  || { echo "install.sh: --shard-sealing-pcrs needs --shard-sealing" >&2; exit 64; }

port_ok() { [[ "$1" =~ ^[1-9][0-9]{0,4}$ ]] && (($1 <= 65535)); }
port_ok "$PG_PORT" || { echo "install.sh: --pg-port must be a TCP port (got $PG_PORT)" >&2; exit 64; }
[[ -z "$STANDBY_PORT" ]] || { port_ok "$STANDBY_PORT" && [[ "$STANDBY_PORT" != "$PG_PORT" ]]; } \
  || { echo "install.sh: --standby-port must be a TCP port other than --pg-port (got $STANDBY_PORT)" >&2; exit 64; }
[[ "$DB_NAME" =~ ^[a-z_][a-z0-9_-]{0,62}$ && "$DB_USER" =~ ^[a-z_][a-z0-9_-]{0,62}$ ]] \
  || { echo "install.sh: --db-name and --db-user take lower-case letters, digits, _ and - (up to 63)" >&2; exit 64; }
if [[ -n "$DB_CONNINFO$DB_CA$DB_ALLOW" && "$ROLE" != server && "$ROLE" != nexus ]]; then
  echo "install.sh: --db-conninfo, --db-ca and --db-allow belong to --role server or nexus" >&2; exit 64
fi
if [[ -n "$PG_CERT$PG_KEY$DB_PASSWORD_FILE$STANDBY_PORT$DB_HOST" && "$ROLE" != database ]]; then
  echo "install.sh: --pg-cert, --pg-key, --db-password-file, --standby-port and --db-host belong to --role database" >&2
  exit 64
fi
[[ "$ROLE" != nexus || -n "$DB_CONNINFO" ]] \
  || { echo "install.sh: --role nexus needs --db-conninfo (the instances share a PostgreSQL database)" >&2; exit 64; }
for f in "$DB_CONNINFO" "$DB_CA"; do
  [[ -z "$f" || -r "$f" ]] || { echo "install.sh: $f: not readable" >&2; exit 64; }
done

R="${ROOT%/}"
BINDIR="$PREFIX/bin" LIBEXECDIR="$PREFIX/libexec" UNITDIR="$PREFIX/lib/systemd/system"
DOCDIR="$PREFIX/share/doc/spike" SYSCONFDIR=/etc
BINARIES=(spike-nexus spike-keeper spike-bootstrap spike)
UNITS=(spire-server.service spire-agent.service spike-spire-join.service spike-register.service
       spike-keeper@.socket spike-keeper@.service spike-keeper-sealing@.service spike-nexus.socket spike-nexus.service
       spike-nexus-health.socket spike-nexus-metrics.socket spike-bootstrap.service spike-ready.socket
       spike-ready.service spike-ready-trigger.service spike.target)
say() { echo "install.sh: $*" >&2; }

if ((UNINSTALL)); then
  if [[ "$R" == "" ]] && command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
    systemctl disable --now spike.target spike-nexus.socket 'spike-keeper@*.socket' 2>/dev/null || true
  fi
  for u in "${UNITS[@]}"; do rm -f "$R$UNITDIR/$u"; done
  rm -f "$R/etc/systemd/system/multi-user.target.wants/spike.target"
  rm -rf "$R/etc/systemd/system/spike.target.wants" "$R/etc/systemd/system/sockets.target.wants/spike-"* \
    "$R/etc/systemd/system/spike-"*.d
  for u in "${UNITS[@]}" spire-server.service spike-nexus.socket; do
    [[ -L "$R/etc/systemd/system/$u" ]] && rm -f "$R/etc/systemd/system/$u"  # masks of --role keeper
  done
  for b in "${BINARIES[@]}" spire-server spire-agent; do rm -f "$R$BINDIR/$b"; done
  # --role database: its setup unit (the clusters and their data stay, named below).
  rm -f "$R$UNITDIR/spike-db-setup.service" "$R/etc/systemd/system/multi-user.target.wants/spike-db-setup.service" \
    "$R/etc/spike/database.env"
  rm -rf "$R/etc/spike/database"
  rm -f "$R$PREFIX/sbin/spike-operator"
  rm -rf "$R$LIBEXECDIR/spike" "$R$DOCDIR" "$R/etc/spike" "$R/etc/spire"
  say "removed binaries, units and configuration."
  say "kept the data (remove it yourself if you mean to):"
  for d in /var/lib/spike-nexus /var/lib/private/spike-nexus /var/lib/spike-bootstrap \
           /var/lib/private/spike-bootstrap /var/lib/spire/server /var/lib/spire-agent \
           /var/lib/private/spike-keeper /var/lib/spike-sealing \
           /var/lib/postgresql/15/spike_primary /var/lib/postgresql/15/spike_standby \
           /etc/postgresql/15/spike_primary /etc/postgresql/15/spike_standby; do
    [[ -e "$R$d" ]] && say "  $R$d"
  done
  exit 0
fi

[[ $(id -u) -eq 0 ]] || { say "must run as root"; exit 1; }

if [[ "$ROLE" == database ]]; then
  # PostgreSQL for Nexus (docs/ha.md): the files and settings now, the clusters from
  # spike-db-setup.service, which needs a running system (it starts the primary to take the
  # standby's base backup).
  [[ -x "$R/usr/lib/postgresql/15/bin/initdb" && -x "$R/usr/bin/pg_createcluster" ]] \
    || { say "role database: PostgreSQL 15 is missing${R:+ in $R} (apt-get install postgresql-15)"; exit 1; }
  for f in "$PG_CERT" "$PG_KEY" "$DB_PASSWORD_FILE"; do
    [[ -n "$f" && -r "$f" ]] \
      || { say "role database needs readable --pg-cert, --pg-key and --db-password-file"; exit 64; }
  done
  [[ -n "$ALLOW_NET" && "$ALLOW_NET" =~ ^[0-9a-fA-F.:/,]+$ ]] \
    || { say "role database needs --allow-net CIDR[,CIDR] (the Nexus hosts)"; exit 64; }
  pw=$(cat "$DB_PASSWORD_FILE")
  [[ ${#pw} -ge 16 && "$pw" =~ ^[A-Za-z0-9._~+/=-]+$ ]] \
    || { say "--db-password-file: at least 16 characters of letters, digits and ._~+/=- (openssl rand -hex 32)"; exit 64; }
  unset pw
  DB_HOST=${DB_HOST:-$(hostname -f 2>/dev/null || hostname)}
  DBLIBEXEC="$PREFIX/libexec" DBUNITDIR="$PREFIX/lib/systemd/system" DBDOCDIR="$PREFIX/share/doc/spike"
  install -d -m 0755 "$R$DBLIBEXEC/spike" "$R$DBUNITDIR" "$R$DBDOCDIR" "$R/etc/spike"
  install -d -m 0700 "$R/etc/spike/database"
  install -m 0644 "$PG_CERT" "$R/etc/spike/database/server.crt"
  install -m 0600 "$PG_KEY" "$R/etc/spike/database/server.key"
  install -m 0600 "$DB_PASSWORD_FILE" "$R/etc/spike/database/password"
  printf '%s\n' "# PostgreSQL for SPIKE Nexus (scripts/install.sh --role database), read by spike-db-setup." \
    "SPIKE_DB_PG_VERSION=15" "SPIKE_DB_PORT=$PG_PORT" "SPIKE_DB_STANDBY_PORT=$STANDBY_PORT" \
    "SPIKE_DB_NAME=$DB_NAME" "SPIKE_DB_USER=$DB_USER" "SPIKE_DB_ALLOW_NET=$ALLOW_NET" > "$R/etc/spike/database.env"
  chmod 0644 "$R/etc/spike/database.env"
  subst=(-e "s|@libexecdir@|$DBLIBEXEC|g" -e "s|@sysconfdir@|/etc|g" -e "s|@docdir@|$DBDOCDIR|g")
  sed "${subst[@]}" "$here/units/libexec/spike-db-setup" > "$R$DBLIBEXEC/spike/spike-db-setup"
  chmod 0755 "$R$DBLIBEXEC/spike/spike-db-setup"
  sed "${subst[@]}" "$here/units/spike-db-setup.service" > "$R$DBUNITDIR/spike-db-setup.service"
  install -m 0644 "$here/docs/ha.md" "$R$DBDOCDIR/ha.md"
  install -m 0644 "$here/README.md" "$R$DBDOCDIR/README.md"
  install -m 0644 "$here/units/etc/haproxy/spike-nexus.cfg" "$R$DBDOCDIR/haproxy-spike-nexus.cfg"
  db_root=()
  [[ "$R" != "" ]] && db_root=(--root="$R")
  # postgresql.service starts every cluster whose start.conf says auto (Debian's generator).
  systemctl "${db_root[@]}" enable spike-db-setup.service postgresql.service >/dev/null 2>&1 \
    || { say "systemctl enable failed"; exit 1; }
  if [[ "$R" == "" && -d /run/systemd/system ]]; then
    systemctl daemon-reload
    say "setting up the clusters (spike-db-setup.service)"
    systemctl start spike-db-setup.service || { say "failed: journalctl -u spike-db-setup.service"; exit 1; }
  else
    say "the clusters are set up at the next boot (spike-db-setup.service)"
  fi
  hosts="$DB_HOST" ports="$PG_PORT"
  [[ -n "$STANDBY_PORT" ]] && hosts="$DB_HOST,$DB_HOST" ports="$PG_PORT,$STANDBY_PORT"
  cat >&2 <<MSG
install.sh: role database: PostgreSQL 15 for Nexus: primary 15/spike_primary on :$PG_PORT${STANDBY_PORT:+, synchronous standby 15/spike_standby on :$STANDBY_PORT}.
  Database "$DB_NAME", role "$DB_USER" (password: $DB_PASSWORD_FILE), TLS only, from $ALLOW_NET.
On each Nexus host (docs/ha.md), pass to scripts/install.sh --role server|nexus:
  --db-conninfo FILE   a file (root's alone, 0600) holding this line, PASSWORD from $DB_PASSWORD_FILE:
      host=$hosts port=$ports dbname=$DB_NAME user=$DB_USER password=PASSWORD sslmode=verify-full target_session_attrs=read-write application_name=HOSTNAME connect_timeout=5
  --db-ca FILE         the CA that signed $PG_CERT ($DB_HOST must be in its subjectAltName)
When the primary is lost: fence it, pg_ctlcluster 15 spike_standby promote, then clear
synchronous_standby_names on the new primary (docs/ha.md, "Runbooks").
MSG
  exit 0
fi
for b in "${BINARIES[@]}"; do
  [[ -x "$FROM/$b" ]] || { say "missing $FROM/$b (run: cargo build --release)"; exit 1; }
done
[[ -n "$SPIRE_FROM" ]] || SPIRE_FROM="$("$here/scripts/build-spire.sh")"

# The shared sandbox must be there: sed reads a missing file as empty, which would install
# the daemons unsandboxed.
[[ -s "$here/units/hardening.conf" ]] || { say "units/hardening.conf is missing or empty"; exit 1; }
fill() { # src dst mode; "@hardening@" alone on a line becomes units/hardening.conf
  sed -e "/^@hardening@\$/{r $here/units/hardening.conf" -e "d;}" \
      -e "s|@bindir@|$BINDIR|g" -e "s|@libexecdir@|$LIBEXECDIR|g" -e "s|@sysconfdir@|$SYSCONFDIR|g" \
      -e "s|@docdir@|$DOCDIR|g" -e "s|@trust_domain@|$TD|g" -e "s|@keepers@|$KEEPERS|g" \
      -e "s|@threshold@|$THRESHOLD|g" -e "s|@keeper_peers@|$PEERS|g" "$1" > "$2.tmp"
  chmod "$3" "$2.tmp"
  mv "$2.tmp" "$2"
}
config() { # src dst: never overwrite an operator's edits unless --force-config
  if [[ -e "$2" && $FORCE_CONFIG -eq 0 ]]; then say "keeping existing $2"; else fill "$1" "$2" 0644; fi
}
# The one rule for keeper ports: keeper N listens on 8440 + N (as the NixOS module's keeperPort).
keeper_port() { echo $((8440 + $1)); }
PEERS=""
if [[ -n "$PEERS_ARG" ]]; then
  IFS=, read -ra urls <<< "$PEERS_ARG"
  ((${#urls[@]} == KEEPERS)) || { say "--keeper-peers lists ${#urls[@]} keepers, --keepers says $KEEPERS"; exit 64; }
  for u in "${urls[@]}"; do PEERS+="${PEERS:+, }\"$u\""; done
else
  for ((i = 1; i <= KEEPERS; i++)); do PEERS+="${PEERS:+, }\"https://127.0.0.1:$(keeper_port "$i")\""; done
fi

say "binaries -> $R$BINDIR"
install -d -m 0755 "$R$BINDIR" "$R$LIBEXECDIR/spike" "$R$UNITDIR" "$R$DOCDIR" "$R/etc/spike" "$R/etc/spire"
for b in "${BINARIES[@]}"; do install -m 0755 "$FROM/$b" "$R$BINDIR/$b"; done
install -m 0755 "$SPIRE_FROM/spire-server" "$SPIRE_FROM/spire-agent" "$R$BINDIR/"
say "units -> $R$UNITDIR"
for u in "${UNITS[@]}"; do
  fill "$here/units/$u" "$R$UNITDIR/$u" 0644
  if grep -q '^@hardening@$' "$here/units/$u" && ! grep -q '^DynamicUser=yes$' "$R$UNITDIR/$u"; then
    say "$u lost its sandbox while filling"; exit 1
  fi
done
# The spike-health group (health socket access) before any unit that names it starts.
install -d -m 0755 "$R$PREFIX/lib/sysusers.d"
install -m 0644 "$here/units/sysusers.d/spike.conf" "$R$PREFIX/lib/sysusers.d/spike.conf"
if [[ "$R" == "" ]]; then
  systemd-sysusers "$PREFIX/lib/sysusers.d/spike.conf"
else
  systemd-sysusers --root="$R" "$R$PREFIX/lib/sysusers.d/spike.conf"
fi
for s in "$here"/units/libexec/*; do fill "$s" "$R$LIBEXECDIR/spike/$(basename "$s")" 0755; done
# The operator's way back (recover/restore), on root's PATH.
install -d -m 0755 "$R$PREFIX/sbin"
ln -sfn "$LIBEXECDIR/spike/spike-operator" "$R$PREFIX/sbin/spike-operator"
install -m 0644 "$here/README.md" "$R$DOCDIR/README.md"
install -m 0644 "$here/docs/operations.md" "$R$DOCDIR/operations.md"
install -m 0644 "$here/docs/ha.md" "$R$DOCDIR/ha.md"
# HAProxy in front of several Nexus instances (docs/ha.md, "Clients"): an example to copy.
install -m 0644 "$here/units/etc/haproxy/spike-nexus.cfg" "$R$DOCDIR/haproxy-spike-nexus.cfg"
# The sealing mode is the operator's choice: --force-config rewrites keeper.toml, but keeps it
# unless --shard-sealing says otherwise.
if [[ -z "$SEALING" && -f "$R/etc/spike/keeper.toml" ]]; then
  SEALING=$(sed -n 's/^shard_sealing *= *"\([^"]*\)".*/\1/p' "$R/etc/spike/keeper.toml")
  SEALING_PCRS=$(sed -n 's/^shard_sealing_pcrs *= *\[\(.*\)\].*/\1/p' "$R/etc/spike/keeper.toml" | tr -d ' ' | tr ',' '+')
fi
say "configuration -> $R/etc/spike, $R/etc/spire"
for c in "$here"/units/etc/spike/*; do config "$c" "$R/etc/spike/$(basename "$c")"; done
for c in "$here"/units/etc/spire/*; do config "$c" "$R/etc/spire/$(basename "$c")"; done

# Upgrade from the layout before spire-server ran as its own user (spire-server, the NixOS
# way): its state and the paths in an existing server.conf move to /var/lib/spire/server and
# /run/spire/server. systemd hands the state to the spire-server user at the next start.
if [[ -d "$R/var/lib/spire-server" && ! -e "$R/var/lib/spire/server" ]]; then
  install -d -m 0755 "$R/var/lib/spire"
  mv "$R/var/lib/spire-server" "$R/var/lib/spire/server"
  say "moved the SPIRE server state to /var/lib/spire/server"
fi
if grep -Eq '/(var/lib|run)/spire-server' "$R/etc/spire/server.conf"; then
  sed -i -e 's|/var/lib/spire-server|/var/lib/spire/server|g' -e 's|/run/spire-server|/run/spire/server|g' \
    "$R/etc/spire/server.conf"
  say "updated /etc/spire/server.conf to the paths /var/lib/spire/server and /run/spire/server"
fi

sysctl_root=()
[[ "$R" != "" ]] && sysctl_root=(--root="$R")
dropin() { # unit file-name content
  install -d -m 0755 "$R/etc/systemd/system/$1.d"
  printf '%s\n' "$3" > "$R/etc/systemd/system/$1.d/$2"
}
# The Debian layout's agent join runs before registration (the NixOS package has neither).
dropin spike-register.service join.conf "[Unit]
After=spike-spire-join.service"
keeper_sockets=()
case "$ROLE" in
  all)
    for ((i = 1; i <= KEEPERS; i++)); do
      keeper_sockets+=("spike-keeper@$i.socket")
      dropin "spike-keeper@$i.socket" listen.conf "# Keeper $i: port 8440 + $i (install.sh keeper_port).
[Socket]
ListenStream=
ListenStream=127.0.0.1:$(keeper_port "$i")"
    done ;;
  server)
    say "role server: no local keepers; SPIRE and Nexus reachable from ${ALLOW_NET:-nowhere else}"
    sed -i 's/^SPIKE_KEEPER_COUNT=.*/SPIKE_KEEPER_COUNT=0/' "$R/etc/spike/appliance.env"
    sed -i 's/bind_address = "127.0.0.1"/bind_address = "0.0.0.0"/' "$R/etc/spire/server.conf"
    if [[ -n "$ALLOW_NET" ]]; then
      for u in spike-nexus.service spike-bootstrap.service; do
        dropin "$u" network.conf "# Keepers on other hosts (install.sh --allow-net).
[Service]
IPAddressAllow=$ALLOW_NET"
      done
      dropin spike-nexus.socket network.conf "# Workloads and operators on other hosts (install.sh --allow-net): off loopback,
# and only from these networks.
[Socket]
BindToDevice=
IPAddressAllow=localhost $ALLOW_NET
IPAddressDeny=any"
    fi ;;
  nexus)
    say "role nexus: Nexus on the shared database, SPIRE agent joining $SERVER_ADDRESS; reachable from ${ALLOW_NET:-nowhere else}"
    sed -i 's/^SPIKE_KEEPER_COUNT=.*/SPIKE_KEEPER_COUNT=0/' "$R/etc/spike/appliance.env"
    sed -i "s/server_address = \"127.0.0.1\"/server_address = \"$SERVER_ADDRESS\"/" "$R/etc/spire/agent.conf"
    if [[ -n "$ALLOW_NET" ]]; then
      dropin spike-nexus.service network.conf "# Keepers on other hosts (install.sh --allow-net).
[Service]
IPAddressAllow=$ALLOW_NET"
      dropin spike-nexus.socket network.conf "# Workloads, operators and load balancers on other hosts (install.sh --allow-net):
# off loopback, and only from these networks.
[Socket]
BindToDevice=
IPAddressAllow=localhost $ALLOW_NET
IPAddressDeny=any"
    fi
    # No SPIRE server here (the agent is joined by the operator), and Bootstrap runs once for
    # the cluster, on the server host (docs/ha.md, "Bootstrap with several instances").
    systemctl "${sysctl_root[@]}" mask spire-server.service spike-register.service spike-bootstrap.service \
      >/dev/null 2>&1 ;;
  keeper)
    say "role keeper: keeper $KEEPER_ID on :8443, SPIRE agent joining $SERVER_ADDRESS"
    sed -i "s/server_address = \"127.0.0.1\"/server_address = \"$SERVER_ADDRESS\"/" "$R/etc/spire/agent.conf"
    dropin "spike-keeper@$KEEPER_ID.socket" listen.conf "# Reachable by Nexus and bootstrap on other hosts.
[Socket]
ListenStream=
ListenStream=0.0.0.0:8443"
    # This host runs no SPIRE server, Nexus or bootstrap; the agent is joined by the operator.
    systemctl "${sysctl_root[@]}" mask spire-server.service spike-register.service \
      spike-nexus.service spike-nexus.socket spike-nexus-health.socket spike-nexus-metrics.socket \
      spike-bootstrap.service \
      spike-ready.service spike-ready.socket spike-ready-trigger.service >/dev/null 2>&1
    keeper_sockets=("spike-keeper@$KEEPER_ID.socket") ;;
esac

# The PostgreSQL store (--db-conninfo; roles server and nexus; docs/ha.md): the connection
# string as Nexus's credential, the CA, nexus.toml's backend, the database in the allow-list.
PG_DROPIN="$R/etc/systemd/system/spike-nexus.service.d/postgres.conf"
pg_toml() { # nexus.toml: the postgres backend and its table (kept if the operator already has one)
  sed -i 's/^backend_store *=.*/backend_store = "postgres"/' "$R/etc/spike/nexus.toml"
  if ! grep -q '^\[postgres\]' "$R/etc/spike/nexus.toml"; then
    {
      echo
      echo "# The shared PostgreSQL store (docs/ha.md). The connection string is the credential below"
      echo "# (LoadCredential= in spike-nexus.service.d/postgres.conf), never in this file."
      echo "[postgres]"
      echo 'credential = "nexus-db"'
      [[ ! -e "$R/etc/spike/postgres-ca.pem" ]] || echo 'ca_file = "/etc/spike/postgres-ca.pem"'
      echo "pool_size = 16"
      echo 'timeout = "5s"'
    } >> "$R/etc/spike/nexus.toml"
  fi
}
if [[ -n "$DB_CONNINFO" ]]; then
  [[ -r "$DB_CONNINFO" ]] || { say "--db-conninfo $DB_CONNINFO: not readable"; exit 64; }
  (($(wc -l < "$DB_CONNINFO") <= 1)) || { say "--db-conninfo: one line, libpq's key=value form (docs/ha.md)"; exit 64; }
  db_hosts=$(grep -o '\(^\| \)host=[^ ]*' "$DB_CONNINFO" | sed 's/.*host=//' | tr ',' ' ' || true)
  tcp_hosts=()
  for h in $db_hosts; do [[ "$h" == /* ]] || tcp_hosts+=("$h"); done
  if ((${#tcp_hosts[@]})); then
    [[ -n "$DB_CA" && -r "$DB_CA" ]] \
      || { say "--db-conninfo names TCP hosts (${tcp_hosts[*]}): --db-ca FILE (the database servers' CA) is required"; exit 64; }
    if [[ -z "$DB_ALLOW" ]]; then
      for h in "${tcp_hosts[@]}"; do
        [[ "$h" =~ ^[0-9.]+$ || "$h" =~ ^[0-9a-fA-F:]+$ ]] \
          || { say "--db-conninfo names the host $h: pass its addresses with --db-allow ADDR[,ADDR] (IPAddressAllow=)"; exit 64; }
      done
      DB_ALLOW=$(printf '%s\n' "${tcp_hosts[@]}" | sort -u | paste -sd ' ')
    fi
  fi
  install -d -m 0755 "$R/etc/spike"
  install -m 0600 -o root -g root "$DB_CONNINFO" "$R/etc/spike/nexus-db.conninfo"
  [[ -z "$DB_CA" ]] || install -m 0644 "$DB_CA" "$R/etc/spike/postgres-ca.pem"
  pg_toml
  allow_line=""
  [[ -z "$DB_ALLOW" ]] || allow_line="IPAddressAllow=${DB_ALLOW//,/ }"
  dropin spike-nexus.service postgres.conf "# The PostgreSQL store (install.sh --db-conninfo; docs/ha.md): the connection string
# as the credential nexus-db, and the database servers in the IP allow-list (it adds to
# the unit's IPAddressAllow=localhost and to network.conf's).
[Service]
LoadCredential=nexus-db:/etc/spike/nexus-db.conninfo
$allow_line"
  say "Nexus uses PostgreSQL (/etc/spike/nexus-db.conninfo${DB_ALLOW:+; database at $DB_ALLOW})"
elif [[ "$ROLE" != keeper && -e "$PG_DROPIN" && -e "$R/etc/spike/nexus-db.conninfo" ]]; then
  # Installed again without --db-conninfo (an upgrade): the store stays PostgreSQL, also when
  # --force-config rewrote nexus.toml.
  pg_toml
  say "keeping the PostgreSQL store of an earlier install (/etc/spike/nexus-db.conninfo)"
fi

# Shard sealing: keeper.toml's shard_sealing is the one source; the drop-in follows it.
KEEPER_TOML="$R/etc/spike/keeper.toml"
set_toml_key() { # file key value: replace the top-level key, or add it before the first table
  if grep -q "^$2 *=" "$1"; then
    sed -i "s|^$2 *=.*|$2 = $3|" "$1"
  else
    sed -i "0,/^\[/s|^\[|$2 = $3\n\n[|" "$1"
  fi
}
if [[ -n "$SEALING" ]]; then
  # Changed on a copy, checked, then moved into place: a refused mode leaves keeper.toml as it was.
  cp -p "$KEEPER_TOML" "$KEEPER_TOML.new"
  set_toml_key "$KEEPER_TOML.new" shard_sealing "\"$SEALING\""
  set_toml_key "$KEEPER_TOML.new" shard_sealing_pcrs "[${SEALING_PCRS//[+]/, }]"
  if [[ "$R" == "" ]]; then
    # On this machine, refuse a mode it cannot provide (tpm2 without a TPM2) now, not at boot.
    "$R$BINDIR/spike-keeper" --config "$KEEPER_TOML.new" check-config >/dev/null \
      || { rm -f "$KEEPER_TOML.new"; say "shard sealing $SEALING refused (see above); keeper.toml unchanged"; exit 64; }
  fi
  mv "$KEEPER_TOML.new" "$KEEPER_TOML"
fi
SEALING_NOW=$(sed -n 's/^shard_sealing *= *"\([^"]*\)".*/\1/p' "$KEEPER_TOML")
SEALING_NOW=${SEALING_NOW:-off}
if [[ "$SEALING_NOW" != off ]]; then
  say "shard sealing: $SEALING_NOW (keepers keep their shard across reboots, sealed to this machine)"
  dropin "spike-keeper@.service" shard-sealing.conf "# Shard sealing (keeper.toml shard_sealing = \"$SEALING_NOW\"; scripts/install.sh --shard-sealing).
# Keeper %i keeps its shard in its state directory, sealed under a key that
# spike-keeper-sealing@%i creates and systemd decrypts for it (docs/security.md).
[Unit]
Requires=spike-keeper-sealing@%i.service
After=spike-keeper-sealing@%i.service

[Service]
StateDirectory=spike-keeper/%i
StateDirectoryMode=0700
LoadCredentialEncrypted=shard-sealing-key:/var/lib/spike-sealing/keeper-%i/key.cred"
else
  rm -f "$R/etc/systemd/system/spike-keeper@.service.d/shard-sealing.conf"
  if [[ "$SEALING_ARG" == off ]] && [[ -e "$R/var/lib/spike-sealing" || -e "$R/var/lib/private/spike-keeper" ]]; then
    # Turned off on purpose: the sealed shards and their keys go, so no copy outlives the choice.
    say "shard sealing off: removing the sealed shards and their keys"
    rm -rf "$R/var/lib/spike-sealing" "$R/var/lib/private/spike-keeper" "$R/var/lib/spike-keeper"
  fi
fi

if ((ENABLE)); then
  say "enabling spike.target with $KEEPERS keepers (threshold $THRESHOLD)"
  if [[ "$ROLE" == keeper ]]; then
    units=(spike.target spire-agent.service spike-spire-join.service)
  elif [[ "$ROLE" == nexus ]]; then
    units=(spike.target spike-spire-join.service spire-agent.service spike-nexus.socket spike-nexus-health.socket
           spike-nexus-metrics.socket spike-nexus.service spike-ready.socket spike-ready.service)
  else
    units=(spike.target spire-server.service spike-spire-join.service spire-agent.service spike-register.service spike-nexus.socket
           spike-nexus-health.socket spike-nexus-metrics.socket spike-nexus.service spike-bootstrap.service spike-ready.socket spike-ready.service)
  fi
  systemctl "${sysctl_root[@]}" enable "${units[@]}" "${keeper_sockets[@]}" >/dev/null 2>&1 \
    || { say "systemctl enable failed"; exit 1; }
  if [[ "$R" == "" && -d /run/systemd/system ]]; then systemctl daemon-reload; fi
fi
say "done. Start it with: systemctl start --no-block spike.target; then watch: spike-operator status"
