#!/usr/bin/env bash
# tests/integration/run_cli.sh - `clearbox run` and `clearbox gc` as a user
# sees them: exit codes 0/1/2, stdout only the record (or nothing on a usage
# error), SIGTERM -> status killed with nothing left behind, --policy and
# flags, --output-dir, gc. Needs root. Prints "N passed, N failed".
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
cb=${CLEARBOX:-$here/../build/clearbox}
py=/usr/bin/python3
pass=0 fail=0
ok() { echo "PASS $1"; pass=$((pass + 1)); }
ko() { echo "FAIL $1: $2"; fail=$((fail + 1)); }
if [ "$(id -u)" != 0 ]; then echo "SKIP run_cli: needs root"; echo "0 passed, 0 failed"; exit 0; fi
t=$(mktemp -d /tmp/cb-cli.XXXXXX)
trap 'rm -rf "$t"' EXIT
field() { "$py" -c 'import json,sys; d=json.load(open(sys.argv[1])); v=d
for k in sys.argv[2].split("."): v=v[k]
print(v)' "$@"; }

printf 'print("hi")\n' > "$t/ok.py"
"$cb" run "$t/ok.py" >"$t/o.json" 2>/dev/null; rc=$?
[ $rc = 0 ] && [ "$(field "$t/o.json" status)" = completed ] && [ "$(field "$t/o.json" stdout)" = hi ] \
    && ok "json when stdout is not a terminal, exit 0" || ko "plain run" "rc=$rc $(head -c 200 "$t/o.json")"

"$cb" run --lang cobol "$t/ok.py" >"$t/u.out" 2>"$t/u.err"; rc=$?
[ $rc = 2 ] && [ ! -s "$t/u.out" ] && grep -q "unknown language" "$t/u.err" \
    && ok "unknown language: usage error, nothing on stdout" || ko "usage error" "rc=$rc"
"$cb" run --timeout abc "$t/ok.py" >"$t/u.out" 2>/dev/null; rc=$?
[ $rc = 2 ] && [ ! -s "$t/u.out" ] && ok "bad --timeout: exit 2" || ko "bad timeout" "rc=$rc"
printf 'x\n' > "$t/prog.rb"
"$cb" run "$t/prog.rb" >"$t/u.out" 2>/dev/null; rc=$?
[ $rc = 2 ] && ok "unknown extension: exit 2" || ko "unknown extension" "rc=$rc"

# error: clearbox cannot run it -> exit 1, JSON still printed, nothing left
printf '{"limits": {"memory_max_bytes": 4096}}\n' > "$t/tiny.json"
printf 'print(1)\n' > "$t/p.py"
"$cb" run --policy "$t/tiny.json" --eval-id cli-err-$$ "$t/p.py" >"$t/e.json" 2>/dev/null; rc=$?
st=$(field "$t/e.json" status 2>/dev/null)
[ $rc = 1 ] && [ "$st" = error ] && [ "$(field "$t/e.json" error.reason)" = invalid_request ] \
    && ok "4 KiB memory policy: error invalid_request, exit 1, JSON printed" || ko "tiny memory" "rc=$rc status=$st"
[ ! -e /run/clearbox/cli-err-$$ ] && ok "nothing left after that" || ko "leftover" "/run/clearbox/cli-err-$$"

# policy file + flag override
printf '{"name":"t","description":"d","limits":{"wall_timeout_ms":300,"pids_max":20}}\n' > "$t/pol.json"
printf 'import time\ntime.sleep(5)\n' > "$t/sleep.py"
"$cb" run --policy "$t/pol.json" --pids 30 "$t/sleep.py" >"$t/p.json" 2>/dev/null
[ "$(field "$t/p.json" status)" = timeout ] && [ "$(field "$t/p.json" policy.limits.pids_max)" = 30 ] \
    && [ "$(field "$t/p.json" policy.limits.wall_timeout_ms)" = 300 ] \
    && ok "policy applied, flag overrides it, recorded in policy" || ko "policy" "$(head -c 300 "$t/p.json")"
printf '{"limits":{"bogus":1}}\n' > "$t/bad.json"
"$cb" run --policy "$t/bad.json" "$t/ok.py" >"$t/u.out" 2>/dev/null; rc=$?
[ $rc = 2 ] && [ ! -s "$t/u.out" ] && ok "unknown policy setting: exit 2" || ko "bad policy" "rc=$rc"

# SIGTERM: killed, record printed, cleanup
printf 'import time\ntime.sleep(30)\n' > "$t/long.py"
"$cb" run --eval-id cli-term-$$ "$t/long.py" >"$t/k.json" 2>/dev/null &
pid=$!
sleep 0.5
kill -TERM $pid
wait $pid; rc=$?
[ $rc = 0 ] && [ "$(field "$t/k.json" status)" = killed ] && ok "SIGTERM: status killed, exit 0" \
    || ko "SIGTERM" "rc=$rc $(head -c 200 "$t/k.json")"
[ ! -e /run/clearbox/cli-term-$$ ] && ! ls -d /sys/fs/cgroup/*/clearbox/cli-term-$$ >/dev/null 2>&1 \
    && ok "SIGTERM: nothing left" || ko "SIGTERM leftovers" "state or cgroup left"

# --output-dir, --file, --arg, --env, --stdin
printf 'data\n' > "$t/in.txt"; printf 'side\n' > "$t/side.txt"
printf 'import os,sys\nopen("res.txt","w").write(sys.stdin.read()+open("side.txt").read()+sys.argv[1]+os.environ["K"])\n' > "$t/io.py"
"$cb" run --stdin "$t/in.txt" --file "$t/side.txt" --arg A1 --env K=V1 --output-dir "$t/out" "$t/io.py" >/dev/null 2>&1
[ "$(cat "$t/out/res.txt" 2>/dev/null)" = "$(printf 'data\nside\nA1V1')" ] && ok "stdin, file, arg, env, output-dir" \
    || ko "io" "$(cat "$t/out/res.txt" 2>/dev/null)"

# terminal summary (script gives a pty)
if command -v script >/dev/null; then
    script -qc "$cb run $t/ok.py" /dev/null >"$t/tty.out" 2>&1
    grep -q "clearbox: completed, exit code 0" "$t/tty.out" && ok "terminal summary" || ko "summary" "$(head -c 200 "$t/tty.out")"
fi

# gc: a stale state directory with a mounted workspace and a cgroup
mkdir -p /run/clearbox/gc-stale-$$/ws /sys/fs/cgroup/pids/clearbox/gc-stale-$$
mount -t tmpfs -o size=1m tmpfs /run/clearbox/gc-stale-$$/ws
touch -d '1 minute ago' /run/clearbox/gc-stale-$$ /sys/fs/cgroup/pids/clearbox/gc-stale-$$
"$cb" gc >"$t/gc.out" 2>&1
grep -q "gc-stale-$$" "$t/gc.out" && [ ! -e /run/clearbox/gc-stale-$$ ] && [ ! -e /sys/fs/cgroup/pids/clearbox/gc-stale-$$ ] \
    && ok "gc removes and reports stale runs" || ko "gc" "$(cat "$t/gc.out")"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
