#!/usr/bin/env bash
# service_crash.sh - crash recovery and graceful shutdown of one real
# `clearbox serve` process on SQLite (issue 5, "Queue, workers, durability").
#
#   1. start the service (3 workers, short lease); four concurrent submitter
#      loops (curl) submit 80 small programs, some sleeping 0.5-1 s so several
#      run at once, a few making a blocked syscall (an audit record each);
#   2. kill -9 the service while evaluations run and submitters submit;
#      restart it with the same database and node id;
#   3. SIGTERM it while evaluations run: exit 0 within the grace period, no
#      evaluation left `running` in the database;
#   4. start it a third time and wait; then check over HTTP that every
#      accepted id has exactly one terminal status with the right output, that
#      the status history (SSE) is well formed, that no evaluation ran twice
#      at the same time (see "What is proven" below), and that
#      `clearbox audit verify` accepts the audit log written across all three
#      processes.
#
# What is proven about "never ran twice concurrently" (the analysis below):
#   every attempt is one `evaluation.claimed` line (eval_id, worker_id,
#   attempt, ts) in the log of the process that ran it. The line is written
#   after the claim committed and before sandbox_run starts; the run's end
#   line (evaluation.finished / .abandoned / .requeued, same eval_id and
#   attempt, same process) is written after sandbox_run returned, i.e. after
#   the sandbox's processes were killed and its cgroup emptied. So the
#   interval [claimed.ts, end.ts] contains the attempt's whole sandbox
#   lifetime. Attempts that were in flight at the kill -9 have no end line:
#   their interval ends at T_dead, the moment this script saw no process left
#   in any cgroup named after the evaluation (the sandbox names its cgroups
#   by run id, "<eval_id>-<attempt>"). The test fails when two intervals of
#   one evaluation overlap, and when the number of claimed lines of an
#   evaluation differs from the record's `attempts` (so no claim escaped the
#   logs), but for one case: the kill -9 can land between a claim's commit and
#   its line in process 1 (at most one per worker; that attempt's sandbox died
#   with process 1, and the evaluation's later attempts, all in later
#   processes, have their lines). What is NOT proven: exclusion inside one sandbox_run call (the
#   store's lease is the only guard there), and anything about evaluations
#   whose submit was cut by the crash and never answered (they are checked
#   for a terminal status only, via the list).
#
# Needs root (the sandbox). Prints "N passed, N failed" last; exit 1 on failure.
set -u
. "$(dirname "$0")/lib/report.sh"

if [ "$(id -u)" != 0 ]; then echo "SKIP service_crash: needs root (the sandbox)"; finish; fi
if ! command -v curl >/dev/null; then bad "curl not found (apt-get install curl)"; finish; fi

tmp=$(mktemp -d /tmp/cb-crash.XXXXXX)
node="crash-$$"
spid=""     # the service
subpids=""  # the submitter loops
cleanup() {
    for p in $subpids; do kill -KILL "$p" 2>/dev/null; done
    [ -n "$spid" ] && kill -KILL "$spid" 2>/dev/null
    wait 2>/dev/null
    rm -f "/run/clearbox/node-$node.lock"
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# A free loopback port, kept across restarts so the submitters need no news.
port=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"

# start_service N: start process N, wait for service.started (60 s).
start_service() {
    "$CB" serve --listen "127.0.0.1:$port" --db "sqlite:$tmp/db" --workers 3 \
        --node-id "$node" --lease-s 6 --heartbeat-s 2 --max-attempts 5 --grace-s 15 \
        --submit-rate-per-s 0 --retention-s 0 --audit-log "$tmp/audit.log" \
        >"$tmp/log.$1" 2>&1 &
    spid=$!
    wait_started "$tmp/log.$1" "$spid" 600 && return 0
    bad "process $1 did not log service.started: $(tail -3 "$tmp/log.$1")"
    return 1
}

# wait_busy MIN_RUNNING MIN_TERMINAL SECONDS: poll the list until at least
# MIN_RUNNING evaluations run and MIN_TERMINAL have ended.
wait_busy() {
    $PY - "$base" "$1" "$2" "$3" "$tmp" <<'PY'
import glob, json, sys, time, urllib.request
base, want_run, want_done, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
# the 2 s programs (kind 4): one of them running makes sure the kill that
# follows hits a run in flight (short ones may end between this check and it)
def long_ids():
    ids = set()
    for f in glob.glob(sys.argv[5] + "/ids.*"):
        for line in open(f):
            p = line.split()
            if len(p) == 3 and p[2] == "4": ids.add(p[0])
    return ids
end = time.time() + limit
while time.time() < end:
    try:
        with urllib.request.urlopen(base + "/v1/evaluations?limit=1000", timeout=10) as r:
            items = json.load(r)["items"]
        run = sum(1 for i in items if i["status"] == "running")
        done = sum(1 for i in items if i["status"] not in ("queued", "running"))
        longs = long_ids()
        long_run = any(i["status"] == "running" and i["id"] in longs for i in items)
        if run >= want_run and done >= want_done and long_run:
            print("running=%d terminal=%d" % (run, done)); sys.exit(0)
    except Exception:
        pass
    time.sleep(0.05)
print("timed out"); sys.exit(1)
PY
}

# submitter S: 20 evaluations, each retried (same Idempotency-Key) until the
# service answers 202 (or 200 for a replay of a submit the crash cut off).
# Writes "id tag kind" lines to $tmp/ids.S.
submitter() {
    local s=$1 k kind tag body code id deadline
    deadline=$(($(date +%s) + 150))
    for k in $(seq 1 20); do
        tag="s$s-k$k"
        kind=$((k % 5))
        case $kind in
        0) body="{\"language\":\"sh\",\"code\":\"sleep 0.$((5 + k % 5)); echo $tag\"}" ;;
        1) body="{\"language\":\"python\",\"code\":\"print('$tag')\"}" ;;
        2) body="{\"language\":\"sh\",\"code\":\"echo $tag\"}" ;;
        3) body="{\"language\":\"python\",\"code\":\"import ctypes\\nlibc = ctypes.CDLL(None, use_errno=True)\\nr = libc.mount(b'none', b'/tmp', b'tmpfs', 0, None)\\nprint('$tag' if r != 0 else 'MOUNTED')\"}" ;;
        4) body="{\"language\":\"python\",\"code\":\"import time\\ntime.sleep(2)\\nprint('$tag')\"}" ;;
        esac
        while :; do
            code=$(curl -s -o "$tmp/resp.$s" -w '%{http_code}' --max-time 10 \
                -H 'Content-Type: application/json' -H "Idempotency-Key: crash-$tag" \
                -d "$body" "$base/v1/evaluations")
            if [ "$code" = 202 ] || [ "$code" = 200 ]; then
                id=$(sed -n 's/.*"id":"\([0-9A-Z]*\)".*/\1/p' "$tmp/resp.$s")
                echo "$id $tag $kind" >>"$tmp/ids.$s"
                break
            fi
            [ "$(date +%s)" -ge "$deadline" ] && { echo "GAVE UP $tag $code" >>"$tmp/ids.$s"; return 1; }
            sleep 0.2
        done
        sleep 0.15
    done
}

# no_sandbox_left LOG: the ids claimed in LOG without an end line; wait until
# no process sits in a cgroup named after one of them; print T_dead (ns).
no_sandbox_left() {
    $PY - "$1" <<'PY'
import glob, json, sys, time
claimed, ended = {}, set()
for line in open(sys.argv[1], errors="replace"):
    try: e = json.loads(line)
    except ValueError: continue
    ev = e.get("event")
    if ev == "evaluation.claimed": claimed[(e["eval_id"], e["attempt"])] = e
    elif ev in ("evaluation.finished", "evaluation.abandoned", "evaluation.requeued") and "engine" in e:
        ended.add((e["eval_id"], e.get("attempt")))
orphans = sorted(k[0] for k in claimed if k not in ended)
end = time.time() + 20
while True:
    left = []
    for f in glob.glob("/proc/[0-9]*/cgroup"):
        try: cg = open(f).read()
        except OSError: continue
        if any(o in cg for o in orphans): left.append(f.split("/")[2])
    if not left: break
    if time.time() > end:
        print("LEFT %s" % " ".join(left)); sys.exit(1)
    time.sleep(0.02)
print(time.time_ns(), len(orphans), ",".join(orphans))
PY
}

# left_behind IDS, no_leftovers KILL_TIME_S IDS (shared with the other crash test)
. "$(dirname "$0")/lib/leftovers.sh"

# ---- 1. start, submit concurrently ------------------------------------------
start_service 1 || finish
for s in 1 2 3 4; do
    submitter $s &
    subpids="$subpids $!"
done

# ---- 2. kill -9 in the middle of a busy run ---------------------------------
if busy=$(wait_busy 2 8 60); then ok "busy before the crash: $busy"; else bad "never busy before the crash: $busy"; fi
killed_pid=$spid
{ kill -KILL "$spid"; wait "$spid"; } 2>/dev/null
spid=""
t_kill_s=$(date +%s)
[ -n "$(ls -d /sys/fs/cgroup/cpuacct/clearbox/pool-"$killed_pid"-* 2>/dev/null)" ] || [ ! -d /sys/fs/cgroup/cpuacct ] &&
    ok "the killed service left its cgroup pool (v1) for gc" ||
    bad "no cgroup pool slot of the killed service (pool-$killed_pid-*) on this v1 host"
if dead=$(no_sandbox_left "$tmp/log.1"); then
    set -- $dead
    t_dead=$1 orphans=$2 orphan_ids=${3:-}
    [ "$orphans" -ge 1 ] && ok "kill -9 hit $orphans running evaluation(s); their sandboxes died with the service" \
        || bad "kill -9 hit no running evaluation (nothing to recover)"
else
    t_dead=0 orphan_ids=""
    bad "sandbox processes outlived the killed service: $dead"
fi
echo "$t_dead" >"$tmp/t_dead"

start_service 2 || finish
grep -q '"event":"queue.requeued".*"reason":"node_restart"' "$tmp/log.2" &&
    ok "the restarted node requeued its own running evaluations at once (queue.requeued node_restart)" ||
    bad "no queue.requeued node_restart in the restarted node's log"

# ---- 3. SIGTERM during a busy run -------------------------------------------
if busy=$(wait_busy 2 25 60); then ok "busy before SIGTERM: $busy"; else bad "never busy before SIGTERM: $busy"; fi
# one program that needs the grace period: SIGTERM comes while it sleeps 3 s
graced_id=$(curl -s --max-time 10 -H 'Content-Type: application/json' -d \
    '{"language":"sh","code":"sleep 3; echo graced","priority":9}' "$base/v1/evaluations" |
    sed -n 's/.*"id":"\([0-9A-Z]*\)".*/\1/p')
i=0
while [ $i -lt 300 ] && ! curl -s --max-time 10 "$base/v1/evaluations/$graced_id" | grep -q '"status":"running"'; do
    sleep 0.1
    i=$((i + 1))
done
[ $i -lt 300 ] && [ -n "$graced_id" ] || bad "the 3 s program never ran before SIGTERM"
t0=$(date +%s%N)
kill -TERM "$spid"
wait "$spid"
rc=$?
spid=""
ms=$((($(date +%s%N) - t0) / 1000000))
[ $rc = 0 ] && [ $ms -ge 1000 ] && [ $ms -lt 20000 ] &&
    ok "SIGTERM: exit 0 after $ms ms, once the running 3 s program ended (grace 15 s)" ||
    bad "SIGTERM: exit $rc after $ms ms (want 0, after the 3 s program, before 20 s)"
grep -q '"event":"service.stopped"' "$tmp/log.2" && ok "service.stopped logged" || bad "no service.stopped"
# the evaluations running when SIGTERM came finished during the grace period
# (completed, not killed and requeued: their programs take at most 1 s)
graced=$($PY - "$tmp/log.2" <<'PY'
import json, sys
running, stopping, ends = {}, False, []
for line in open(sys.argv[1], errors="replace"):
    try: e = json.loads(line)
    except ValueError: continue
    ev = e.get("event")
    if ev == "service.stopping": stopping = True
    elif ev == "evaluation.claimed" and not stopping: running[(e["eval_id"], e["attempt"])] = 1
    elif ev in ("evaluation.finished", "evaluation.abandoned", "evaluation.requeued") and "engine" in e:
        k = (e["eval_id"], e.get("attempt"))
        if k in running:
            del running[k]
            if stopping: ends.append((ev, e.get("status")))
good = [x for x in ends if x == ("evaluation.finished", "completed")]
print("%d %d %d" % (len(ends), len(good), len(running)))
PY
)
set -- $graced
[ "${1:-0}" -ge 1 ] && [ "$1" = "$2" ] && [ "$3" = 0 ] &&
    ok "$1 evaluation(s) running at SIGTERM completed within the grace period" ||
    bad "running at SIGTERM: ended=${1:-?} completed=${2:-?} never ended=${3:-?}"
left=$($PY -c "
import sqlite3, sys
c = sqlite3.connect('file:$tmp/db?mode=ro', uri=True)
print(c.execute(\"SELECT count(*) FROM evaluations WHERE status = 'running'\").fetchone()[0])" 2>&1)
[ "$left" = 0 ] && ok "after SIGTERM no evaluation is left running" || bad "after SIGTERM: running=$left"

# ---- 4. restart, let everything finish, check ----------------------------------
start_service 3 || finish
subfail=0
for p in $subpids; do wait "$p" || subfail=1; done
subpids=""
cat "$tmp"/ids.* >"$tmp/ids"
[ $subfail = 0 ] && [ "$(grep -c '^[0-9A-Z]\{26\} ' "$tmp/ids")" = 80 ] &&
    ok "80 submissions accepted across the crash and the shutdown" ||
    bad "submitters: $(grep -c '^[0-9A-Z]\{26\} ' "$tmp/ids") accepted; $(grep GAVE "$tmp/ids" | head -3)"

$PY - "$base" "$tmp" "$(cat "$tmp/t_dead")" >"$tmp/check.out" 2>&1 <<'PY'
import json, sys, time, urllib.request
base, tmp, t_dead = sys.argv[1], sys.argv[2], int(sys.argv[3])
TERMINAL = {"completed", "timeout", "cpu_time_limit", "memory_limit", "pids_limit",
            "output_limit", "killed", "error", "cancelled"}
def get(p):
    with urllib.request.urlopen(base + p, timeout=30) as r:
        return json.load(r)
def say(ok, msg): print(("PASS " if ok else "FAIL ") + msg)

ids, acc = {}, {}
for line in open(tmp + "/ids"):
    f = line.split()
    if len(f) == 3 and len(f[0]) == 26:
        ids.setdefault(f[1], set()).add(f[0])
        acc[f[0]] = (f[1], int(f[2]))
say(all(len(v) == 1 for v in ids.values()),
    "each submission (Idempotency-Key) maps to one id: %d tags, %d ids" % (len(ids), len(acc)))

# wait until every accepted evaluation is terminal (120 s)
end = time.time() + 120
recs = {}
while time.time() < end:
    recs = {i: get("/v1/evaluations/" + i) for i in acc}
    if all(r["status"] in TERMINAL for r in recs.values()): break
    time.sleep(0.3)
stuck = [i for i, r in recs.items() if r["status"] not in TERMINAL]
say(not stuck, "every accepted evaluation reached a terminal status (%d stuck: %s)" % (len(stuck), stuck[:3]))
wrong = []
for i, (tag, kind) in acc.items():
    r = recs[i]
    if r["status"] != "completed" or r.get("stdout") != tag + "\n":
        wrong.append("%s %s %s %r %s" % (i, tag, r["status"], r.get("stdout"), r.get("error")))
    if kind == 3 and not any(e.get("reason") == "blocked_syscall" for e in r.get("security_events") or []):
        wrong.append("%s %s: no blocked_syscall event" % (i, tag))
say(not wrong, "every accepted evaluation completed with its own output (%d wrong: %s)" % (len(wrong), wrong[:3]))
retried = sorted(i for i, r in recs.items() if r["attempts"] > 1)
say(len(retried) >= 1, "%d evaluation(s) ran more than once (requeued by the crash or SIGTERM)" % len(retried))

# nothing else is stuck either (a submit cut by the crash may have committed unanswered)
items = get("/v1/evaluations?limit=1000")["items"]
nonterm = [x["id"] for x in items if x["status"] not in TERMINAL]
say(not nonterm and len(items) >= len(acc),
    "the list holds %d evaluations, none queued or running (%s)" % (len(items), nonterm[:3]))

# the status history of each: queued (running queued)* running TERMINAL, end
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
say(not badh, "status histories: one terminal status, never running twice in a row, "
    "one running per attempt (%d bad: %s)" % (len(badh), badh[:2]))

# attempts from the logs of the three processes (see the header)
def ts_ns(s):
    import calendar
    d, frac = s.rstrip("Z").split(".")
    return calendar.timegm(time.strptime(d, "%Y-%m-%dT%H:%M:%S")) * 10**9 + int(frac.ljust(9, "0")[:9])
spans = {}
for n in (1, 2, 3):
    open_ = {}
    for line in open("%s/log.%d" % (tmp, n), errors="replace"):
        try: e = json.loads(line)
        except ValueError: continue
        ev = e.get("event")
        if ev == "evaluation.claimed":
            open_[(e["eval_id"], e["attempt"])] = (e["worker_id"], ts_ns(e["ts"]))
        elif ev in ("evaluation.finished", "evaluation.abandoned", "evaluation.requeued") and "engine" in e:
            k = (e["eval_id"], e.get("attempt"))
            if k in open_:
                w, t0 = open_.pop(k)
                spans.setdefault(k[0], []).append((t0, ts_ns(e["ts"]), n, w, k[1]))
    for (i, a), (w, t0) in open_.items():
        # only process 1 was killed; 2 and 3 end every attempt they start
        end_ = t_dead if n == 1 else None
        spans.setdefault(i, []).append((t0, end_, n, w, a))
unended = [(i, s) for i, v in spans.items() for s in v if s[1] is None]
say(not unended, "every attempt of the live processes has an end line (%s)" % unended[:2])
overlap, miscount, lost_claim = [], [], []
for i in acc:
    v = sorted(s for s in spans.get(i, []) if s[1] is not None)
    for a, b in zip(v, v[1:]):
        if b[0] <= a[1]: overlap.append((i, a, b))
    seen = {s[4] for s in spans.get(i, [])}
    missing = set(range(1, recs[i]["attempts"] + 1)) - seen
    # kill -9 can land between process 1's claim commit and its
    # evaluation.claimed line (a finish that claims the next evaluation logs
    # the finish first): that attempt leaves no line, but only in process 1,
    # at most one per evaluation, and a later attempt, in a later process
    # (after the restart requeued it), has its line. Its sandbox died with
    # process 1, before any later process started, so it overlaps nothing.
    if len(missing) == 1 and min(missing) < max(seen or {0}) and \
            not any(s[2] == 1 for s in spans.get(i, [])):
        lost_claim.append(i)
    elif missing or len(spans.get(i, [])) != recs[i]["attempts"]:
        miscount.append("%s: %d claimed lines, attempts=%d" % (i, len(spans.get(i, [])), recs[i]["attempts"]))
say(not miscount and len(lost_claim) <= 3,  # process 1 runs 3 workers
    "claimed lines in the logs == the records' attempts, but for %d claim line(s) the kill "
    "cut off in process 1 (%s)" % (len(lost_claim), miscount[:2]))
say(not overlap, "no evaluation ran twice at the same time: %d attempts over %d evaluations, "
    "intervals disjoint (%s)" % (sum(len(v) for v in spans.values()), len(spans), overlap[:1]))
print("DONE")
PY
cat "$tmp/check.out"
pass=$((pass + $(grep -c '^PASS ' "$tmp/check.out")))
fail=$((fail + $(grep -c '^FAIL ' "$tmp/check.out")))
grep -q '^DONE$' "$tmp/check.out" || bad "the HTTP/log checks stopped early (see above)"

if "$CB" audit verify "$tmp/audit.log" >"$tmp/verify.out" 2>&1; then
    ok "audit verify across the crash and the restarts: $(head -c 200 "$tmp/verify.out" | tr '\n' ' ')"
else
    bad "audit verify: $(head -c 400 "$tmp/verify.out")"
fi
r=$(curl -s --max-time 10 "$base/v1/evaluations/$graced_id")
echo "$r" | grep -q '"status":"completed"' && echo "$r" | grep -q '"stdout":"graced\\n"' &&
    echo "$r" | grep -q '"attempts":1,' && ok "the program running at SIGTERM completed in its first attempt" ||
    bad "the program running at SIGTERM: $(echo "$r" | head -c 300)"
# shellcheck disable=SC2046 # one argument per id
no_leftovers "$t_kill_s" $(echo "$orphan_ids" | tr ',' ' ') "pool-$killed_pid-"
n=$(grep -c '"reason":"blocked_syscall"' "$tmp/audit.log")
[ "$n" -ge 16 ] && ok "audit log holds $n blocked_syscall records (16 programs tried mount)" ||
    bad "audit log holds $n blocked_syscall records, want >= 16"
finish
