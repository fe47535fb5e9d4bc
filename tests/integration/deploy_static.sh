#!/usr/bin/env bash
# tests/integration/deploy_static.sh - the files in deploy/ are valid without a
# Docker engine (issue 6, "The standard stack"):
#   - docker-compose.yml passes Debian's `docker-compose config -q` (Compose v1
#     reads and validates the file without contacting an engine), its bind
#     mounts exist, worker nodes carry the sandbox privileges, and the
#     Dockerfile copies only paths that exist;
#   - prometheus.yml passes `promtool check config`, alerts.yml `promtool check
#     rules`, alerts_test.yml `promtool test rules`, and every alert has a test
#     where it fires and one where it stays quiet; the scrape targets are the
#     compose file's clearbox nodes;
#   - the Grafana provisioning files parse; every dashboard is JSON with unique
#     uid and panel ids, every panel uses the provisioned Prometheus data
#     source, and every panel's PromQL parses in a real Prometheus (Debian's
#     package, started here on 127.0.0.1 with a temp TSDB, stopped at the end)
#     and names only metrics clearbox registers (src/telemetry/*.c).
# Prints "N passed, N failed"; exits non-zero on any failure.
set -u
here=$(cd "$(dirname "$0")/../.." && pwd)
deploy=$here/deploy
py=/usr/bin/python3
pass=0 fail=0
ok() { echo "PASS $1"; pass=$((pass + 1)); }
ko() { echo "FAIL $1: $2"; fail=$((fail + 1)); }
finish() { echo "$pass passed, $fail failed"; [ "$fail" -eq 0 ]; exit $?; }

t=$(mktemp -d /tmp/cb-deploy-static.XXXXXX)
prom_pid=""
cleanup() {
    if [ -n "$prom_pid" ]; then
        kill "$prom_pid" 2>/dev/null
        wait "$prom_pid" 2>/dev/null
    fi
    rm -rf "$t"
}
trap cleanup EXIT

if ! "$py" -c 'import yaml' 2>/dev/null; then
    ko "python3-yaml" "not installed (Debian package python3-yaml; docker-compose depends on it)"
    finish
fi

# ---- docker-compose.yml --------------------------------------------------
if ! command -v docker-compose >/dev/null; then
    ko "docker-compose config" "docker-compose not installed (Debian package docker-compose)"
else
    # No engine is contacted: config only parses, interpolates and validates.
    if (cd "$here" && env -u DOCKER_HOST docker-compose -f deploy/docker-compose.yml config -q) \
        >"$t/compose.err" 2>&1; then
        ok "docker-compose config -q"
    else
        ko "docker-compose config -q" "$(head -c 600 "$t/compose.err")"
    fi
    (cd "$here" && docker-compose -f deploy/docker-compose.yml config) >"$t/compose.yml" 2>/dev/null
fi

# Checks on the resolved compose file (absolute bind paths) and the Dockerfile.
"$py" - "$here" "$t/compose.yml" <<'EOF' >"$t/compose-checks" 2>&1
import os, re, sys, yaml
root, resolved = sys.argv[1], sys.argv[2]
src = yaml.safe_load(open(os.path.join(root, "deploy/docker-compose.yml")))
try:
    res = yaml.safe_load(open(resolved)) or {}
except OSError:
    res = {}
svcs = res.get("services") or src["services"]
def say(ok, name, why=""):
    print(("PASS " if ok else "FAIL ") + name + ("" if ok else ": " + why))

needed = {"postgres", "prometheus", "grafana", "jaeger"}
say(needed <= set(svcs), "compose has postgres, prometheus, grafana, jaeger",
    "missing " + ", ".join(sorted(needed - set(svcs))))
nodes = {n: s for n, s in svcs.items() if "serve" in (s.get("command") or [])}
roles = {}
for n, s in nodes.items():
    cmd = s["command"]
    role = cmd[cmd.index("--role") + 1] if "--role" in cmd else "all"
    roles.setdefault(role, []).append(n)
say("api" in roles and len(roles.get("worker", [])) >= 2,
    "compose has an API node and at least two worker nodes", repr(roles))

bad = []
for n in roles.get("worker", []) + roles.get("all", []):
    s = nodes[n]
    caps = set(s.get("cap_add") or [])
    opts = set(s.get("security_opt") or [])
    vols = [str(v) if not isinstance(v, dict) else "%s:%s" % (v.get("source"), v.get("target"))
            for v in s.get("volumes") or []]
    priv = s.get("privileged") is True
    if not priv and not ({"SYS_ADMIN"} <= caps and {"seccomp=unconfined", "apparmor=unconfined",
                                                      "systempaths=unconfined"} <= opts):
        bad.append(n + " lacks SYS_ADMIN/seccomp/apparmor/systempaths")
    if not any("/sys/fs/cgroup:/sys/fs/cgroup" in v for v in vols) and not priv:
        bad.append(n + " lacks a writable /sys/fs/cgroup")
say(not bad, "worker nodes carry the sandbox privileges", "; ".join(bad))

# CLEARBOX_* variables given to nodes are settings of `clearbox serve`
# (src/service/config.c: file key upper-cased with the prefix).
cfg = os.path.join(root, "src/service/config.c")
if os.path.exists(cfg):
    keys = set(re.findall(r'\{"([a-z0-9_]+)",\s*T_', open(cfg).read()))
    unknown = sorted({"%s (%s)" % (k, n) for n, s in nodes.items()
                      for k in (s.get("environment") or {})
                      if k.startswith("CLEARBOX_") and k[9:].lower() not in keys})
    say(bool(keys) and not unknown, "node environment names real serve settings", ", ".join(unknown))

api_bad = [n for n in roles.get("api", [])
           if nodes[n].get("privileged") or "SYS_ADMIN" in (nodes[n].get("cap_add") or [])]
say(not api_bad, "API nodes run without extra privileges", ", ".join(api_bad))

missing = []
for n, s in svcs.items():
    for v in s.get("volumes") or []:
        source = v.get("source") if isinstance(v, dict) else str(v).split(":")[0]
        typ = v.get("type") if isinstance(v, dict) else ("bind" if source.startswith(("/", ".")) else "volume")
        if typ == "bind" and source.startswith(root) and not os.path.exists(source):
            missing.append("%s: %s" % (n, source))
say(bool(res) and not missing, "compose bind mounts from the repository exist",
    "; ".join(missing) or "no resolved compose output")

ports = [p for s in svcs.values() for p in (s.get("ports") or [])]
open_ports = [str(p) for p in ports
              if (p.get("host_ip") if isinstance(p, dict) else str(p).split(":")[0]) != "127.0.0.1"]
say(not open_ports, "published ports bind to 127.0.0.1 only", ", ".join(open_ports))

df = open(os.path.join(root, "deploy/Dockerfile")).read()
froms = re.findall(r"^FROM\s+(\S+)", df, re.M)
say(froms and all(f.startswith("debian:12") for f in froms), "Dockerfile builds on Debian 12", repr(froms))
say(re.search(r"make deps", df) and re.search(r"RUN make\b", df), "Dockerfile runs make deps and make", "")
copies = [c for c in re.findall(r"^COPY\s+(?!--from)(.+)$", df, re.M)]
absent = []
for c in copies:
    for p in c.split()[:-1]:
        if not os.path.exists(os.path.join(root, p)):
            absent.append(p)
say(copies and not absent, "Dockerfile COPY sources exist", ", ".join(absent))
EOF
while IFS= read -r line; do
    case "$line" in
        PASS\ *) ok "${line#PASS }" ;;
        FAIL\ *) rest=${line#FAIL }; ko "${rest%%: *}" "${rest#*: }" ;;
        *) ko "compose checks" "$line" ;;
    esac
done <"$t/compose-checks"

# The image's build stage sees only what the Dockerfile copies: `make` must
# find every source of build/clearbox in that subset (dry run, nothing built).
mkdir -p "$t/ctx"
srcs=$(sed -n 's/^COPY[[:space:]]\{1,\}\([^-].*\)[[:space:]]\{1,\}[^[:space:]]\{1,\}$/\1/p' "$deploy/Dockerfile" \
    | tr ' ' '\n' | grep -v '^deploy/' | sort -u)
for s in $srcs; do cp -r "$here/$s" "$t/ctx/" 2>/dev/null; done
want=$(cd "$here" && ls src/*/*.c | wc -l)
if [ -n "$srcs" ] && env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -n -C "$t/ctx" SAN= build/clearbox >"$t/make.out" 2>&1 \
    && [ "$(grep -c -- ' -c src/.*\.c ' "$t/make.out")" = "$want" ]; then
    ok "make finds every source of build/clearbox in the Dockerfile's COPY set ($(echo $srcs))"
else
    ko "Dockerfile build context" "expected $want compiles of src/*/*.c: $(tail -c 400 "$t/make.out")"
fi

# ---- Prometheus config and rules -----------------------------------------
command -v promtool >/dev/null || { ko "promtool" "not installed (Debian package prometheus)"; finish; }
(cd "$deploy/prometheus" && promtool check config prometheus.yml) >"$t/out" 2>&1 \
    && ok "promtool check config prometheus.yml" || ko "promtool check config" "$(tail -c 600 "$t/out")"
(cd "$deploy/prometheus" && promtool check rules alerts.yml) >"$t/out" 2>&1 \
    && ok "promtool check rules alerts.yml" || ko "promtool check rules" "$(tail -c 600 "$t/out")"
(cd "$deploy/prometheus" && promtool test rules alerts_test.yml) >"$t/out" 2>&1 \
    && ok "promtool test rules alerts_test.yml" || ko "promtool test rules" "$(tail -c 1500 "$t/out")"

"$py" - "$deploy" "$t/compose.yml" <<'EOF' >"$t/rule-checks" 2>&1
import os, sys, yaml
d = sys.argv[1]
rules = yaml.safe_load(open(os.path.join(d, "prometheus/alerts.yml")))
tests = yaml.safe_load(open(os.path.join(d, "prometheus/alerts_test.yml")))
alerts = [r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r]
fires, quiet = set(), set()
for tc in tests["tests"]:
    for a in tc.get("alert_rule_test", []):
        (fires if a.get("exp_alerts") else quiet).add(a["alertname"])
for a in alerts:
    ok = a in fires and a in quiet
    print(("PASS " if ok else "FAIL ") + "alert %s is tested firing and quiet" % a +
          ("" if ok else ": fires-test=%s quiet-test=%s" % (a in fires, a in quiet)))
for g in rules["groups"]:
    for r in g["rules"]:
        if "alert" not in r:
            continue
        an = r.get("annotations", {})
        ok = bool(an.get("summary")) and bool(an.get("description")) and "for" in r \
            and r.get("labels", {}).get("severity") in ("critical", "warning", "info")
        print(("PASS " if ok else "FAIL ") + "alert %s has summary, description, for, severity" % r["alert"] +
              ("" if ok else ": %r" % r))
need = {"network_attempt": "ClearboxNetworkAttempt", "clearbox_sandbox_create_failures_total": None,
        "clearbox_queue_depth": None, "clearbox_queue_wait_seconds": None,
        'status="error"': None, "clearbox_cost_cents_total": None,
        "clearbox_telemetry_dropped_total": None, "up{": None}
exprs = " ".join(r["expr"] for g in rules["groups"] for r in g["rules"] if "alert" in r)
gone = [k for k in need if k not in exprs]
print(("PASS " if not gone else "FAIL ") + "alerts cover the issue's list" + ("" if not gone else ": missing " + ", ".join(gone)))
# scrape targets = the compose file's clearbox nodes
prom = yaml.safe_load(open(os.path.join(d, "prometheus/prometheus.yml")))
job = [j for j in prom["scrape_configs"] if j["job_name"] == "clearbox"]
targets = {t.split(":")[0] for j in job for s in j.get("static_configs", []) for t in s["targets"]}
try:
    svcs = (yaml.safe_load(open(sys.argv[2])) or {}).get("services", {})
except OSError:
    svcs = {}
nodes = {n for n, s in svcs.items() if "serve" in (s.get("command") or [])}
ok = bool(nodes) and targets == nodes
print(("PASS " if ok else "FAIL ") + "job clearbox scrapes every compose node" +
      ("" if ok else ": targets %s, nodes %s" % (sorted(targets), sorted(nodes))))
EOF
while IFS= read -r line; do
    case "$line" in
        PASS\ *) ok "${line#PASS }" ;;
        FAIL\ *) rest=${line#FAIL }; ko "${rest%%: *}" "${rest#*: }" ;;
        *) ko "rule checks" "$line" ;;
    esac
done <"$t/rule-checks"

# ---- Grafana provisioning and dashboards ---------------------------------
# Writes one "dashboard<TAB>panel<TAB>expr" line per query to $t/exprs.
"$py" - "$deploy" "$here/src/telemetry" "$t/exprs" <<'EOF' >"$t/dash-checks" 2>&1
import glob, json, os, re, sys, yaml
d, tel, out = sys.argv[1], sys.argv[2], sys.argv[3]
def say(ok, name, why=""):
    print(("PASS " if ok else "FAIL ") + name + ("" if ok else ": " + why))
uids = set()
for f in sorted(glob.glob(os.path.join(d, "grafana/provisioning/*/*.yml"))):
    try:
        y = yaml.safe_load(open(f))
        good = y.get("apiVersion") == 1 and ("datasources" in y or "providers" in y)
        for ds in y.get("datasources", []):
            uids.add(ds.get("uid"))
        say(good, "provisioning %s parses" % os.path.relpath(f, d), "no apiVersion 1 datasources/providers")
    except Exception as e:
        say(False, "provisioning %s parses" % os.path.relpath(f, d), str(e))
say("prometheus" in uids, "a Prometheus data source with uid prometheus is provisioned", repr(uids))
# metric families clearbox registers
names = set()
for f in glob.glob(os.path.join(tel, "*.c")):
    names |= set(re.findall(r'"((?:clearbox|process)_[a-z0-9_]+)"', open(f).read()))
series = set(names)
for n in names:
    series |= {n + "_bucket", n + "_sum", n + "_count"}
want = {"evaluations.json", "security.json", "cost.json"}
files = sorted(glob.glob(os.path.join(d, "grafana/dashboards/*.json")))
say(want <= {os.path.basename(f) for f in files}, "dashboards evaluations, security, cost exist",
    repr([os.path.basename(f) for f in files]))
seen_uid = {}
lines = []
for f in files:
    base = os.path.basename(f)
    try:
        db = json.load(open(f))
    except Exception as e:
        say(False, "%s is JSON" % base, str(e))
        continue
    say(True, "%s is JSON" % base)
    probs = []
    if not db.get("uid") or not db.get("title"):
        probs.append("no uid/title")
    if db.get("uid") in seen_uid:
        probs.append("uid %s also in %s" % (db.get("uid"), seen_uid[db["uid"]]))
    seen_uid[db.get("uid")] = base
    ids = set()
    panels = [p for p in db.get("panels", []) if p.get("type") != "row"]
    if not panels:
        probs.append("no panels")
    for p in db.get("panels", []):
        if p.get("id") in ids:
            probs.append("duplicate panel id %s" % p.get("id"))
        ids.add(p.get("id"))
        g = p.get("gridPos", {})
        if not all(k in g for k in "hwxy") or g["x"] + g["w"] > 24:
            probs.append("panel %r: bad gridPos %r" % (p.get("title"), g))
    for p in panels:
        title = p.get("title") or "?"
        if (p.get("datasource") or {}).get("uid") not in uids:
            probs.append("panel %r: data source %r not provisioned" % (title, p.get("datasource")))
        if not p.get("targets"):
            probs.append("panel %r: no queries" % title)
        for tg in p.get("targets", []):
            e = tg.get("expr", "")
            if not e.strip():
                probs.append("panel %r: empty expr" % title)
                continue
            if (tg.get("datasource") or {}).get("uid") not in uids:
                probs.append("panel %r: target data source not provisioned" % title)
            used = set(re.findall(r"\b((?:clearbox|process)_[a-z0-9_]+)", e))
            unknown = used - series
            if unknown:
                probs.append("panel %r: unknown metric %s" % (title, ", ".join(sorted(unknown))))
            lines.append("%s\t%s\t%s" % (base, title, " ".join(e.split())))
    say(not probs, "%s: uid, panel ids, layout, data sources, metric names" % base, "; ".join(probs))
with open(out, "w") as o:
    o.write("\n".join(lines) + "\n")
EOF
while IFS= read -r line; do
    case "$line" in
        PASS\ *) ok "${line#PASS }" ;;
        FAIL\ *) rest=${line#FAIL }; ko "${rest%%: *}" "${rest#*: }" ;;
        *) ko "dashboard checks" "$line" ;;
    esac
done <"$t/dash-checks"

# Every panel query parses: ask a real Prometheus (empty TSDB, no targets) to
# evaluate it. Grafana's interval variables become a fixed range first.
port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'global:\n  scrape_interval: 15s\n' >"$t/prom.yml"
prometheus --config.file="$t/prom.yml" --storage.tsdb.path="$t/tsdb" \
    --web.listen-address="127.0.0.1:$port" >"$t/prom.log" 2>&1 &
prom_pid=$!
up=0
for _ in $(seq 1 150); do
    curl -fsS "http://127.0.0.1:$port/-/ready" >/dev/null 2>&1 && { up=1; break; }
    kill -0 "$prom_pid" 2>/dev/null || break
    sleep 0.2
done
if [ $up = 0 ]; then
    ko "prometheus on 127.0.0.1:$port" "not ready after 30 s: $(tail -c 400 "$t/prom.log")"
    finish
fi
n=0 bad=0
while IFS=$'\t' read -r dash title expr; do
    [ -n "$expr" ] || continue
    n=$((n + 1))
    q=$(printf '%s' "$expr" | sed -e 's/\$__rate_interval/5m/g' -e 's/\$__interval/1m/g' -e 's/\$__range/1h/g')
    case "$q" in *'$'*) ko "$dash / $title" "unknown Grafana variable in: $q"; bad=$((bad + 1)); continue ;; esac
    if ! promtool query instant "http://127.0.0.1:$port" "$q" >"$t/q.out" 2>&1; then
        ko "$dash / $title" "does not parse: $q: $(head -c 300 "$t/q.out")"
        bad=$((bad + 1))
    fi
done <"$t/exprs"
[ "$n" -gt 0 ] && [ $bad = 0 ] && ok "all $n panel queries parse in Prometheus $(prometheus --version 2>&1 | head -1 | awk '{print $3}')"
[ "$n" -gt 0 ] || ko "panel queries" "none found"

finish
