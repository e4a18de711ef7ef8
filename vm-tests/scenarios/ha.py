# vm-test: {"bridge": true, "nodes": {"db": {"address": "10.77.0.20/24", "install": ["--role", "database", "--pg-cert", "@testdir@/db.crt", "--pg-key", "@testdir@/db.key", "--db-password-file", "@testdir@/db.password", "--allow-net", "10.77.0.0/24", "--standby-port", "5433", "--db-host", "10.77.0.20"]}, "nexus1": {"address": "10.77.0.10/24", "keepers": 3, "threshold": 2, "install": ["--role", "server", "--keeper-peers", "https://10.77.0.11:8443,https://10.77.0.12:8443,https://10.77.0.13:8443", "--allow-net", "10.77.0.0/24", "--db-conninfo", "@testdir@/nexus1.conninfo", "--db-ca", "@testdir@/ca.pem"]}, "nexus2": {"address": "10.77.0.14/24", "keepers": 3, "threshold": 2, "install": ["--role", "nexus", "--keeper-peers", "https://10.77.0.11:8443,https://10.77.0.12:8443,https://10.77.0.13:8443", "--allow-net", "10.77.0.0/24", "--server-address", "10.77.0.10", "--db-conninfo", "@testdir@/nexus2.conninfo", "--db-ca", "@testdir@/ca.pem"]}, "keeper1": {"address": "10.77.0.11/24", "install": ["--role", "keeper", "--keeper-id", "1", "--server-address", "10.77.0.10"]}, "keeper2": {"address": "10.77.0.12/24", "install": ["--role", "keeper", "--keeper-id", "2", "--server-address", "10.77.0.10"]}, "keeper3": {"address": "10.77.0.13/24", "install": ["--role", "keeper", "--keeper-id", "3", "--server-address", "10.77.0.10"]}}}
# High availability on PostgreSQL (docs/ha.md): two Nexus instances share one database, a
# primary with a synchronous standby, and one set of keepers on hosts of their own.
#
#   db        PostgreSQL 15: primary :5432, synchronous streaming standby :5433, TLS only
#             (install.sh --role database; the certificate for its bridge address is made
#             here, at test time); HAProxy on :8553 with units/etc/haproxy/spike-nexus.cfg
#   nexus1    SPIRE server and agent, Nexus, Bootstrap (install.sh --role server)
#   nexus2    SPIRE agent joined here, Nexus, no Bootstrap (install.sh --role nexus); the
#             write loops and the clients run here
#   keeper1-3 keeper N, each under its own agent
#
# Steps: both instances unseal from the same keepers, bootstrap ran once; write loops through
# both instances (distinct paths and one shared path) record every acknowledged write; nexus1
# is power-cut mid-load and nexus2 goes on serving, `spike` with both URLs and `spike` through
# HAProxy fail over; the PostgreSQL primary is killed and the standby promoted, and nexus2
# reconnects by itself; then every acknowledged write must be readable with its value, and the
# shared path's versions hold each write once. Prints
#   HA-RESULT acked=N lost=0 nexus_failover_s=X db_failover_s=Y
import json
import os
import secrets
import subprocess
import time

keepers = [keeper1, keeper2, keeper3]
NSPAWN = "test_dir" in globals()
if NSPAWN:
    ADDR = {"db": "10.77.0.20", "nexus1": "10.77.0.10", "nexus2": "10.77.0.14"}
else:
    # vm-tests/ha.nix: host names, its own certificates and password.
    ADDR = {"db": "db", "nexus1": "nexus1", "nexus2": "nexus2"}
URL1 = f"https://{ADDR['nexus1']}:8553"
URL2 = f"https://{ADDR['nexus2']}:8553"
BOTH_1ST = f"{URL1},{URL2}"  # nexus1 first, then nexus2
BOTH_2ND = f"{URL2},{URL1}"
HAPROXY = f"https://{ADDR['db']}:8553"
DB_NAME = DB_USER = "spike-nexus"
D = "/var/tmp/ha"  # on nexus2: the loops' records
# A loop's requests are bounded in count and time; it stops by itself. Each loop pauses
# between writes, so a few hundred writes stay quick to check.
MAX_ITERATIONS = 3000
PAUSE_S = 0.1
LOOPS = {  # name: (URL list, distinct paths or the shared path)
    "w1": (BOTH_1ST, "distinct"),
    "w2": (BOTH_2ND, "distinct"),
    "s1": (BOTH_1ST, "same"),
    "s2": (BOTH_2ND, "same"),
}


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, cwd=test_dir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def make_test_files() -> str:
    """A CA and the database's certificate for its bridge address, the role's password and each
    Nexus host's connection string, in the test's own directory (removed with the machines)."""
    with open(os.path.join(test_dir, "ca.cnf"), "w") as f:
        f.write("[req]\ndistinguished_name = dn\nprompt = no\nx509_extensions = ca\n[dn]\nCN = spike-ha-test-ca\n"
                "[ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n"
                "subjectKeyIdentifier = hash\n")
    with open(os.path.join(test_dir, "db.cnf"), "w") as f:
        f.write(f"[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = db\n[server]\n"
                f"subjectAltName = IP:{ADDR['db']},DNS:db\nbasicConstraints = critical,CA:FALSE\n"
                "keyUsage = critical,digitalSignature\nextendedKeyUsage = serverAuth\nauthorityKeyIdentifier = keyid\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl("req", "-x509", "-config", "ca.cnf", *ec, "-days", "2", "-keyout", "ca.key", "-out", "ca.pem")
    openssl("req", "-new", "-config", "db.cnf", *ec, "-keyout", "db.key", "-out", "db.csr")
    openssl("x509", "-req", "-in", "db.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-set_serial", "2", "-days", "2",
            "-extfile", "db.cnf", "-extensions", "server", "-out", "db.crt")
    password = secrets.token_hex(24)
    for name, content in [("db.password", password)] + [
        (f"{n}.conninfo",
         f"host={ADDR['db']},{ADDR['db']} port=5432,5433 dbname={DB_NAME} user={DB_USER} password={password} "
         f"sslmode=verify-full target_session_attrs=read-write application_name={n} connect_timeout=5")
        for n in ("nexus1", "nexus2")
    ]:
        fd = os.open(os.path.join(test_dir, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(content + "\n")
    return password


# -- the database host, on either driver --------------------------------------------------------

def db_psql(port: int, sql: str) -> str:
    """SQL as the PostgreSQL superuser on the database host, over the unix socket."""
    sock = "/var/run/postgresql" if NSPAWN else ("/run/postgresql" if port == 5432 else "/run/postgresql-standby")
    return db.succeed(f"runuser -u postgres -- psql -X -At -h {sock} -p {port} -d postgres -v ON_ERROR_STOP=1 "
                      f"-c \"{sql}\"").strip()


def kill_primary() -> None:
    if NSPAWN:
        # A crash of the primary: SIGKILL to the postmaster. Then fence it (its unit does not
        # restart it; the stop also ends backends that outlived their postmaster).
        db.succeed("kill -KILL $(head -n 1 /var/lib/postgresql/15/spike_primary/postmaster.pid)")
        db.execute("systemctl stop postgresql@15-spike_primary.service")
    else:
        # nixpkgs restarts postgresql.service by itself (Restart=always): fence it with a stop.
        db.succeed("systemctl stop postgresql.service")


def promote_standby() -> None:
    if NSPAWN:
        db.succeed("pg_ctlcluster 15 spike_standby promote")
    else:
        db.succeed("runuser -u postgres -- pg_ctl promote -w -D /var/lib/postgresql-standby")


def health(m) -> dict:
    return json.loads(m.succeed("spike-nexus health"))


def spike_on_nexus2(urls: str, args: str) -> str:
    return nexus2.succeed(f"SPIKE_NEXUS_API_URL={urls} spike {args}")


def acked_counts() -> dict:
    status, out = nexus2.execute(f"for n in {' '.join(LOOPS)}; do printf '%s ' $n; cat {D}/$n.acked 2>/dev/null | wc -l; done")
    assert status == 0, out
    return {n: int(c) for n, c in (line.split() for line in out.strip().splitlines())}


def wait_more_acks(before: dict, more: dict, timeout: int = 120) -> dict:
    """Each loop acknowledges more[loop] writes beyond `before`."""
    log(f"waiting for more acknowledged writes: {more}")
    deadline = time.monotonic() + timeout
    while True:
        now = acked_counts()
        if all(now[n] >= before.get(n, 0) + more[n] for n in LOOPS):
            return now
        if time.monotonic() > deadline:
            errs = nexus2.succeed(f"tail -n 3 {D}/*.err 2>/dev/null || true")
            raise AssertionError(f"write loops stalled: {before} -> {now}; last errors:\n{errs}")
        time.sleep(1)


if NSPAWN:
    password = make_test_files()
else:
    password = "vm-test-only"
start_all()

with subtest("SPIRE: the keeper hosts and nexus2 join the server on nexus1"):
    join_keeper_hosts(nexus1, keepers)
    join_nexus_host(nexus1, nexus2, "nexus2")

with subtest("the database: a primary and a synchronous standby, TLS and the role's password only"):
    if NSPAWN:
        db.wait_for_unit("spike-db-setup.service", timeout=180)
    else:
        db.wait_for_unit("postgresql-standby.service", timeout=180)
    db.wait_until_succeeds(
        "runuser -u postgres -- psql -X -At -h " + ("/var/run/postgresql" if NSPAWN else "/run/postgresql")
        + " -p 5432 -d postgres -c \"SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby1'\""
        " | grep -qx sync", timeout=60)
    assert db_psql(5433, "SELECT pg_is_in_recovery()") == "t"
    # From a Nexus host: TLS with the password works; plaintext and a wrong password do not.
    good = f"host={ADDR['db']} port=5432 dbname={DB_NAME} user={DB_USER} password={password}"
    nexus2.succeed(f"psql -X -At '{good} sslmode=require' -c 'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()'"
                   " | grep -qx t")
    nexus2.fail(f"psql -X '{good} sslmode=disable' -c 'SELECT 1'")
    nexus2.fail(f"psql -X 'host={ADDR['db']} port=5432 dbname={DB_NAME} user={DB_USER} password=wrong-password "
                "sslmode=require' -c 'SELECT 1'")
    nexus2.fail(f"psql -X 'host={ADDR['db']} port=5432 dbname=postgres user={DB_USER} password={password} "
                "sslmode=require' -c 'SELECT 1'")

with subtest("both Nexus instances unseal from the same keepers; bootstrap ran once, on nexus1"):
    nexus1.wait_for_unit("spike.target", timeout=300)
    nexus2.wait_for_unit("spike.target", timeout=300)
    for m in (nexus1, nexus2):
        h = health(m)
        assert h["initialized"] and not h["sealed"] and h["backend_reachable"], f"{m.name}: {h}"
        # The connection string (it holds the password) is root's alone.
        m.succeed("stat -c '%U %a' /etc/spike/nexus-db.conninfo | grep -Eqx 'root [46]00'")
        if NSPAWN:
            m.succeed("grep -q '^backend_store = \"postgres\"' /etc/spike/nexus.toml")
            m.succeed("grep -q '^LoadCredential=nexus-db:/etc/spike/nexus-db.conninfo' "
                      "/etc/systemd/system/spike-nexus.service.d/postgres.conf")
    nexus1.succeed("test -e /var/lib/spike-bootstrap/bootstrap.done")
    out = nexus1.succeed("journalctl --no-pager -u spike-bootstrap.service | grep -c 'bootstrap completed' || true")
    assert out.strip() == "1", f"bootstrap completed {out.strip()} times on nexus1"
    assert nexus2.succeed("systemctl is-enabled spike-bootstrap.service || true").strip() == "masked"
    nexus2.fail("test -e /var/lib/spike-bootstrap/bootstrap.done")
    nexus2.fail("systemctl is-active --quiet spire-server.service")
    # One store: written through one instance, read through the other.
    spike_on_nexus2(URL1, "secret put ha/probe v=through-nexus1")
    assert spike_on_nexus2(URL2, "secret get ha/probe v").strip() == "through-nexus1"
    # Negative: a user without an identity is refused.
    nexus2.fail("SPIKE_SPIFFE_SOURCE_TIMEOUT=2s setpriv --reuid=4242 --regid=4242 --clear-groups spike secret get ha/probe v")

with subtest("every version is kept (so every acknowledged write can be checked); a restarted instance unseals from the keepers"):
    for m in (nexus1, nexus2):
        m.succeed(
            "install -d /run/systemd/system/spike-nexus.service.d",
            "printf '[Service]\\nEnvironment=SPIKE_NEXUS_MAX_SECRET_VERSIONS=100000\\n' "
            "> /run/systemd/system/spike-nexus.service.d/ha-test.conf",
            "systemctl daemon-reload",
            "systemctl restart spike-nexus.service",
        )
    for m in (nexus1, nexus2):
        m.wait_until_succeeds("spike-nexus health --print-code | grep -qx 200", timeout=120)

if NSPAWN:
    with subtest("HAProxy on the database host: units/etc/haproxy/spike-nexus.cfg as shipped"):
        db.succeed(
            f"printf '%s nexus1\\n%s nexus2\\n' {ADDR['nexus1']} {ADDR['nexus2']} >> /etc/hosts",
            "install -m 0644 /usr/local/share/doc/spike/haproxy-spike-nexus.cfg /etc/haproxy/haproxy.cfg",
            "haproxy -c -q -f /etc/haproxy/haproxy.cfg",
            "systemctl start haproxy.service",
        )
        db.wait_for_open_port(8553)
        nexus2.wait_until_succeeds(f"SPIKE_NEXUS_API_URL={HAPROXY} spike secret get ha/probe v | grep -qx through-nexus1",
                                   timeout=30)

with subtest("write loops through both instances: distinct paths and one shared path"):
    writer = f"""#!/bin/sh
# ha.py write loop: NAME MODE (distinct: ha/NAME/kI; same: ha/same). Records each
# acknowledged write as "path value time" in {D}/NAME.acked.
name=$1
mode=$2
i=0
while [ ! -e {D}/stop ] && [ $i -lt {MAX_ITERATIONS} ]; do
  i=$((i + 1))
  v=$name-$i
  if [ "$mode" = same ]; then p=ha/same; else p=ha/$name/k$i; fi
  if out=$(spike secret put "$p" "v=$v" 2>&1); then
    echo "$p $v $(date +%s.%N)" >> {D}/$name.acked
  else
    echo "$(date +%s.%N) $p $v $out" | head -c 300 >> {D}/$name.err
    echo >> {D}/$name.err
  fi
  sleep {PAUSE_S}
done
"""
    # A client started after the power cut: it retries until served and records when.
    probe = f"""#!/bin/sh
# ha.py probe: NAME; SPIKE_NEXUS_API_URL from the environment.
i=0
until spike secret get ha/probe v >/dev/null 2>&1; do
  i=$((i + 1))
  [ $i -lt 600 ] || exit 1
  sleep 0.1
done
date +%s.%N > {D}/$1.served
"""
    nexus2.succeed(f"install -d {D}", f"cat > {D}/writer.sh <<'SH'\n{writer}SH", f"cat > {D}/probe.sh <<'SH'\n{probe}SH")
    for name, (urls, mode) in LOOPS.items():
        nexus2.succeed(
            f"systemd-run --unit=ha-{name} --service-type=exec -p RuntimeMaxSec=900 --setenv=PATH=\"$PATH\" "
            f"--setenv=SPIKE_NEXUS_API_URL={urls} /bin/sh {D}/writer.sh {name} {mode}"
        )
    before_cut = wait_more_acks({}, {n: 40 for n in LOOPS})
    log(f"acknowledged before the power cut: {before_cut}")

with subtest("power cut of nexus1 mid-load: nexus2 serves; `spike` with both URLs and HAProxy fail over"):
    # Clients started right after the cut, each retrying until served: `spike` with the URL
    # list that names nexus1 first, and `spike` through HAProxy. The machines share the host's
    # clock, so each records when it was served.
    probes = {"list": BOTH_1ST}
    if NSPAWN:
        probes["haproxy"] = HAPROXY
    t0 = time.time()
    nexus1.crash()
    for name, urls in probes.items():
        nexus2.succeed(f"systemd-run --unit=ha-probe-{name} --service-type=exec --setenv=PATH=\"$PATH\" "
                       f"--setenv=SPIKE_NEXUS_API_URL={urls} /bin/sh {D}/probe.sh {name}")
    served = {}
    for name in probes:
        nexus2.wait_until_succeeds(f"test -s {D}/{name}.served", timeout=120)
        served[name] = float(nexus2.succeed(f"cat {D}/{name}.served")) - t0
        log(f"MEASURE nexus1 power-cut -> `spike` ({name}: {probes[name]}) served: {served[name]:.1f} s")
    nexus_failover_s = served["list"]
    assert spike_on_nexus2(BOTH_2ND, "secret get ha/probe v").strip() == "through-nexus1"
    nexus2.succeed("spike-nexus health --print-code | grep -qx 200")
    if NSPAWN:
        # HAProxy marked nexus1 down (its TCP check): its next clients go to nexus2 at once.
        db.wait_until_succeeds("journalctl --no-pager -u haproxy.service | grep -q 'nexus1 is DOWN'", timeout=30)
        t = time.monotonic()
        spike_on_nexus2(HAPROXY, "secret put ha/through-haproxy v=after-cut")
        assert spike_on_nexus2(HAPROXY, "secret get ha/through-haproxy v").strip() == "after-cut"
        log(f"MEASURE a put and a get through HAProxy with nexus1 down: {time.monotonic() - t:.2f} s")
    # The loops go on through nexus2. Those that name nexus1 first pay for the dead host at
    # every request (a new `spike` process each time): one write each is enough here.
    after_cut = wait_more_acks(acked_counts(), {"w1": 1, "s1": 1, "w2": 20, "s2": 20})
    log(f"acknowledged after the power cut: {after_cut}")

with subtest("PostgreSQL primary killed: writes stop; standby promoted; nexus2 reconnects by itself"):
    t0 = time.monotonic()
    kill_primary()
    # Nothing can commit now (the standby is read-only): Nexus answers 503 and says why.
    nexus2.wait_until_succeeds("spike-nexus health --print-code | grep -qx 503", timeout=60)
    h = health(nexus2)
    assert not h["backend_reachable"] and not h["sealed"], h
    log(f"nexus2 health with the primary down: backend_error={h.get('backend_error')!r}")
    nexus2.fail(f"SPIKE_NEXUS_API_URL={URL2} spike secret put ha/during-outage v=x")
    nexus2.wait_until_succeeds(
        "systemctl show -p StatusText --value spike-nexus.service | grep -q 'PostgreSQL unreachable'", timeout=30)
    # The runbook (docs/ha.md): promote, then clear synchronous_standby_names on the new primary.
    # Fenced: the old primary stays down.
    if NSPAWN:
        db.fail("systemctl is-active --quiet postgresql@15-spike_primary.service")
    promote_standby()
    db.wait_until_succeeds(
        "runuser -u postgres -- psql -X -At -h " + ("/var/run/postgresql" if NSPAWN else "/run/postgresql-standby")
        + " -p 5433 -d postgres -c 'SELECT pg_is_in_recovery()' | grep -qx f", timeout=30)
    db_psql(5433, "ALTER SYSTEM SET synchronous_standby_names = ''")
    db_psql(5433, "SELECT pg_reload_conf()")
    db.wait_until_succeeds(
        "runuser -u postgres -- psql -X -At -h " + ("/var/run/postgresql" if NSPAWN else "/run/postgresql-standby")
        + " -p 5433 -d postgres -c 'SHOW synchronous_standby_names' | grep -qx ''", timeout=10)
    nexus2.succeed(f"timeout 120 sh -c 'until SPIKE_NEXUS_API_URL={URL2} spike secret put ha/after-failover v=ok "
                   ">/dev/null 2>&1; do sleep 0.2; done'")
    db_failover_s = time.monotonic() - t0
    log(f"MEASURE primary killed -> writes accepted again (promotion by this script included): {db_failover_s:.1f} s")
    nexus2.wait_until_succeeds("spike-nexus health --print-code | grep -qx 200", timeout=60)
    assert health(nexus2)["backend_reachable"]
    log("connections on the new primary: "
        + db_psql(5433, "SELECT application_name, count(*) FROM pg_stat_activity WHERE usename = 'spike-nexus' "
                        "GROUP BY 1").replace(chr(10), "; "))
    after_db = wait_more_acks(acked_counts(), {"w1": 1, "s1": 1, "w2": 20, "s2": 20})
    log(f"acknowledged after the database failover: {after_db}")

with subtest("every acknowledged write is readable with its value; the shared path holds each write once"):
    nexus2.succeed(f"touch {D}/stop")
    for name in LOOPS:
        nexus2.wait_until_fails(f"systemctl is-active --quiet ha-{name}.service", timeout=120)
    acked = {}
    for name in LOOPS:
        acked[name] = [line.split()[:2] for line in nexus2.succeed(f"cat {D}/{name}.acked").splitlines() if line]
    total = sum(len(v) for v in acked.values())
    lost = []
    # Distinct paths: each written once; read back through nexus2, four readers at a time.
    distinct = [pv for name, (_, mode) in LOOPS.items() if mode == "distinct" for pv in acked[name]]
    nexus2.succeed(f"cat > {D}/distinct.list <<'EOF'\n" + "\n".join(f"{p} {v}" for p, v in distinct) + "\nEOF")
    out = nexus2.succeed(
        f"SPIKE_NEXUS_API_URL={URL2} xargs -P 4 -n 2 sh -c "
        "'got=$(spike secret get \"$0\" v 2>&1); [ \"$got\" = \"$1\" ] || echo \"LOST $0 $1 got=$got\"' "
        f"< {D}/distinct.list"
    )
    lost += [line for line in out.splitlines() if line.startswith("LOST")]
    # The shared path: versions oldest..current, each holding a different write; every
    # acknowledged one among them, and each loop's in the order it was acknowledged.
    meta = json.loads(spike_on_nexus2(URL2, "secret metadata get ha/same -f json"))
    cur, oldest = meta["metadata"]["currentVersion"], meta["metadata"]["oldestVersion"]
    numbers = sorted(int(k) for k in meta["versions"])
    assert numbers == list(range(oldest, cur + 1)), f"ha/same versions {numbers[:5]}... not {oldest}..{cur}"
    assert oldest == 1, f"ha/same: the oldest version is {oldest}: versions were pruned"
    out = nexus2.succeed(
        f"seq {oldest} {cur} | SPIKE_NEXUS_API_URL={URL2} xargs -P 4 -n 1 sh -c "
        "'printf \"%s %s\\n\" \"$0\" \"$(spike secret get ha/same v -v \"$0\")\"'"
    )
    by_version = {int(n): v for n, v in (line.split(" ", 1) for line in out.strip().splitlines())}
    values = list(by_version.values())
    assert len(by_version) == cur - oldest + 1, f"read {len(by_version)} of {cur - oldest + 1} versions of ha/same"
    dups = sorted({v for v in values if values.count(v) > 1})
    assert not dups, f"ha/same: a write appears in more than one version: {dups[:10]}"
    version_of = {v: n for n, v in by_version.items()}
    for name, (_, mode) in LOOPS.items():
        if mode != "same":
            continue
        versions = []
        for p, v in acked[name]:
            if v not in version_of:
                lost.append(f"LOST {p} {v} (no version of ha/same holds it)")
            else:
                versions.append(version_of[v])
        assert versions == sorted(versions), f"ha/same: loop {name}'s acknowledged writes are out of order"
    unacked = len(values) - sum(len(acked[n]) for n, (_, mode) in LOOPS.items() if mode == "same")
    log(f"ha/same: {cur} versions, {unacked} of them from writes that failed at the client (unknown outcome)")
    for line in lost[:20]:
        log(line)
    print(f"HA-RESULT acked={total} lost={len(lost)} nexus_failover_s={nexus_failover_s:.1f} "
          f"db_failover_s={db_failover_s:.1f}", flush=True)
    assert not lost, f"{len(lost)} acknowledged writes lost"

with subtest("nexus1 boots again: unseals from the keepers, no second bootstrap, serves the new primary"):
    nexus1.start()
    nexus1.wait_for_unit("spike.target", timeout=300)
    nexus1.succeed("systemctl show -p ConditionResult --value spike-bootstrap.service | grep -qx no")
    assert nexus1.succeed("spike secret get ha/after-failover v").strip() == "ok"
    last = acked["w2"][-1]
    assert nexus1.succeed(f"spike secret get {last[0]} v").strip() == last[1]
