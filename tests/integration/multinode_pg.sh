#!/usr/bin/env bash
# multinode_pg.sh - several `clearbox serve` nodes sharing one PostgreSQL
# queue (issue 6, "Many nodes on PostgreSQL").
#
# A throwaway PostgreSQL cluster (initdb + pg_ctl as the postgres user, a unix
# socket in a temp dir, no TCP listener; the same approach as
# tests/unit/pg_support.c), `clearbox migrate`, then one `--role api` node and
# two `--role worker` nodes (distinct --node-id and ports, one shared audit
# log). 200 evaluations go in through the API node; one worker node is
# killed with kill -9 while it runs some of them. Then:
#   - every evaluation reaches exactly one terminal status, with its own
#     output; the dead node's evaluations were requeued by the other node
#     when their leases expired (queue.requeued lease_expired) and ran there;
#   - none ran twice at the same time: each attempt is an interval
#     [evaluation.claimed, its end line] in the log of the node that ran it
#     (the claim line comes after the claim committed, the end line after
#     sandbox_run returned and the sandbox's processes were gone); an attempt
#     of the killed node with no end line ends at T_dead, when this script saw
#     no process left in a cgroup named after the evaluation. Intervals of one
#     evaluation must be disjoint, and the claimed lines must number exactly
#     the record's `attempts` (no claim escaped the logs). Exclusion inside
#     one attempt rests on the lease alone and is not re-proven here;
#   - the status history (SSE from the API node) has one terminal status;
#   - clearbox_queue_depth on the API node's /metrics returns to 0;
#   - a cancel sent to the API node reaches an evaluation running on the
#     surviving worker node (a long sleep ends `cancelled` within seconds);
#   - `clearbox audit verify` accepts the audit log all nodes appended to.
# PostgreSQL comes from $CLEARBOX_PG_BINDIR or /usr/lib/postgresql/{17,16,15}/bin;
# without it the test fails (as the unit tests do): .ci/run installs it.
# Needs root (sandbox; the server runs as `postgres`). Prints "N passed, N
# failed" last; exit 1 on failure.
# shellcheck disable=SC2154 # ${name}_url and ${name}_pid are set by start_node (eval)
set -u
. "$(dirname "$0")/lib/report.sh"

if [ "$(id -u)" != 0 ]; then echo "SKIP multinode_pg: needs root (the sandbox)"; finish; fi

pgbin=${CLEARBOX_PG_BINDIR:-}
if [ -z "$pgbin" ]; then
    for v in 17 16 15; do
        [ -x "/usr/lib/postgresql/$v/bin/initdb" ] && { pgbin=/usr/lib/postgresql/$v/bin; break; }
    done
fi
if [ -z "$pgbin" ] || [ ! -x "$pgbin/pg_ctl" ]; then
    bad "PostgreSQL server not found (apt-get install postgresql, or set CLEARBOX_PG_BINDIR)"
    finish
fi
if ! id postgres >/dev/null 2>&1; then bad "no 'postgres' user to run the server as"; finish; fi

tmp=$(mktemp -d /tmp/cb-mnode.XXXXXX)
pgdir="$tmp/pg"
pids="" # clearbox nodes
pg_started=0
as_pg() { setpriv --reuid=postgres --regid=postgres --clear-groups -- "$@"; }
cleanup() {
    for p in $pids; do kill -TERM "$p" 2>/dev/null; done # idle by now: a quick graceful stop
    for p in $pids; do
        i=0
        while kill -0 "$p" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
        kill -KILL "$p" 2>/dev/null
    done
    rm -f /run/clearbox/node-mn-*-"$$".lock
    [ $pg_started = 1 ] && as_pg "$pgbin/pg_ctl" -D "$pgdir/data" -m immediate -w stop >/dev/null 2>&1
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# left_behind IDS, no_leftovers KILL_TIME_S IDS (shared with the other crash test)
. "$(dirname "$0")/lib/leftovers.sh"

# ---- PostgreSQL -------------------------------------------------------------
mkdir -p "$pgdir" && chown postgres: "$pgdir" && chmod 755 "$tmp"
pgport=$((50000 + $$ % 10000)) # names the socket file only: no TCP listener
if ! as_pg env LC_ALL=C "$pgbin/initdb" -D "$pgdir/data" -U postgres -A trust -E UTF8 \
    --locale=C --no-sync >"$tmp/initdb.log" 2>&1; then
    bad "initdb: $(tail -3 "$tmp/initdb.log")"
    finish
fi
pg_started=1
if ! as_pg env LC_ALL=C "$pgbin/pg_ctl" -D "$pgdir/data" -l "$pgdir/postgres.log" -w -t 60 \
    -o "-k $pgdir -p $pgport -c listen_addresses= -c max_connections=80 -c shared_buffers=32MB" \
    start >"$tmp/pgctl.log" 2>&1; then
    bad "postgres did not start: $(tail -3 "$pgdir/postgres.log" 2>/dev/null)"
    finish
fi
if ! as_pg "$pgbin/createdb" -h "$pgdir" -p "$pgport" -U postgres clearbox >"$tmp/createdb.log" 2>&1; then
    bad "createdb: $(cat "$tmp/createdb.log")"
    finish
fi
db="postgresql:///clearbox?host=$pgdir&port=$pgport&user=postgres"
if "$CB" migrate --db "$db" >"$tmp/migrate.out" 2>&1; then
    ok "clearbox migrate on PostgreSQL: $(tr '\n' ' ' <"$tmp/migrate.out" | head -c 120)"
else
    bad "clearbox migrate: $(cat "$tmp/migrate.out")"
    finish
fi

# ---- the nodes ----------------------------------------------------------------
# start_node NAME ROLE [FLAGS...]: start a node, wait for service.started,
# set ${NAME}_pid and ${NAME}_url.
start_node() {
    local name=$1 role=$2
    shift 2
    "$CB" serve --role "$role" --listen 127.0.0.1:0 --db "$db" --node-id "mn-$name-$$" \
        --audit-log "$tmp/audit.log" --lease-s 4 --heartbeat-s 1 --max-attempts 5 --grace-s 5 \
        --submit-rate-per-s 0 --retention-s 0 "$@" >"$tmp/log.$name" 2>&1 &
    local pid=$! listen="" i=0
    pids="$pids $pid"
    while [ $i -lt 600 ] && [ -z "$listen" ]; do
        listen=$(sed -n 's/.*"event":"service.started".*"listen":"\([^"]*\)".*/\1/p' "$tmp/log.$name" 2>/dev/null)
        [ -n "$listen" ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
        i=$((i + 1))
    done
    if [ -z "$listen" ]; then
        bad "node $name did not start: $(tail -3 "$tmp/log.$name")"
        return 1
    fi
    eval "${name}_pid=$pid ${name}_url=http://$listen"
    disown "$pid" # no "Killed" line from bash when the test kills it
}
start_node api api || finish
start_node w1 worker --workers 2 || finish
start_node w2 worker --workers 2 || finish
ok "api node at $api_url, worker nodes at $w1_url and $w2_url"
code=$(curl -s -o /dev/null -w '%{http_code}' -XPOST -H 'Content-Type: application/json' \
    -d '{"code":"print(1)","language":"python"}' "$w1_url/v1/evaluations")
[ "$code" = 404 ] && ok "a worker node serves no API routes (POST /v1/evaluations: 404)" ||
    bad "worker node answered POST /v1/evaluations with $code"

# ---- 200 evaluations, kill -9 of w1 in the middle -------------------------------
# Four submitter threads; every 4th program sleeps 0.3-0.9 s so that the
# worker nodes hold several at once. ids: "id tag" lines.
$PY - "$api_url" "$tmp/ids" >"$tmp/submit.out" 2>&1 <<'PY' &
import json, sys, threading, urllib.request
base, out = sys.argv[1], sys.argv[2]
lines, lock = [], threading.Lock()
def sub(t):
    for k in range(50):
        tag = "t%d-k%d" % (t, k)
        if k % 4 == 0:
            body = {"language": "sh", "code": "sleep 0.%d; echo %s" % (3 + k % 7, tag)}
        elif k % 8 == 3:  # a blocked syscall: one audit record from whichever node runs it
            body = {"language": "python", "code": "import ctypes\nlibc = ctypes.CDLL(None)\n"
                    "print(%r if libc.mount(b'none', b'/tmp', b'tmpfs', 0, None) != 0 else 'MOUNTED')" % tag}
        elif k % 4 == 1:
            body = {"language": "python", "code": "print(%r)" % tag}
        else:
            body = {"language": "sh", "code": "echo %s" % tag}
        req = urllib.request.Request(base + "/v1/evaluations", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=30) as r:
            st, d = r.status, json.load(r)
        with lock:
            lines.append("%s %s %d" % (d["id"], tag, st))
ths = [threading.Thread(target=sub, args=(t,)) for t in range(4)]
for t in ths: t.start()
for t in ths: t.join()
open(out, "w").write("\n".join(lines) + "\n")
print("submitted", len(lines))
PY
subpid=$!

# kill w1 once it holds at least one running evaluation and 30 have ended
$PY - "$tmp/log.w1" "$api_url" <<'PY'
import json, sys, time, urllib.request
log, base = sys.argv[1], sys.argv[2]
end = time.time() + 90
while time.time() < end:
    open_, done = set(), 0
    for line in open(log, errors="replace"):
        try: e = json.loads(line)
        except ValueError: continue
        if e.get("event") == "evaluation.claimed": open_.add((e["eval_id"], e["attempt"]))
        elif e.get("event") == "evaluation.finished" and "engine" in e:
            open_.discard((e["eval_id"], e.get("attempt"))); done += 1
    if len(open_) >= 2 and done >= 15: sys.exit(0)
    time.sleep(0.02)
sys.exit(1)
PY
busy=$?
kill -KILL "$w1_pid"
t_kill=$(date +%s%N)
t_kill_s=$(date +%s)
wait "$w1_pid" 2>/dev/null
[ $busy = 0 ] && ok "worker node w1 killed with kill -9 while running evaluations" ||
    bad "w1 never held 2 running with 15 done before the kill"
# T_dead: no process left in a cgroup named after an evaluation w1 held
dead=$($PY - "$tmp/log.w1" <<'PY'
import glob, json, sys, time
claimed, ended = set(), set()
for line in open(sys.argv[1], errors="replace"):
    try: e = json.loads(line)
    except ValueError: continue
    if e.get("event") == "evaluation.claimed": claimed.add((e["eval_id"], e["attempt"]))
    elif e.get("event") in ("evaluation.finished", "evaluation.abandoned", "evaluation.requeued") and "engine" in e:
        ended.add((e["eval_id"], e.get("attempt")))
orphans = sorted(k[0] for k in claimed - ended)
end = time.time() + 20
while True:
    left = []
    for f in glob.glob("/proc/[0-9]*/cgroup"):
        try: cg = open(f).read()
        except OSError: continue
        if any(o in cg for o in orphans): left.append(f.split("/")[2])
    if not left: break
    if time.time() > end: print("LEFT", *left); sys.exit(1)
    time.sleep(0.02)
print(time.time_ns(), len(orphans), ",".join(orphans))
PY
)
set -- $dead
if [ "${1:-}" != LEFT ] && [ "${2:-0}" -ge 1 ]; then
    t_dead=$1 orphan_ids=${3:-}
    ok "$2 evaluation(s) were running on w1; their sandboxes died with it ($((($1 - t_kill) / 1000000)) ms)"
else
    t_dead=0 orphan_ids=""
    bad "after kill -9 of w1: $dead"
fi
wait "$subpid" && grep -q '^submitted 200$' "$tmp/submit.out" && ok "200 evaluations accepted by the api node" ||
    bad "submit: $(tail -3 "$tmp/submit.out")"

# ---- every evaluation terminal; the analysis --------------------------------------
$PY - "$api_url" "$tmp" "$t_dead" >"$tmp/check.out" 2>&1 <<'PY'
import calendar, json, sys, time, urllib.request
base, tmp, t_dead = sys.argv[1], sys.argv[2], int(sys.argv[3])
TERMINAL = {"completed", "timeout", "cpu_time_limit", "memory_limit", "pids_limit",
            "output_limit", "killed", "error", "cancelled"}
def get(p):
    with urllib.request.urlopen(base + p, timeout=30) as r:
        return json.load(r)
def say(ok, msg): print(("PASS " if ok else "FAIL ") + msg)
acc = {}
for line in open(tmp + "/ids"):
    f = line.split()
    if len(f) == 3: acc[f[0]] = f[1]
t0 = time.time()
end = t0 + 90
while time.time() < end:
    items = get("/v1/evaluations?limit=1000")["items"]
    if len(items) >= len(acc) and all(i["status"] in TERMINAL for i in items): break
    time.sleep(0.3)
say(all(i["status"] in TERMINAL for i in items),
    "all %d evaluations terminal %.1f s after the kill" % (len(items), time.time() - t0))
recs = {i: get("/v1/evaluations/" + i) for i in acc}
wrong = ["%s %s %s %r %s" % (i, t, recs[i]["status"], recs[i].get("stdout"), recs[i].get("error"))
         for i, t in acc.items() if recs[i]["status"] != "completed" or recs[i].get("stdout") != t + "\n"]
say(len(acc) == 200 and not wrong,
    "%d accepted, each completed once with its own output (%d wrong: %s)" % (len(acc), len(wrong), wrong[:3]))
nodes = {}
for r in recs.values(): nodes[r["worker_id"].split("/")[0]] = nodes.get(r["worker_id"].split("/")[0], 0) + 1
say(len(nodes) == 2, "final attempts ran on both worker nodes: %s" % nodes)
badh = []
for i in acc:
    with urllib.request.urlopen(base + "/v1/evaluations/%s/events" % i, timeout=30) as r:
        text = r.read().decode()
    sts = [json.loads(l[6:])["status"] for blk in text.split("\n\n") if "event: status" in blk
           for l in blk.split("\n") if l.startswith("data: ")]
    good = (len(sts) >= 3 and sts[0] == "queued" and sts[-1] in TERMINAL and "event: end" in text
            and all(s in ("queued", "running") for s in sts[:-1])
            and all(sts[k] != sts[k + 1] for k in range(len(sts) - 1))
            and sts[-2] == "running" and sts.count("running") == recs[i]["attempts"])
    if not good: badh.append("%s %s attempts=%d" % (i, sts, recs[i]["attempts"]))
say(not badh, "status histories (SSE via the api node): one terminal status, one running per "
    "attempt (%d bad: %s)" % (len(badh), badh[:2]))

def ts_ns(s):
    d, frac = s.rstrip("Z").split(".")
    return calendar.timegm(time.strptime(d, "%Y-%m-%dT%H:%M:%S")) * 10**9 + int(frac.ljust(9, "0")[:9])
spans, orphan_ids = {}, set()
for n in ("w1", "w2"):
    open_ = {}
    for line in open("%s/log.%s" % (tmp, n), errors="replace"):
        try: e = json.loads(line)
        except ValueError: continue
        ev = e.get("event")
        if ev == "evaluation.claimed":
            open_[(e["eval_id"], e["attempt"])] = (e["worker_id"], ts_ns(e["ts"]))
        elif ev in ("evaluation.finished", "evaluation.abandoned", "evaluation.requeued") and "engine" in e:
            k = (e["eval_id"], e.get("attempt"))
            if k in open_:
                w, t = open_.pop(k)
                spans.setdefault(k[0], []).append((t, ts_ns(e["ts"]), n, w, k[1]))
    for (i, a), (w, t) in open_.items():
        if n == "w1": orphan_ids.add(i)
        spans.setdefault(i, []).append((t, t_dead if n == "w1" else None, n, w, a))
unended = [(i, s) for i, v in spans.items() for s in v if s[1] is None]
say(not unended, "every attempt on the live node has an end line (%s)" % unended[:2])
overlap, miscount, lost_claim = [], [], []
for i in acc:
    v = sorted(s for s in spans.get(i, []) if s[1] is not None)
    overlap += [(i, a, b) for a, b in zip(v, v[1:]) if b[0] <= a[1]]
    seen = {s[4] for s in spans.get(i, [])}
    missing = set(range(1, recs[i]["attempts"] + 1)) - seen
    # kill -9 can land between w1's claim commit and its evaluation.claimed
    # line: that attempt leaves no line, but only on w1, only one per
    # evaluation, and a later attempt (after the lease expired) has its line
    if len(missing) == 1 and min(missing) < max(seen or {0}) and \
            not any(s[2] == "w1" for s in spans.get(i, [])):
        lost_claim.append(i)
    elif missing or len(spans.get(i, [])) != recs[i]["attempts"]:
        miscount.append("%s: %d claimed lines, attempts=%d" % (i, len(spans.get(i, [])), recs[i]["attempts"]))
say(not miscount and len(lost_claim) <= 2,  # w1 runs 2 workers
    "claimed lines in the nodes' logs == the records' attempts, but for %d claim line(s) the "
    "kill cut off on w1 (%s)" % (len(lost_claim), miscount[:2]))
orphan_ids |= set(lost_claim)
say(not overlap, "no evaluation ran twice at the same time: %d attempts over %d evaluations, "
    "intervals disjoint (%s)" % (sum(len(v) for v in spans.values()), len(spans), overlap[:1]))
# an attempt w1 held at the kill either committed its finish just before the
# kill (the log line after the commit was lost: the record names w1, attempts
# 1) or was requeued when its lease expired and finished on w2
moved = [i for i in orphan_ids if recs[i]["attempts"] >= 2 and recs[i]["worker_id"].startswith("mn-w2-")]
kept = [i for i in orphan_ids if recs[i]["attempts"] == 1 and recs[i]["worker_id"].startswith("mn-w1-")]
say(moved and len(moved) + len(kept) == len(orphan_ids),
    "of w1's %d interrupted evaluation(s), %d were requeued and finished on w2, %d had committed "
    "their finish before the kill" % (len(orphan_ids), len(moved), len(kept)))
print("DONE")
PY
cat "$tmp/check.out"
pass=$((pass + $(grep -c '^PASS ' "$tmp/check.out")))
fail=$((fail + $(grep -c '^FAIL ' "$tmp/check.out")))
grep -q '^DONE$' "$tmp/check.out" || bad "the HTTP/log checks stopped early (see above)"
grep -q '"event":"queue.requeued".*"reason":"lease_expired"' "$tmp/log.w2" &&
    ok "w2 requeued w1's expired leases (queue.requeued lease_expired)" ||
    bad "no queue.requeued lease_expired in w2's log"

# ---- queue depth on the api node's /metrics -----------------------------------------
depth=$(curl -s --max-time 10 "$api_url/metrics" | sed -n 's/^clearbox_queue_depth \([0-9.e+]*\)$/\1/p')
[ -n "$depth" ] && awk -v d="$depth" 'BEGIN { exit !(d + 0 == 0) }' && ok "clearbox_queue_depth on the api node's /metrics is 0 once all ended" ||
    bad "clearbox_queue_depth on the api node's /metrics: '$depth', want 0"

# ---- cancel through the api node reaches a run on a worker node -----------------
$PY - "$api_url" >"$tmp/cancel.out" 2>&1 <<'PY'
import json, sys, time, urllib.request
base = sys.argv[1]
def call(p, body=None):
    req = urllib.request.Request(base + p, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"},
                                 method="GET" if body is None else "POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, json.load(r)
st, s = call("/v1/evaluations", {"language": "sh", "code": "sleep 60; echo no", "timeout_s": 120})
i = s["id"]
end = time.time() + 30
while time.time() < end and call("/v1/evaluations/" + i)[1]["status"] != "running":
    time.sleep(0.05)
r = call("/v1/evaluations/" + i)[1]
print("running", r["status"], r["worker_id"])
t0 = time.time()
st, c = call("/v1/evaluations/%s/cancel" % i, {})
print("cancel", st)
while time.time() < t0 + 20 and call("/v1/evaluations/" + i)[1]["status"] == "running":
    time.sleep(0.05)
r = call("/v1/evaluations/" + i)[1]
print("final", r["status"], r["worker_id"], "%.2f" % (time.time() - t0), r.get("stdout"))
PY
if grep -q '^running running mn-w2-' "$tmp/cancel.out" && grep -q '^cancel 20[02]' "$tmp/cancel.out" &&
    grep -q '^final cancelled mn-w2-' "$tmp/cancel.out"; then
    ok "cancel via the api node ended a run on worker node w2: $(sed -n 's/^final cancelled [^ ]* \([0-9.]*\).*/\1/p' "$tmp/cancel.out") s"
else
    bad "cancel across nodes: $(tr '\n' ' ' <"$tmp/cancel.out")"
fi

# shellcheck disable=SC2046 # one argument per id
no_leftovers "$t_kill_s" $(echo "$orphan_ids" | tr ',' ' ')

# ---- the shared audit log ----------------------------------------------------------
# 24 programs tried mount (k % 8 == 3); both worker nodes appended to one file
nrec=$(grep -c '"reason":"blocked_syscall"' "$tmp/audit.log" 2>/dev/null)
if "$CB" audit verify "$tmp/audit.log" >"$tmp/verify.out" 2>&1 && [ "${nrec:-0}" -ge 24 ]; then
    ok "audit verify of the log both worker nodes appended to ($nrec blocked_syscall records): $(head -n1 "$tmp/verify.out" | head -c 80)"
else
    bad "audit verify ($nrec blocked_syscall records, want >= 24): $(head -c 300 "$tmp/verify.out")"
fi
finish
