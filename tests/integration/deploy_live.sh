#!/usr/bin/env bash
# tests/integration/deploy_live.sh - the live check of issue 6's standard
# stack, on loopback only: a real `clearbox serve` (temp SQLite database),
# a real Prometheus (Debian's package) scraping it every second with
# deploy/prometheus/alerts.yml loaded, a few evaluations submitted over HTTP
# (python and sh, one that tries DNS, one that runs into its timeout), then
# through Prometheus's HTTP API:
#   - the clearbox target is up and clearbox_evaluations_total is above zero;
#   - every Grafana panel query in deploy/grafana/dashboards/*.json parses and
#     returns data;
#   - the ClearboxNetworkAttempt alert fires for the DNS attempt.
# Both servers are stopped at the end, also on failure. Needs root (the
# sandbox). Until `clearbox serve` exists it prints a SKIP line.
# Prints "N passed, N failed"; exits non-zero on any failure.
set -u
here=$(cd "$(dirname "$0")/../.." && pwd)
cb=${CLEARBOX:-$here/build/clearbox}
py=/usr/bin/python3
pass=0 fail=0
ok() { echo "PASS $1"; pass=$((pass + 1)); }
ko() { echo "FAIL $1: $2"; fail=$((fail + 1)); }
finish() { echo "$pass passed, $fail failed"; [ "$fail" -eq 0 ]; exit $?; }

if [ "$(id -u)" != 0 ]; then
    echo "SKIP deploy_live: needs root (clearbox serve runs sandboxes)"; echo "0 passed, 0 failed"; exit 0
fi
if ! "$cb" serve --help >/dev/null 2>&1; then
    echo "SKIP: clearbox serve not built yet ($cb serve --help fails)"; echo "0 passed, 0 failed"; exit 0
fi
for tool in prometheus curl; do
    command -v $tool >/dev/null || { ko "$tool" "not installed"; finish; }
done

t=$(mktemp -d /tmp/cb-deploy-live.XXXXXX)
serve_pid="" prom_pid=""
stop() { # pid: TERM, wait up to 30 s, then KILL
    local pid=$1 i
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
}
cleanup() { stop "$prom_pid"; stop "$serve_pid"; rm -rf "$t"; }
trap cleanup EXIT

free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# poll CMD... until it succeeds or SECONDS pass
poll() {
    local secs=$1 end; shift
    end=$(($(date +%s) + secs))
    while :; do
        "$@" && return 0
        [ "$(date +%s)" -ge "$end" ] && return 1
        sleep 0.3
    done
}

# The compose file starts nodes with --role api|worker.
if "$cb" serve --help 2>&1 | grep -q -- '--role'; then
    ok "serve --help lists --role (deploy/docker-compose.yml uses it)"
else
    ko "serve --role" "serve --help does not list --role, which deploy/docker-compose.yml uses"
fi

# ---- clearbox serve on loopback --------------------------------------------
port=$(free_port)
base="http://127.0.0.1:$port"
# A clean environment: no OTEL_* endpoint (nothing may leave loopback), no
# CLEARBOX_* settings from the caller.
env -i PATH="/usr/sbin:/usr/bin:/sbin:/bin" HOME="$t" LANG=C.UTF-8 \
    "$cb" serve --listen "127.0.0.1:$port" --db "sqlite:$t/clearbox.db" --workers 2 \
    --audit-log "$t/audit.log" --node-id "deploy-live-$$" >"$t/serve.log" 2>&1 &
serve_pid=$!
ready() { curl -fsS -m 5 "$base/readyz" >/dev/null 2>&1; }
alive() { kill -0 "$serve_pid" 2>/dev/null; }
if poll 60 ready; then
    ok "clearbox serve ready on 127.0.0.1:$port"
else
    alive && why="not ready after 60 s: $(curl -sS -m 5 "$base/readyz" 2>&1 | head -c 300)" || why="exited"
    ko "clearbox serve" "$why; log: $(tail -c 600 "$t/serve.log")"
    finish
fi

# ---- Prometheus scraping it every second, with the stack's alert rules --------
pport=$(free_port)
prom="http://127.0.0.1:$pport"
cat >"$t/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - $here/deploy/prometheus/alerts.yml
scrape_configs:
  - job_name: clearbox
    static_configs:
      - targets: ['127.0.0.1:$port']
        labels:
          role: all
EOF
prometheus --config.file="$t/prometheus.yml" --storage.tsdb.path="$t/tsdb" \
    --web.listen-address="127.0.0.1:$pport" >"$t/prom.log" 2>&1 &
prom_pid=$!
prom_ready() { curl -fsS -m 5 "$prom/-/ready" >/dev/null 2>&1; }
if poll 60 prom_ready; then
    ok "prometheus ready on 127.0.0.1:$pport"
else
    ko "prometheus" "not ready after 60 s: $(tail -c 400 "$t/prom.log")"
    finish
fi
# q EXPR: the JSON answer of an instant query
q() { curl -sS -m 10 --data-urlencode "query=$1" "$prom/api/v1/query"; }
jget() { "$py" -c "import json,sys; d=json.load(sys.stdin); print($1)" 2>/dev/null; }

# ---- evaluations over HTTP -----------------------------------------------------
submit() { # name json
    local http id
    http=$(curl -sS -m 30 -o "$t/sub.json" -w '%{http_code}' -H 'Content-Type: application/json' \
        --data-binary "$2" "$base/v1/evaluations")
    id=$(jget 'd["id"]' <"$t/sub.json")
    if [ "$http" = 202 ] && [ -n "$id" ]; then
        echo "$id" >>"$t/ids"
    else
        ko "submit $1" "HTTP $http: $(head -c 300 "$t/sub.json")"
    fi
}
: >"$t/ids"
for i in 1 2 3; do
    submit "python $i" '{"code":"print(1)","language":"python","metadata":{"submitter":"alice"}}'
done
submit "sh" '{"code":"echo hi","language":"sh","metadata":{"submitter":"bob"}}'
# The sandbox's DNS stub answers REFUSED and records a network_attempt: no
# packet leaves the sandbox's own network namespace.
submit "dns attempt" '{"code":"import socket\ntry:\n    socket.getaddrinfo(\"exfil.example\", 443)\nexcept OSError:\n    print(\"blocked\")\n","language":"python","metadata":{"submitter":"mallory"}}'
submit "timeout" '{"code":"while True:\n    pass\n","language":"python","timeout_s":1,"metadata":{"submitter":"mallory"}}'
nsub=$(wc -l <"$t/ids")
[ "$nsub" = 6 ] && ok "6 evaluations accepted (202)" || ko "submit" "$nsub of 6 accepted"

all_done() {
    local id st
    while read -r id; do
        st=$(curl -sS -m 10 "$base/v1/evaluations/$id" | jget 'd["status"]')
        case "$st" in queued|running|"") return 1 ;; esac
    done <"$t/ids"
}
if poll 120 all_done; then
    ok "every evaluation reached a terminal status"
else
    ko "evaluations" "not finished after 120 s: $(while read -r id; do curl -sS -m 5 "$base/v1/evaluations/$id" | jget 'd["id"]+" "+d["status"]'; done <"$t/ids" | tr '\n' ' ')"
fi
while read -r id; do curl -sS -m 10 "$base/v1/evaluations/$id" | jget 'd["status"]'; done <"$t/ids" \
    | sort | uniq -c | tr '\n' ' ' | sed 's/^/statuses: /'; echo

# ---- the scrape, end to end ------------------------------------------------------
target_up() {
    curl -sS -m 10 "$prom/api/v1/targets" | jget '[x["health"] for x in d["data"]["activeTargets"] if x["labels"].get("job")=="clearbox"]==["up"] or sys.exit(1)' >/dev/null
}
poll 30 target_up && ok "Prometheus reports the clearbox target up" \
    || ko "target up" "$(curl -sS -m 10 "$prom/api/v1/targets" | head -c 500)"
# At least the evaluations submitted here (a node may count its own sandbox
# self-check too).
evals_seen() {
    q 'sum(clearbox_evaluations_total)' | jget "float(d['data']['result'][0]['value'][1]) >= $nsub or sys.exit(1)" >/dev/null
}
if poll 60 evals_seen; then
    ok "clearbox_evaluations_total reached $nsub in Prometheus"
else
    ko "clearbox_evaluations_total" "$(q 'sum(clearbox_evaluations_total)' | head -c 300)"
fi
q 'clearbox_evaluations_total' | jget '" ".join("%s/%s=%s" % (r["metric"].get("status"), r["metric"].get("language"), r["value"][1]) for r in d["data"]["result"])' \
    | sed 's/^/clearbox_evaluations_total: /'
v=$(q 'sum(clearbox_evaluations_total)' | jget 'd["data"]["result"][0]["value"][1]')
"$py" -c "import sys; sys.exit(0 if float('${v:-0}') > 0 else 1)" 2>/dev/null \
    && ok "clearbox_evaluations_total > 0 ($v)" || ko "clearbox_evaluations_total > 0" "got '$v'"

# ---- every dashboard panel query parses and returns data --------------------------
"$py" - "$here/deploy/grafana/dashboards" >"$t/exprs" <<'EOF'
import glob, json, os, sys
for f in sorted(glob.glob(os.path.join(sys.argv[1], "*.json"))):
    for p in json.load(open(f)).get("panels", []):
        for tg in p.get("targets", []):
            if tg.get("expr"):
                print("%s\t%s\t%s" % (os.path.basename(f), p.get("title"), " ".join(tg["expr"].split())))
EOF
# Grafana's variables: $__range covers the whole test; $__rate_interval is
# wide enough to hold every sample since the evaluations ran.
subst() { printf '%s' "$1" | sed -e 's/\$__rate_interval/5m/g' -e 's/\$__interval/5m/g' -e 's/\$__range/10m/g'; }
has_data() { # expr -> 0 when the query succeeds with at least one sample
    q "$(subst "$1")" >"$t/ans.json"
    jget 'd["status"]=="success" and len(d["data"]["result"])>0 or sys.exit(1)' <"$t/ans.json" >/dev/null
}
# A series created by the last evaluations needs a second scrape before
# rate() sees it: wait (bounded) until every query has data, then report each.
all_data() {
    while IFS=$'\t' read -r _ _ e; do has_data "$e" || return 1; done <"$t/exprs"
}
poll 30 all_data
n=0 nodata=0
while IFS=$'\t' read -r dash title e; do
    n=$((n + 1))
    if ! has_data "$e"; then
        ko "$dash / $title" "no data for $(subst "$e"): $(head -c 300 "$t/ans.json")"
        nodata=$((nodata + 1))
    fi
done <"$t/exprs"
[ $n -gt 0 ] && [ $nodata = 0 ] && ok "all $n panel queries parse and return data"
[ $n -gt 0 ] || ko "panel queries" "none found in deploy/grafana/dashboards"

# ---- an alert from deploy/prometheus/alerts.yml fires for real -------------------
firing() {
    curl -sS -m 10 "$prom/api/v1/alerts" \
        | jget '[a for a in d["data"]["alerts"] if a["labels"]["alertname"]=="ClearboxNetworkAttempt" and a["state"]=="firing"] or sys.exit(1)' >/dev/null
}
poll 30 firing && ok "alert ClearboxNetworkAttempt fires after the DNS attempt" \
    || ko "ClearboxNetworkAttempt" "not firing: $(curl -sS -m 10 "$prom/api/v1/alerts" | head -c 400)"
quiet() {
    curl -sS -m 10 "$prom/api/v1/alerts" \
        | jget '[a["labels"]["alertname"] for a in d["data"]["alerts"] if a["labels"]["alertname"] in ("ClearboxNodeDown","ClearboxSandboxCreateFailures","ClearboxTelemetryDropped")]==[] or sys.exit(1)' >/dev/null
}
quiet && ok "no node-down, create-failure or telemetry-dropped alert on a healthy node" \
    || ko "quiet alerts" "$(curl -sS -m 10 "$prom/api/v1/alerts" | head -c 400)"

# SIGTERM: the service flushes and exits 0 (issue 5).
kill -TERM "$serve_pid"
gone() { ! kill -0 "$serve_pid" 2>/dev/null; }
if poll 60 gone; then
    wait "$serve_pid"; rc=$?
    serve_pid=""
    [ $rc = 0 ] && ok "clearbox serve exits 0 on SIGTERM" \
        || ko "serve exit" "status $rc; log: $(tail -c 600 "$t/serve.log")"
else
    ko "serve exit" "still running 60 s after SIGTERM (cleanup kills it)"
fi

finish
