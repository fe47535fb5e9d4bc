#!/bin/sh
# client.sh - the client commands (submit, status, list, cancel) against a
# real `clearbox serve` on loopback with a temporary SQLite database and a
# bearer token: ids on stdout, --wait on a quick and a hostile program (the
# network attempt shows as a security event), --json parsed by Python, every
# request option reaching the record, idempotency, the service's errors as
# readable messages (401, 404, 409, 422), a down server, cancel of a queued, a
# running and a finished evaluation, list paging with --all over several
# pages, Ctrl-C while waiting, usage errors. Needs $CLEARBOX (make test sets
# it) and root (the sandbox). Prints "N passed, N failed" last.
set -u
. "$(dirname "$0")/lib/report.sh"
# check NAME 'CONDITION': the condition is shell code, evaluated here (so it
# sees the variables and functions); a failure shows the last outputs
check() {
    if eval "$2"; then ok "$1"; else
        bad "$1"; echo "  stdout: $(head -c 600 "$tmp/out" 2>/dev/null)"
        echo "  stderr: $(head -c 600 "$tmp/err" 2>/dev/null)"; fi
}

ADV=$(cd "$(dirname "$0")/../adversarial" && pwd)
if [ "$(id -u)" != 0 ]; then echo "SKIP client: needs root (the sandbox)"; finish; fi
tmp=$(mktemp -d /tmp/cb-client.XXXXXX)
pid=""
wwwpid=""
wpid=""
cleanup() {
    [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
    [ -n "$wwwpid" ] && kill -KILL "$wwwpid" 2>/dev/null
    [ -n "$wpid" ] && kill -KILL "$wpid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM
# loopback only, never through a proxy from the environment
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy CLEARBOX_SERVER \
    CLEARBOX_REQUEST_TIMEOUT TRACEPARENT 2>/dev/null
json_ok() { $PY -c 'import json,sys; json.load(sys.stdin)' <"$1" 2>/dev/null; }
# pyv FILE EXPR: the Python expression's value, d being FILE's JSON
pyv() { $PY -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2" 2>&1; }
is_id() { printf '%s' "$1" | grep -Eq '^[0-9A-Z]{26}$'; }

# ---- a service with a token, one worker ---------------------------------------------------
token="tok-$$-secret"
CLEARBOX_AUTH_TOKEN=$token "$CB" serve --listen 127.0.0.1:0 --db "sqlite:$tmp/db" --workers 1 \
    --audit-log "$tmp/audit.log" --node-id "client-$$" --grace-s 2 >"$tmp/log" 2>&1 &
pid=$!
listen=""
i=0
while [ $i -lt 300 ] && [ -z "$listen" ] && kill -0 "$pid" 2>/dev/null; do
    listen=$(sed -n 's/.*"event":"service.started".*"listen":"\([^"]*\)".*/\1/p' "$tmp/log")
    [ -z "$listen" ] && sleep 0.1
    i=$((i + 1))
done
if [ -z "$listen" ]; then bad "service started"; tail -5 "$tmp/log"; finish; fi
export CLEARBOX_SERVER="http://$listen" CLEARBOX_TOKEN="$token"
echo "service at $CLEARBOX_SERVER"

printf 'print(6*7)\n' >"$tmp/quick.py"
printf 'sleep 30\n' >"$tmp/sleep.sh"
printf 'cat\necho "args: $*"\ncat data.txt\n' >"$tmp/opts.sh"
printf 'line from stdin\n' >"$tmp/in.txt"
printf 'the data file\n' >"$tmp/data.txt"

# ---- usage errors: exit 2, nothing on stdout ----------------------------------------------
"$CB" submit >"$tmp/out" 2>"$tmp/err"; rc=$?
check "submit without FILE: exit 2, nothing on stdout" \
    '[ $rc = 2 ] && [ ! -s "$tmp/out" ] && grep -q "which FILE" "$tmp/err"'
"$CB" submit --priority 12 "$tmp/quick.py" >"$tmp/out" 2>"$tmp/err"; rc=$?
check "submit --priority 12: exit 2" '[ $rc = 2 ] && [ ! -s "$tmp/out" ] && grep -q priority "$tmp/err"'
"$CB" submit "$tmp/in.txt" >"$tmp/out" 2>"$tmp/err"; rc=$?
check "submit of a file without a known extension asks for --lang" \
    '[ $rc = 2 ] && grep -q -- --lang "$tmp/err"'
"$CB" status 'no/such id' >"$tmp/out" 2>"$tmp/err"; rc=$?
check "status of a malformed id: exit 2" '[ $rc = 2 ] && [ ! -s "$tmp/out" ]'
"$CB" list --limit 0 >"$tmp/out" 2>"$tmp/err"; rc=$?
check "list --limit 0: exit 2" '[ $rc = 2 ] && [ ! -s "$tmp/out" ]'
"$CB" list --server ftp://127.0.0.1/ >"$tmp/out" 2>"$tmp/err"; rc=$?
check "--server must be http(s): exit 2" '[ $rc = 2 ] && grep -q "http://" "$tmp/err"'
"$CB" list --server http:// >"$tmp/out" 2>"$tmp/err"; rc=$?
check "--server without a host: exit 2" '[ $rc = 2 ] && grep -q "names no host" "$tmp/err"'
"$CB" cancel --help >"$tmp/out" 2>"$tmp/err"; rc=$?
check "cancel --help names --server and CLEARBOX_SERVER" \
    '[ $rc = 0 ] && grep -q -- --server "$tmp/out" && grep -q CLEARBOX_SERVER "$tmp/out"'

# ---- a down server, and a missing token ----------------------------------------------------
freeport=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$CB" list --server "http://127.0.0.1:$freeport" >"$tmp/out" 2>"$tmp/err"; rc=$?
check "down server: exit 1, 'cannot reach ...: connection refused — is \`clearbox serve\` running?'" \
    '[ $rc = 1 ] && [ ! -s "$tmp/out" ] && grep -q "^clearbox list: cannot reach http://127.0.0.1:$freeport: connection refused — is .clearbox serve. running?" "$tmp/err"'
CLEARBOX_TOKEN= "$CB" list >"$tmp/out" 2>"$tmp/err"; rc=$?
check "no token: exit 1, the 401 explained with --token/CLEARBOX_TOKEN" \
    '[ $rc = 1 ] && grep -q "(401 unauthorized)" "$tmp/err" && grep -q CLEARBOX_TOKEN "$tmp/err"'

# another program on the port (here Python's http.server): named as such
mkdir "$tmp/www"
$PY -u -m http.server --bind 127.0.0.1 --directory "$tmp/www" 0 >"$tmp/www.log" 2>&1 &
wwwpid=$!
i=0
wport=""
while [ $i -lt 100 ] && [ -z "$wport" ]; do
    wport=$(sed -n 's/^Serving HTTP on 127.0.0.1 port \([0-9]*\).*/\1/p' "$tmp/www.log")
    [ -z "$wport" ] && sleep 0.1
    i=$((i + 1))
done
"$CB" status 01AAAAAAAAAAAAAAAAAAAAAAAA --server "http://127.0.0.1:$wport" >"$tmp/out" 2>"$tmp/err"; rc=$?
kill "$wwwpid" 2>/dev/null
wait "$wwwpid" 2>/dev/null
wwwpid=""
check "not clearbox on that port: exit 1, 'answered 404 (text/html), not a clearbox error'" \
    '[ $rc = 1 ] && grep -q "^clearbox status: http://127.0.0.1:$wport answered 404 (text/html[^)]*), not a clearbox error: \"<!DOCTYPE HTML>\" — is it the clearbox service?" "$tmp/err"'

# ---- submit: the id on stdout ------------------------------------------------------------
"$CB" submit "$tmp/quick.py" >"$tmp/out" 2>"$tmp/err"; rc=$?
id1=$(cat "$tmp/out")
check "submit: exit 0, stdout is exactly the id" '[ $rc = 0 ] && is_id "$id1"'
printf 'print("from stdin")\n' | "$CB" submit --lang python --json - >"$tmp/out" 2>"$tmp/err"; rc=$?
check "submit - --json: the service's answer (queued, an id)" \
    '[ $rc = 0 ] && [ "$(pyv "$tmp/out" "d[\"status\"] == \"queued\" and len(d[\"id\"]) == 26")" = True ]'

# ---- --wait on a quick program -------------------------------------------------------------
"$CB" submit --wait "$tmp/quick.py" >"$tmp/out" 2>"$tmp/err"; rc=$?
check "submit --wait (stdout not a terminal): exit 0, the record as JSON" '[ $rc = 0 ] && json_ok "$tmp/out"'
check "  ... status completed, stdout 42, exit code 0" \
    '[ "$(pyv "$tmp/out" "(d[\"status\"], d[\"stdout\"] == \"42\\n\", d[\"exit_code\"])")" = "('"'"'completed'"'"', True, 0)" ]'
check "  ... plain progress lines on stderr, ending with the terminal status" \
    'grep -Eq "^[0-9A-Z]{26}: queued" "$tmp/err" && tail -1 "$tmp/err" | grep -Eq ": completed$"'

# ---- --wait on a hostile program: the network attempt is in the result --------------------
"$CB" submit --wait --json "$ADV/tcp_connect.py" >"$tmp/out" 2>"$tmp/err"; rc=$?
cp "$tmp/out" "$tmp/hostile.json"
check "hostile --wait: exit 0, security event network_attempt to 203.0.113.7:443, blocked" \
    '[ $rc = 0 ] && [ "$(pyv "$tmp/out" "[(e[\"reason\"], e[\"details\"][\"address\"], e[\"details\"][\"port\"], e[\"details\"][\"blocked\"]) for e in d[\"security_events\"]] == [(\"network_attempt\", \"203.0.113.7\", 443, True)]")" = True ]'
check "  ... and the program saw its connect fail" '[ "$(pyv "$tmp/out" "d[\"stdout\"].strip()")" = failed ]'
hid=$(pyv "$tmp/hostile.json" 'd["id"]')
if command -v script >/dev/null 2>&1; then
    # on a terminal: the readable summary, as `clearbox run` prints it
    script -qec "'$CB' submit --wait '$ADV/tcp_connect.py'" /dev/null >"$tmp/out" 2>&1
    check "hostile --wait on a terminal: readable summary with the security event and trace id" \
        'grep -q "clearbox: completed, exit code 0" "$tmp/out" && grep -q "security event: network_attempt .*203.0.113.7" "$tmp/out" && grep -Eq "trace_id [0-9a-f]{32}" "$tmp/out" && grep -q "^failed" "$tmp/out"'
    script -qec "'$CB' status '$hid'" /dev/null >"$tmp/out" 2>&1
    check "status on a terminal: the same summary" \
        'grep -q "security event: network_attempt" "$tmp/out" && grep -q "id $hid, python" "$tmp/out"'
else
    echo "SKIP terminal output: no script(1)"
fi

# ---- every request option reaches the record ----------------------------------------------
"$CB" submit --wait --json --lang sh --stdin "$tmp/in.txt" --arg one --arg 'two words' \
    --file "$tmp/data.txt" --priority 5 --metadata team=red --submitter alice --timeout 5 \
    --memory 128 "$tmp/opts.sh" >"$tmp/out" 2>"$tmp/err"; rc=$?
check "options: stdin, args, file, priority, metadata, submitter, timeout, memory" \
    '[ $rc = 0 ] && [ "$(pyv "$tmp/out" "(d[\"stdout\"] == \"line from stdin\\nargs: one two words\\nthe data file\\n\", d[\"priority\"], d[\"submitter\"], d[\"metadata\"][\"team\"], d[\"limits\"][\"memory_max_bytes\"], d[\"limits\"][\"wall_timeout_ms\"], d[\"args\"])")" = "(True, 5, '"'"'alice'"'"', '"'"'red'"'"', 134217728, 5000, ['"'"'one'"'"', '"'"'two words'"'"'])" ]'

# ---- idempotency ---------------------------------------------------------------------------
a=$("$CB" submit --idempotency-key "key-$$" "$tmp/quick.py" 2>/dev/null)
b=$("$CB" submit --idempotency-key "key-$$" "$tmp/quick.py" 2>"$tmp/err")
check "idempotency key: the retry returns the first id and says so" \
    'is_id "$a" && [ "$a" = "$b" ] && grep -q "idempotency key" "$tmp/err"'

# ---- the service's errors as readable messages ----------------------------------------------
"$CB" status 01AAAAAAAAAAAAAAAAAAAAAAAA >"$tmp/out" 2>"$tmp/err"; rc=$?
check "status of an unknown id: exit 1, '(404 not_found): no such evaluation'" \
    '[ $rc = 1 ] && [ ! -s "$tmp/out" ] && grep -q "^clearbox status: server refused the request (404 not_found): no such evaluation" "$tmp/err"'
"$CB" submit --lang cobol "$tmp/quick.py" >"$tmp/out" 2>"$tmp/err"; rc=$?
check "bad language: exit 1, '(422 unknown_language, field language)'" \
    '[ $rc = 1 ] && [ ! -s "$tmp/out" ] && grep -q "^clearbox submit: server refused the request (422 unknown_language, field language): unknown language" "$tmp/err"'
"$CB" submit --memory 999999 "$tmp/quick.py" >"$tmp/out" 2>"$tmp/err"; rc=$?
check "memory over the service's maximum: exit 1, '(422 out_of_range, field memory_mb)'" \
    '[ $rc = 1 ] && grep -q "(422 out_of_range, field memory_mb)" "$tmp/err"'

# ---- cancel: a queued one, a running one, a finished one -----------------------------------
status_of() { "$CB" status --json "$1" 2>/dev/null | $PY -c 'import json,sys; print(json.load(sys.stdin)["status"])' 2>/dev/null; }
wait_status() { # wait_status ID STATUS: poll up to 20 s
    i=0
    while [ $i -lt 200 ]; do
        [ "$(status_of "$1")" = "$2" ] && return 0
        sleep 0.1; i=$((i + 1))
    done
    return 1
}
sid=$("$CB" submit "$tmp/sleep.sh" 2>/dev/null)
check "the sleeper is running on the only worker" 'wait_status "$sid" running'
qid=$("$CB" submit "$tmp/quick.py" 2>/dev/null)
check "a second one waits in the queue" '[ "$(status_of "$qid")" = queued ]'
"$CB" cancel "$qid" >"$tmp/out" 2>"$tmp/err"; rc=$?
check "cancel of a queued evaluation: exit 0, 'ID cancelled'" \
    '[ $rc = 0 ] && [ "$(cat "$tmp/out")" = "$qid cancelled" ]'
"$CB" status --json "$qid" >"$tmp/out" 2>"$tmp/err"
check "  ... it is cancelled and never started" \
    '[ "$(pyv "$tmp/out" "(d[\"status\"], d[\"started_at\"])")" = "('"'"'cancelled'"'"', None)" ]'

# Ctrl-C while waiting stops the wait, not the evaluation
"$CB" submit --wait "$tmp/sleep.sh" >"$tmp/out" 2>"$tmp/err" &
wpid=$!
i=0
while [ $i -lt 100 ] && ! grep -q ": queued" "$tmp/err"; do sleep 0.1; i=$((i + 1)); done
kill -INT "$wpid"
wait "$wpid"; rc=$?
wpid=""
wid=$(sed -n 's/^\([0-9A-Z]\{26\}\): queued.*/\1/p' "$tmp/err" | head -1)
check "Ctrl-C during --wait: exit 1, 'stopped waiting', nothing on stdout" \
    '[ $rc = 1 ] && is_id "$wid" && grep -q "stopped waiting; $wid goes on" "$tmp/err" && [ ! -s "$tmp/out" ]'
check "  ... the evaluation goes on (still queued)" '[ "$(status_of "$wid")" = queued ]'
"$CB" cancel "$wid" >/dev/null 2>&1

"$CB" cancel "$sid" >"$tmp/out" 2>"$tmp/err"; rc=$?
check "cancel of a running evaluation: exit 0, 'cancel requested'" \
    '[ $rc = 0 ] && grep -q "^$sid cancel requested" "$tmp/out"'
check "  ... it ends cancelled" 'wait_status "$sid" cancelled'
"$CB" cancel "$id1" >"$tmp/out" 2>"$tmp/err"; rc=$?
check "cancel of a finished evaluation: exit 1 with the service's 409 message" \
    '[ $rc = 1 ] && [ ! -s "$tmp/out" ] && grep -q "^clearbox cancel: server refused the request (409 already_finished): the evaluation already finished (completed)" "$tmp/err"'
"$CB" cancel 01AAAAAAAAAAAAAAAAAAAAAAAA >"$tmp/out" 2>"$tmp/err"; rc=$?
check "cancel of an unknown id: exit 1, 404" '[ $rc = 1 ] && grep -q "(404 not_found)" "$tmp/err"'

# ---- list: a table, --json, paging with --all ----------------------------------------------
"$CB" list --limit 1000 --json >"$tmp/out" 2>"$tmp/err"; rc=$?
cp "$tmp/out" "$tmp/one.json"
total=$(pyv "$tmp/one.json" 'len(d["items"])')
check "list --json: parses, one page holds all $total, next_cursor null" \
    '[ $rc = 0 ] && [ "$total" -gt 9 ] && [ "$(pyv "$tmp/one.json" "d[\"next_cursor\"]")" = None ]'
"$CB" list --all --limit 3 --json >"$tmp/out" 2>"$tmp/err"; rc=$?
same=$($PY -c '
import json, sys
a = json.load(open(sys.argv[1])); b = json.load(open(sys.argv[2]))
ids = [i["id"] for i in a["items"]]
times = [i["created_at"] for i in a["items"]]
print(ids == [i["id"] for i in b["items"]] and len(set(ids)) == len(ids)
      and times == sorted(times, reverse=True) and a["next_cursor"] is None)' "$tmp/out" "$tmp/one.json" 2>&1)
check "list --all --limit 3 --json: $total items over $(( (total + 2) / 3 )) pages, same ids, newest first, no repeats" \
    '[ $rc = 0 ] && [ "$same" = True ]'
"$CB" list --all --limit 3 >"$tmp/out" 2>"$tmp/err"; rc=$?
rows=$(($(wc -l <"$tmp/out") - 1))
check "list --all --limit 3 (table): a header and $total rows" \
    '[ $rc = 0 ] && head -1 "$tmp/out" | grep -q "^ID  *STATUS" && [ "$rows" = "$total" ]'
check "  ... the cancelled one shows as cancelled, alice in the submitter column" \
    'grep -q "^$qid  cancelled" "$tmp/out" && grep -q " alice " "$tmp/out"'
"$CB" list --status cancelled --json >"$tmp/out" 2>"$tmp/err"; rc=$?
check "list --status cancelled: only the 3 cancelled ones" \
    '[ $rc = 0 ] && [ "$(pyv "$tmp/out" "(len(d[\"items\"]), sorted({i[\"status\"] for i in d[\"items\"]}))")" = "(3, ['"'"'cancelled'"'"'])" ]'
"$CB" list --status bogus >"$tmp/out" 2>"$tmp/err"; rc=$?
check "list --status bogus: exit 1, '(400 invalid_parameter, field status)'" \
    '[ $rc = 1 ] && grep -q "(400 invalid_parameter, field status)" "$tmp/err"'

# ---- the evaluation submitted without --wait ran too ---------------------------------------
"$CB" status "$id1" >"$tmp/out" 2>"$tmp/err"; rc=$?
check "status ID (stdout not a terminal): the record as JSON, completed, stdout 42" \
    '[ $rc = 0 ] && [ "$(pyv "$tmp/out" "(d[\"id\"], d[\"status\"], d[\"stdout\"].strip())")" = "('"'"'$id1'"'"', '"'"'completed'"'"', '"'"'42'"'"')" ]'

# ---- --wait survives a crash and restart of the service (Last-Event-ID) --------------------
printf 'sleep 2; echo survived\n' >"$tmp/slow.sh"
"$CB" submit --wait --json "$tmp/slow.sh" >"$tmp/out" 2>"$tmp/err" &
wpid=$!
i=0
while [ $i -lt 100 ] && ! grep -q ": running" "$tmp/err"; do sleep 0.1; i=$((i + 1)); done
kill -KILL "$pid"
wait "$pid" 2>/dev/null
sleep 1
CLEARBOX_AUTH_TOKEN=$token "$CB" serve --listen "$listen" --db "sqlite:$tmp/db" --workers 1 \
    --audit-log "$tmp/audit.log" --node-id "client-$$" --grace-s 2 >"$tmp/log2" 2>&1 &
pid=$!
i=0
while [ $i -lt 600 ] && kill -0 "$wpid" 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
kill -0 "$wpid" 2>/dev/null && kill -KILL "$wpid"
wait "$wpid"; rc=$?
wpid=""
check "kill -9 and restart of the service during --wait: it reconnects, exit 0, the rerun's record" \
    '[ $rc = 0 ] && grep -q "lost the event stream; reconnecting" "$tmp/err" && [ "$(pyv "$tmp/out" "(d[\"status\"], d[\"stdout\"], d[\"attempts\"])")" = "('"'"'completed'"'"', '"'"'survived\\n'"'"', 2)" ]'

kill -TERM "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
pid=""
finish
