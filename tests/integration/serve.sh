#!/bin/sh
# serve.sh - `clearbox serve` as a process: settings errors exit 2 before
# anything starts; a started service logs service.started with the bound
# address, becomes ready, runs a submitted evaluation, and on SIGTERM lets a
# running evaluation finish within the grace period, logs service.stopped and
# exits 0. Needs $CLEARBOX (make test sets it) and root (the sandbox).
set -u
. "$(dirname "$0")/lib/report.sh"

tmp=$(mktemp -d)
pid=""
cleanup() {
    [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

# 1. settings errors: exit 2, nothing on stdout
out=$("$CB" serve --listen 0.0.0.0:0 --db "sqlite:$tmp/x.db" 2>"$tmp/err")
rc=$?
if [ $rc = 2 ] && [ -z "$out" ] && grep -q "without auth_token" "$tmp/err"; then
    ok "non-loopback listen without token is refused (exit 2)"
else bad "non-loopback listen without token: rc=$rc $(cat "$tmp/err")"; fi
[ ! -e "$tmp/x.db" ] && ok "refused before opening the database" || bad "database was created"
"$CB" serve --workers many >/dev/null 2>"$tmp/err"; rc=$?
[ $rc = 2 ] && grep -q -- "--workers" "$tmp/err" && ok "bad flag value: exit 2 naming the flag" \
    || bad "bad flag value: rc=$rc"
"$CB" serve --help >"$tmp/help" 2>&1; rc=$?
[ $rc = 0 ] && grep -q "CLEARBOX_MAX_BODY_BYTES" "$tmp/help" && grep -q "default: 127.0.0.1:8080" "$tmp/help" \
    && ok "--help lists settings with env and defaults" || bad "--help rc=$rc"

if [ "$(id -u)" != 0 ]; then echo "SKIP live service: needs root"; finish; fi

# 2. a live service
"$CB" serve --listen 127.0.0.1:0 --db "sqlite:$tmp/db" --workers 1 --grace-s 20 \
    --audit-log "$tmp/audit.log" --node-id "serve-$$" --audit-head-interval-s 1 >"$tmp/log" 2>&1 &
pid=$!
listen=""
i=0
while [ $i -lt 150 ] && [ -z "$listen" ]; do
    listen=$(sed -n 's/.*"event":"service.started".*"listen":"\([^"]*\)".*/\1/p' "$tmp/log")
    sleep 0.1; i=$((i + 1))
done
if [ -z "$listen" ]; then bad "service.started with the listen address"; tail -5 "$tmp/log"; finish; fi
ok "service.started logged with listen=$listen"
base="http://$listen"

$PY - "$base" "$pid" >"$tmp/run.out" 2>&1 <<'PYEOF'
import json, os, sys, time, urllib.request
base, pid = sys.argv[1], sys.argv[2]
def get(p):
    with urllib.request.urlopen(base + p, timeout=30) as r: return r.status, json.load(r)
def post(p, obj):
    req = urllib.request.Request(base + p, data=json.dumps(obj).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as r: return r.status, json.load(r)
for _ in range(100):
    try:
        if get("/readyz")[0] == 200: break
    except Exception: pass
    time.sleep(0.2)
print("ready", get("/readyz")[0])
# a few quick ones; once the queue is empty the worker lets the finished
# sandboxes' network namespaces go (they are held for a batch while it is busy)
st, b = post("/v1/evaluations/batch", {"evaluations": [{"code": "true", "language": "sh"}] * 3})
ids = [it["id"] for it in b["items"]]
for _ in range(200):
    if all(get("/v1/evaluations/" + i)[1]["status"] == "completed" for i in ids): break
    time.sleep(0.05)
def held():
    n = 0
    for fd in os.listdir("/proc/%s/fd" % pid):
        try: n += os.readlink("/proc/%s/fd/%s" % (pid, fd)).startswith("net:[")
        except OSError: pass
    return n
for _ in range(40):
    if held() == 0: break
    time.sleep(0.05)
print("quick", [get("/v1/evaluations/" + i)[1]["status"] for i in ids].count("completed"), "held", held())
st, s = post("/v1/evaluations", {"code": "sleep 2; echo done", "language": "sh"})
print("submitted", st, s["id"])
for _ in range(100):
    if get("/v1/evaluations/" + s["id"])[1]["status"] == "running": break
    time.sleep(0.1)
print("running", get("/v1/evaluations/" + s["id"])[1]["status"])
PYEOF
grep -q "^ready 200" "$tmp/run.out" && ok "readyz 200 with a worker and the sandbox self-check" \
    || bad "readyz: $(cat "$tmp/run.out")"
grep -q "^quick 3 held 0" "$tmp/run.out" && ok "idle: no finished sandbox's network namespace held" \
    || bad "namespaces after the queue drained: $(grep '^quick' "$tmp/run.out")"
id=$(sed -n 's/^submitted 202 //p' "$tmp/run.out")
[ -n "$id" ] && ok "submit 202" || bad "submit: $(cat "$tmp/run.out")"
grep -q "^running running" "$tmp/run.out" && ok "evaluation is running" || bad "not running: $(cat "$tmp/run.out")"

# 3. SIGTERM while it runs: it finishes within the grace period, exit 0
sleep 1.2 # (the program sleeps 2 s) let the 1 s audit.head timer fire once
kill -TERM "$pid"
t0=$(date +%s)
wait "$pid"; rc=$?
pid=""
t1=$(date +%s)
[ $rc = 0 ] && ok "SIGTERM: exit 0 after $((t1 - t0)) s" || bad "SIGTERM: exit status $rc"
grep -q '"event":"service.stopping"' "$tmp/log" && grep -q "\"event\":\"service.stopped\".*\"listen\":\"$listen\"" "$tmp/log" \
    && ok "service.stopping and service.stopped logged with the address" || bad "stop lines missing"
status=$($PY -c "
import sqlite3, sys
c = sqlite3.connect('$tmp/db')
print(c.execute('SELECT status FROM evaluations WHERE id = ?', ('$id',)).fetchone()[0])" 2>&1)
[ "$status" = completed ] && ok "the running evaluation finished (completed) during the grace period" \
    || bad "evaluation after SIGTERM: $status"
# the service ran > 2 s with --audit-head-interval-s 1: the head was logged
grep -q '"event":"audit.head".*"logger":"security".*"trigger":"timer"' "$tmp/log" \
    && ok "audit.head logged periodically on the security logger" || bad "no periodic audit.head line"
finish
