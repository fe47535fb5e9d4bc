#!/usr/bin/env bash
# webhook_durable.sh - a webhook waiting for its retry survives kill -9 of
# `clearbox serve` (issue 5: durable webhook deliveries).
#
#   1. a webhook receiver on loopback (python3) answers 500;
#   2. the service (SQLite, one worker, signed webhooks) runs an evaluation
#      with a callback_url: attempts 1 and 2 fail; as soon as the record shows
#      both, while the delivery waits for its retry (backoff 2 s), the service
#      is killed with SIGKILL;
#   3. the receiver now answers 200; the service restarts on the same
#      database and logs callback.resumed (1 pending);
#   4. the receiver gets attempt 3 (X-Clearbox-Delivery <id>.3), signed: the
#      X-Clearbox-Signature is the HMAC-SHA256 of the raw body under the
#      secret; the body is the record with the two earlier attempts; nothing
#      is sent after the success;
#   5. the record's callbacks array shows 500, 500 (before the kill) and 200
#      (after the restart), and a graceful stop exits 0.
#
# Needs root (the sandbox runs the evaluation). Prints "N passed, N failed"
# last; exit 1 on failure. About 10 s.
set -u
. "$(dirname "$0")/lib/report.sh"

if [ "$(id -u)" != 0 ]; then echo "SKIP webhook_durable: needs root (the sandbox)"; finish; fi
if ! command -v curl >/dev/null; then bad "curl not found (apt-get install curl)"; finish; fi

tmp=$(mktemp -d /tmp/cb-webhook.XXXXXX)
node="webhook-$$"
secret="durable-webhook-secret-$$"
spid=""  # the service
rxpid="" # the receiver
cleanup() {
    [ -n "$spid" ] && kill -KILL "$spid" 2>/dev/null
    [ -n "$rxpid" ] && kill -KILL "$rxpid" 2>/dev/null
    wait 2>/dev/null
    rm -f "/run/clearbox/node-$node.lock"
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
base="http://127.0.0.1:$port"

# ---- the receiver: answers what $tmp/mode says (a status code), one JSON line
# per request in $tmp/rx.jsonl (headers and the raw body, base64) ------------
echo 500 >"$tmp/mode"
$PY - "$tmp" >"$tmp/rx.log" 2>&1 <<'PY' &
import base64, http.server, json, sys
tmp = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        status = int(open(tmp + "/mode").read().strip())
        rec = {"path": self.path, "status": status,
               "delivery": self.headers.get("X-Clearbox-Delivery"),
               "event": self.headers.get("X-Clearbox-Event"),
               "signature": self.headers.get("X-Clearbox-Signature"),
               "content_type": self.headers.get("Content-Type"),
               "body": base64.b64encode(body).decode()}
        with open(tmp + "/rx.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
open(tmp + "/rx.port.tmp", "w").write(str(s.server_address[1]))
import os; os.rename(tmp + "/rx.port.tmp", tmp + "/rx.port")
s.serve_forever()
PY
rxpid=$!
for _ in $(seq 1 100); do [ -s "$tmp/rx.port" ] && break; sleep 0.05; done
if [ ! -s "$tmp/rx.port" ]; then bad "the receiver did not start: $(cat "$tmp/rx.log")"; finish; fi
hook="http://127.0.0.1:$(cat "$tmp/rx.port")/hook"
rx_count() { [ -f "$tmp/rx.jsonl" ] && wc -l <"$tmp/rx.jsonl" || echo 0; }

# start_service N: start process N, wait for service.started (30 s).
start_service() {
    "$CB" serve --listen "127.0.0.1:$port" --db "sqlite:$tmp/db" --workers 1 \
        --node-id "$node" --callback-secret "$secret" --callback-allow-private \
        --callback-retries 5 --retention-s 0 --submit-rate-per-s 0 --audit-log "$tmp/audit.log" \
        >"$tmp/log.$1" 2>&1 &
    spid=$!
    wait_started "$tmp/log.$1" "$spid" 300 && return 0
    bad "process $1 did not log service.started: $(tail -3 "$tmp/log.$1")"
    return 1
}

# callbacks_of ID: the record's callbacks array (compact JSON), or "".
callbacks_of() {
    curl -s --max-time 5 "$base/v1/evaluations/$1" |
        $PY -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["callbacks"]))' 2>/dev/null
}

# ---- 1-2. two failed attempts, then kill -9 while the retry waits -----------
start_service 1 || finish
code=$(curl -s -o "$tmp/submit.json" -w '%{http_code}' --max-time 10 \
    -H 'Content-Type: application/json' \
    -d "{\"language\":\"sh\",\"code\":\"echo hooked\",\"callback_url\":\"$hook\"}" \
    "$base/v1/evaluations")
id=$(sed -n 's/.*"id":"\([0-9A-Z]*\)".*/\1/p' "$tmp/submit.json")
if [ "$code" = 202 ] && [ -n "$id" ]; then ok "submitted $id with callback_url $hook"; else
    bad "submit answered $code: $(cat "$tmp/submit.json")"
    finish
fi
# the record shows both failed attempts = attempt 2 is settled and the
# delivery waits for attempt 3 (due 2 s +-10% later)
two=""
for _ in $(seq 1 300); do
    cbs=$(callbacks_of "$id")
    n=$(printf '%s' "$cbs" | $PY -c 'import json,sys; print(len(json.load(sys.stdin)))' 2>/dev/null)
    if [ "${n:-0}" -ge 2 ]; then two=$cbs; break; fi
    sleep 0.05
done
{ kill -KILL "$spid"; wait "$spid"; } 2>/dev/null
spid=""
t_kill_ns=$(date +%s%N)
if [ -n "$two" ] && [ "$(rx_count)" -eq 2 ]; then
    ok "killed -9 after attempts 1-2 failed, while attempt 3 waited: $two"
else
    bad "before the kill: record callbacks '$two', $(rx_count) requests received"
fi
if grep -q '"event":"callback.failed".*"attempt":2' "$tmp/log.1"; then
    ok "process 1 logged callback.failed for attempt 2 (retry)"
else bad "no callback.failed for attempt 2 in the log of process 1"; fi

# ---- 3. the receiver recovers, the service restarts on the same database ----
sleep 0.5
if [ "$(rx_count)" -eq 2 ]; then ok "nothing sent while the service was down"; else
    bad "$(rx_count) requests while the service was down"; fi
echo 200 >"$tmp/mode"
start_service 2 || finish
if grep -q '"event":"callback.resumed".*"pending":1' "$tmp/log.2"; then
    ok "process 2 logged callback.resumed with 1 pending delivery"
else bad "no callback.resumed (pending 1) in the log of process 2: $(grep callback "$tmp/log.2" | head -3)"; fi

# ---- 4. attempt 3 arrives, signed, once ---------------------------------------
for _ in $(seq 1 200); do [ "$(rx_count)" -ge 3 ] && break; sleep 0.05; done
sleep 1.5 # room for a duplicate to show up
$PY - "$tmp/rx.jsonl" "$id" "$secret" <<'PY' && ok "attempt 3 arrived once after the restart, signature verified, body = the record with attempts 1-2" || bad "the delivery after the restart (above)"
import base64, hashlib, hmac, json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
eid, secret = sys.argv[2], sys.argv[3].encode()
bad = []
if len(lines) != 3:
    bad.append("%d requests, want 3: %s" % (len(lines), [l["delivery"] for l in lines]))
for i, l in enumerate(lines):
    body = base64.b64decode(l["body"])
    want = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want, l["signature"] or ""):
        bad.append("request %d: signature %s, want %s" % (i + 1, l["signature"], want))
    if l["delivery"] != "%s.%d" % (eid, i + 1):
        bad.append("request %d: X-Clearbox-Delivery %s" % (i + 1, l["delivery"]))
    if l["event"] != "evaluation.finished" or l["path"] != "/hook":
        bad.append("request %d: event %s path %s" % (i + 1, l["event"], l["path"]))
    rec = json.loads(body)
    if rec.get("id") != eid or rec.get("status") != "completed":
        bad.append("request %d: body id %s status %s" % (i + 1, rec.get("id"), rec.get("status")))
    if len(rec.get("callbacks", [])) != i:
        bad.append("request %d: body lists %d earlier attempts" % (i + 1, len(rec.get("callbacks", []))))
if len(lines) >= 3:
    last = json.loads(base64.b64decode(lines[2]["body"]))
    if [c.get("http_status") for c in last.get("callbacks", [])] != [500, 500]:
        bad.append("attempt 3's body callbacks: %s" % last.get("callbacks"))
for b in bad:
    print("   ", b)
sys.exit(1 if bad else 0)
PY

# ---- 5. the record keeps every attempt ---------------------------------------
cbs=$(callbacks_of "$id")
if printf '%s' "$cbs" | $PY -c '
import json, sys
c = json.load(sys.stdin); t_kill = int(sys.argv[1])
from datetime import datetime
def ns(ts):  # RFC 3339 with up to 9 fraction digits, UTC
    main, frac = ts.rstrip("Z").split(".") if "." in ts else (ts.rstrip("Z"), "0")
    return int(datetime.strptime(main, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=__import__("datetime").timezone.utc).timestamp()) * 10**9 + int(frac.ljust(9, "0")[:9])
ok = ([x["attempt"] for x in c] == [1, 2, 3] and [x["http_status"] for x in c] == [500, 500, 200]
      and [x["ok"] for x in c] == [False, False, True]
      and ns(c[1]["ts"]) < t_kill < ns(c[2]["ts"]))
sys.exit(0 if ok else 1)' "$t_kill_ns"; then
    ok "callbacks: attempts 1-2 (500) before the kill, 3 (200) after the restart"
else bad "callbacks of the record: $cbs"; fi
if grep -q '"event":"callback.delivered".*"attempt":3' "$tmp/log.2"; then
    ok "process 2 logged callback.delivered for attempt 3"
else bad "no callback.delivered for attempt 3 in the log of process 2"; fi

kill -TERM "$spid"
rc=0
wait "$spid" || rc=$?
spid=""
if [ "$rc" = 0 ]; then ok "graceful stop exits 0"; else bad "graceful stop exited $rc"; fi
finish
