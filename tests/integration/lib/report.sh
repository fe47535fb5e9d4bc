# tests/integration/lib/report.sh - sourced (not run) first by the integration
# scripts: PASS/FAIL counting (ok, bad; finish prints "N passed, N failed" and
# exits 1 if anything failed), CB (the clearbox binary: $CLEARBOX, else this
# checkout's build/clearbox; a missing one fails the script at once) and PY
# (the system interpreter, never a version-manager shim); wait_started (a
# `clearbox serve` started in the background is up).
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "PASS $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; }
finish() {
    echo "$pass passed, $fail failed"
    [ "$fail" = 0 ]
    exit $?
}

CB=${CLEARBOX:-$(cd "$(dirname "$0")/../.." && pwd)/build/clearbox}
PY=/usr/bin/python3
if [ ! -x "$CB" ]; then bad "no clearbox binary at $CB"; finish; fi

# wait_started LOG PID TENTHS: 0 once LOG holds the service.started line; 1
# if PID died first or TENTHS tenths of a second passed.
wait_started() {
    local i=0
    while [ $i -lt "$3" ]; do
        grep -q '"event":"service.started"' "$1" 2>/dev/null && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}
