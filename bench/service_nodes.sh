#!/usr/bin/env bash
# service_nodes.sh - end-to-end evaluations per second of `print(1)` in
# Python with 1 and 2 worker nodes sharing one PostgreSQL queue, beside the
# SQLite single node (the baseline), all in the same run (issue 6). Run by
# `bench/run service` (CLEARBOX set); alone: bash bench/service_nodes.sh.
#
# Setup: a throwaway PostgreSQL cluster (initdb + pg_ctl as `postgres`, unix
# socket in a temp dir, no TCP; as tests/integration/multinode_pg.sh), one
# `--role api` node and worker nodes w1, w2 on it; one `--role all` node on a
# SQLite file. Every node has BENCH_WORKERS (default 2) worker threads, so two
# worker nodes have twice the threads of one: the figure says what a second
# node adds on this machine (on 2 CPUs: contention, not capacity).
#
# A round submits N print(1) evaluations (N = 200; 100 with BENCH_QUICK=1)
# with POST /v1/evaluations/batch (100 per request) to the node under test
# (the api node for PostgreSQL) and measures from just before the first submit
# to the latest finished_at; every record must be completed, exit 0, stdout
# "1\n" (checked after the clock stops). Rounds interleave sqlite, pg 1 node,
# pg 2 nodes (w2 is started for its round and stopped with SIGTERM after);
# 3 rounds (1 quick), the best of each counts: noise only lowers a throughput.
# Figure lines: NAME VALUE evals/s (baseline sqlite_1node VALUE evals/s).
# Needs root (the sandbox) and PostgreSQL ($CLEARBOX_PG_BINDIR or
# /usr/lib/postgresql/{17,16,15}/bin). About 90 s (30 s with BENCH_QUICK=1). Exit 1 when it cannot run.
# shellcheck disable=SC2154 # ${name}_url and ${name}_pid are set by start_node (eval)
set -u
here=$(cd "$(dirname "$0")" && pwd)
CB=${CLEARBOX:-$here/../build/clearbox}
PY=/usr/bin/python3
W=${BENCH_WORKERS:-2}
if [ "${BENCH_QUICK:-0}" = 1 ]; then N=100 ROUNDS=1; else N=200 ROUNDS=3; fi
die() { echo "service_nodes: $*" >&2; exit 1; }
[ -x "$CB" ] || die "no clearbox binary at $CB (make build/clearbox)"
[ "$(id -u)" = 0 ] || die "needs root (the sandbox)"
pgbin=${CLEARBOX_PG_BINDIR:-}
if [ -z "$pgbin" ]; then
    for v in 17 16 15; do
        [ -x "/usr/lib/postgresql/$v/bin/initdb" ] && { pgbin=/usr/lib/postgresql/$v/bin; break; }
    done
fi
[ -n "$pgbin" ] && [ -x "$pgbin/pg_ctl" ] || die "PostgreSQL not found (apt-get install postgresql, or set CLEARBOX_PG_BINDIR)"

tmp=$(mktemp -d /tmp/cb-bnodes.XXXXXX)
pgdir="$tmp/pg"
pids=""
pg_started=0
as_pg() { setpriv --reuid=postgres --regid=postgres --clear-groups -- "$@"; }
cleanup() {
    for p in $pids; do kill -TERM "$p" 2>/dev/null; done
    for p in $pids; do
        i=0
        while kill -0 "$p" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
        kill -KILL "$p" 2>/dev/null
    done
    rm -f /run/clearbox/node-bn-*-"$$".lock
    [ $pg_started = 1 ] && as_pg "$pgbin/pg_ctl" -D "$pgdir/data" -m fast -w stop >/dev/null 2>&1
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

mkdir -p "$pgdir" && chown postgres: "$pgdir" && chmod 755 "$tmp"
pgport=$((50000 + $$ % 10000)) # names the socket file only
as_pg env LC_ALL=C "$pgbin/initdb" -D "$pgdir/data" -U postgres -A trust -E UTF8 --locale=C \
    --no-sync >"$tmp/initdb.log" 2>&1 || die "initdb: $(tail -3 "$tmp/initdb.log")"
pg_started=1
as_pg env LC_ALL=C "$pgbin/pg_ctl" -D "$pgdir/data" -l "$pgdir/postgres.log" -w -t 60 \
    -o "-k $pgdir -p $pgport -c listen_addresses= -c max_connections=80 -c shared_buffers=64MB" \
    start >"$tmp/pgctl.log" 2>&1 || die "postgres did not start: $(tail -3 "$pgdir/postgres.log")"
as_pg "$pgbin/createdb" -h "$pgdir" -p "$pgport" -U postgres clearbox >"$tmp/createdb.log" 2>&1 ||
    die "createdb: $(cat "$tmp/createdb.log")"
pgdb="postgresql:///clearbox?host=$pgdir&port=$pgport&user=postgres"
"$CB" migrate --db "$pgdb" >"$tmp/migrate.log" 2>&1 || die "migrate: $(cat "$tmp/migrate.log")"

# start_node NAME ROLE DB [FLAGS...]: sets ${NAME}_pid, ${NAME}_url; waits
# for service.started and (nodes with workers) a passed sandbox self-check.
start_node() {
    local name=$1 role=$2 db=$3
    shift 3
    "$CB" serve --role "$role" --listen 127.0.0.1:0 --db "$db" --node-id "bn-$name-$$" \
        --audit-log "$tmp/audit.log" --submit-rate-per-s 0 --submitter-queued-max 0 \
        --retention-s 0 "$@" >"$tmp/log.$name" 2>&1 &
    local pid=$! listen="" i=0
    pids="$pids $pid"
    while [ $i -lt 600 ]; do
        listen=$(sed -n 's/.*"event":"service.started".*"listen":"\([^"]*\)".*/\1/p' "$tmp/log.$name" 2>/dev/null)
        if [ -n "$listen" ]; then
            [ "$role" = api ] && break
            grep -q '"event":"sandbox.selfcheck".*"ok":true' "$tmp/log.$name" && break
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
        i=$((i + 1))
    done
    [ -n "$listen" ] || die "node $name did not start: $(tail -3 "$tmp/log.$name")"
    eval "${name}_pid=$pid ${name}_url=http://$listen"
}
stop_node() { # NAME: SIGTERM, wait
    local pid
    eval "pid=\$${1}_pid"
    kill -TERM "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    pids=$(echo "$pids" | tr ' ' '\n' | grep -vx "$pid" | tr '\n' ' ')
}

start_node sq all "sqlite:$tmp/bench.db" --workers "$W"
start_node api api "$pgdb"
start_node w1 worker "$pgdb" --workers "$W"

# round URL N: prints "EVALS_PER_S per-node-counts"; exit 1 on a wrong record.
round() {
    $PY - "$1" "$2" <<'PY'
import calendar, json, sys, time, urllib.request
base, n = sys.argv[1], int(sys.argv[2])
def call(p, body=None):
    req = urllib.request.Request(base + p, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"},
                                 method="GET" if body is None else "POST")
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)
def ts(s):
    d, frac = s.rstrip("Z").split(".")
    return calendar.timegm(time.strptime(d, "%Y-%m-%dT%H:%M:%S")) + int(frac.ljust(9, "0")[:9]) / 1e9
item = {"code": "print(1)", "language": "python"}
t0 = time.time()
ids = []
while len(ids) < n:
    k = min(100, n - len(ids))
    got = call("/v1/evaluations/batch", {"evaluations": [item] * k})["items"]
    ids += [g["id"] for g in got]
want = set(ids)
end = t0 + 300
while True:
    items = [i for i in call("/v1/evaluations?limit=%d" % min(1000, n + 50))["items"] if i["id"] in want]
    if len(items) == n and all(i["status"] not in ("queued", "running") for i in items): break
    if time.time() > end: sys.exit("round timed out")
    time.sleep(0.05)
last = max(ts(i["finished_at"]) for i in items)
per_node = {}
for i in items:
    node = (i["worker_id"] or "?").split("/")[0]
    per_node[node] = per_node.get(node, 0) + 1
for i in ids:
    r = call("/v1/evaluations/" + i)
    if r["status"] != "completed" or r["exit_code"] != 0 or r["stdout"] != "1\n":
        sys.exit("evaluation %s: status %s exit %r stdout %r" % (i, r["status"], r["exit_code"], r["stdout"]))
print("%.3f %s" % (n / (last - t0), ",".join("%s:%d" % kv for kv in sorted(per_node.items()))))
PY
}

best_sq=0 best_p1=0 best_p2=0
notes=""
for r in $(seq 1 "$ROUNDS"); do
    out=$(round "$sq_url" "$N") || die "sqlite round $r: $out"
    notes="$notes# round $r sqlite_1node: $out"$'\n'
    best_sq=$(echo "$out $best_sq" | awk '{ print ($1 > $3) ? $1 : $3 }')
    out=$(round "$api_url" "$N") || die "pg 1 node round $r: $out"
    notes="$notes# round $r pg_1worker_node: $out"$'\n'
    best_p1=$(echo "$out $best_p1" | awk '{ print ($1 > $3) ? $1 : $3 }')
    start_node w2 worker "$pgdb" --workers "$W"
    out=$(round "$api_url" "$N") || die "pg 2 nodes round $r: $out"
    notes="$notes# round $r pg_2worker_nodes: $out"$'\n'
    best_p2=$(echo "$out $best_p2" | awk '{ print ($1 > $3) ? $1 : $3 }')
    stop_node w2
done
printf '%s' "$notes"
echo "# $N print(1) evaluations per round, $ROUNDS round(s), best round counts; $W worker threads" \
    "per node; PostgreSQL $("$pgbin/postgres" --version | awk '{ print $3 }') on a unix socket," \
    "SQLite WAL synchronous=FULL; $(nproc) CPUs"
printf 'sqlite_1node %.2f evals/s (baseline sqlite_1node %.2f evals/s)\n' "$best_sq" "$best_sq"
printf 'pg_1worker_node %.2f evals/s (baseline sqlite_1node %.2f evals/s)\n' "$best_p1" "$best_sq"
printf 'pg_2worker_nodes %.2f evals/s (baseline sqlite_1node %.2f evals/s)\n' "$best_p2" "$best_sq"
awk -v a="$best_p1" -v b="$best_p2" -v s="$best_sq" 'BEGIN {
    printf "# pg 1 node / sqlite: %.2fx; pg 2 nodes / pg 1 node: %.2fx\n", (s > 0 ? a / s : 0), (a > 0 ? b / a : 0) }'
