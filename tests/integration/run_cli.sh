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
[ ! -e /run/clearbox/cli-term-$$ ] && [ -z "$(ls -d /sys/fs/cgroup/*/clearbox/cli-term-$$ /sys/fs/cgroup/clearbox/cli-term-$$ 2>/dev/null)" ] \
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

# gc: a stale state directory with a mounted workspace and a cgroup (in the
# pids hierarchy on v1, in the one hierarchy on v2)
cgd=/sys/fs/cgroup/pids/clearbox
[ "$(stat -f -c %T /sys/fs/cgroup)" = cgroup2fs ] && cgd=/sys/fs/cgroup/clearbox
mkdir -p /run/clearbox/gc-stale-$$/ws "$cgd/gc-stale-$$"
mount -t tmpfs -o size=1m tmpfs /run/clearbox/gc-stale-$$/ws
touch -d '1 minute ago' /run/clearbox/gc-stale-$$ "$cgd/gc-stale-$$"
"$cb" gc >"$t/gc.out" 2>&1
grep -q "gc-stale-$$" "$t/gc.out" && [ ! -e /run/clearbox/gc-stale-$$ ] && [ ! -e "$cgd/gc-stale-$$" ] \
    && ok "gc removes and reports stale runs" || ko "gc" "$(cat "$t/gc.out")"

# gc as another user than root looks where that user's runs keep their state
# (/tmp/clearbox-<uid> without XDG_RUNTIME_DIR), not in /run/clearbox
nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups env -u XDG_RUNTIME_DIR "$@"; }
if command -v setpriv >/dev/null && nobody "$cb" --version >/dev/null 2>&1; then
    nobody mkdir -p -m 0700 /tmp/clearbox-65534
    nobody mkdir /tmp/clearbox-65534/gc-stale-$$
    nobody touch -d '1 minute ago' /tmp/clearbox-65534/gc-stale-$$
    nobody "$cb" gc >"$t/gcn.out" 2>&1; rc=$?
    [ $rc = 0 ] && grep -q "/tmp/clearbox-65534/gc-stale-$$" "$t/gcn.out" && [ ! -e /tmp/clearbox-65534/gc-stale-$$ ] \
        && ok "gc as nobody: uses /tmp/clearbox-65534" || ko "gc as nobody" "rc=$rc $(cat "$t/gcn.out")"
    rmdir /tmp/clearbox-65534/gc-stale-$$ 2>/dev/null
    nobody "$cb" gc --help | grep -q "for this user now: /tmp/clearbox-65534" \
        && ok "gc --help as nobody names its default" || ko "gc --help as nobody" "$(nobody "$cb" gc --help)"
fi

# security logger: one line per audit record (with its seq and hash), and
# the cost counter with the submitter, in --metrics-file
printf 'import socket\ntry:\n    socket.create_connection(("192.0.2.1", 80), timeout=0.2)\nexcept OSError:\n    pass\n' > "$t/conn.py"
"$cb" run --audit-log "$t/audit.log" --metrics-file "$t/m.prom" --submitter team-a "$t/conn.py" \
    >"$t/c.json" 2>"$t/c.err"
"$py" - "$t/c.err" "$t/audit.log" <<'PYEOF' && ok "security logger line per audit record, with seq and hash" || ko "security log" "$(grep -c security "$t/c.err") lines"
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
sec = [l for l in lines if l.get("logger") == "security"]
audit = [json.loads(l) for l in open(sys.argv[2])]
assert sec and len(sec) == len(audit), (len(sec), len(audit))
for s, a in zip(sec, audit):
    assert s["event"] == "evaluation.suspicious" and s["level"] == "warning"
    assert s["reason"] == a["reason"] and s["audit_seq"] == a["seq"] and s["audit_hash"] == a["hash"]
    assert s["details"] == a["details"] and s["eval_id"] == a["eval_id"]
    assert len(s["trace_id"]) == 32
assert any(s["details"].get("address") == "192.0.2.1" for s in sec)
PYEOF
grep -q '^clearbox_cost_cents_total{language="python",submitter="team-a"} [0-9.e-]*$' "$t/m.prom" \
    && grep -q '^clearbox_evaluations_total{status="completed",language="python"} 1$' "$t/m.prom" \
    && ok "--metrics-file: cost by language and submitter" || ko "metrics file" "$(grep clearbox_cost "$t/m.prom")"
if command -v promtool >/dev/null; then
    promtool check metrics <"$t/m.prom" >"$t/promtool.out" 2>&1 && ok "promtool accepts the metrics file" \
        || ko "promtool" "$(head -c 300 "$t/promtool.out")"
fi

# the seccomp BPF cache: a miss writes it, a corrupted file is refused and
# rewritten, a file others may write is refused
export CLEARBOX_CACHE_DIR="$t/cache"
"$cb" run "$t/ok.py" >"$t/c1.json" 2>/dev/null
f=$(ls "$t"/cache/seccomp-default-*.bpf 2>/dev/null | head -n1)
sha1=$(field "$t/c1.json" policy.seccomp.sha256)
[ -n "$f" ] && [ "$(stat -c %u:%a "$f")" = 0:644 ] && ok "seccomp cache written (root, 0644)" || ko "cache" "no file"
if [ -n "$f" ]; then
    printf 'X' | dd of="$f" bs=1 seek=300 conv=notrunc status=none
    "$cb" run "$t/ok.py" >"$t/c2.json" 2>/dev/null
    [ "$(field "$t/c2.json" status)" = completed ] && [ "$(field "$t/c2.json" policy.seccomp.sha256)" = "$sha1" ] \
        && "$py" -c 'import sys; b=open(sys.argv[1],"rb").read(); sys.exit(b[300:301]==b"X")' "$f" \
        && ok "corrupted cache refused and rewritten" || ko "corrupt cache" "$(head -c 200 "$t/c2.json")"
    chmod 666 "$f"; before=$(stat -c %i "$f")
    "$cb" run "$t/ok.py" >"$t/c3.json" 2>/dev/null
    [ "$(field "$t/c3.json" status)" = completed ] && [ "$(stat -c %a "$f")" = 644 ] && [ "$(stat -c %i "$f")" != "$before" ] \
        && ok "world-writable cache refused and replaced" || ko "cache perms" "$(stat -c %a "$f")"
fi
unset CLEARBOX_CACHE_DIR

# unprivileged: as nobody, it runs contained and names what it lacks (no
# delegated cgroup here), or refuses clearly where user namespaces are off
mkdir -m 755 "$t/pub"; chmod 755 "$t"
printf 'import os\nprint(os.getuid())\n' > "$t/pub/who.py"
(cd "$t/pub" && setpriv --reuid=65534 --regid=65534 --clear-groups env -u XDG_RUNTIME_DIR \
    "$cb" run who.py >"$t/np.json" 2>"$t/np.err"); rc=$?
if [ $rc = 1 ] && grep -q "forbids unprivileged user namespaces" "$t/np.json"; then
    ok "unprivileged: clear refusal (this host forbids user namespaces)"
else
    [ $rc = 0 ] && [ "$(field "$t/np.json" status)" = completed ] && [ "$(field "$t/np.json" stdout)" = 1000 ] \
        && "$py" -c 'import json,sys; d=json.load(open(sys.argv[1]))["policy"]["degraded"]; sys.exit(not {"memory_limit","pids_limit","accounting","dedicated_uid"} <= set(d))' "$t/np.json" \
        && grep -q "warning: ran without dedicated_uid, memory_limit" "$t/np.err" \
        && ok "unprivileged: runs, names every missing limit on stderr and in policy.degraded" \
        || ko "unprivileged" "rc=$rc $(head -c 300 "$t/np.json") $(tail -n1 "$t/np.err")"
fi
(cd "$t/pub" && setpriv --reuid=65534 --regid=65534 --clear-groups "$cb" run --output-dir "$t/pub/o" who.py \
    >"$t/np2.json" 2>/dev/null); rc=$?
[ $rc = 1 ] && [ "$(field "$t/np2.json" error.reason)" = invalid_request ] \
    && ok "unprivileged: --output-dir refused, not ignored" || ko "unpriv output-dir" "rc=$rc"

# --rootfs: a tiny root made from the host's own dash and its libraries (no
# download); the program sees it instead of the host's /usr. A debootstrap
# tree works the same way.
r="$t/rootfs"
if [ -x /usr/bin/dash ] && command -v ldd >/dev/null; then
    mkdir -p "$r/usr/bin" "$r/etc"
    cp /usr/bin/dash "$r/usr/bin/dash"; ln -s dash "$r/usr/bin/sh"
    for lib in $(ldd /usr/bin/dash | grep -o '/[^ ]*'); do
        real=$(readlink -f "$lib"); case "$lib" in /lib*) lib=/usr$lib ;; esac
        mkdir -p "$r$(dirname "$lib")"; cp "$real" "$r$lib"
    done
    for top in bin lib lib64; do [ -d "$r/usr/$top" ] && ln -s "usr/$top" "$r/$top"; done
    echo marker >"$r/usr/MARKER"
    printf 'test -e /usr/MARKER && echo marker
test -e /usr/bin/python3 || echo no-python
' >"$t/r.sh"
    "$cb" run --rootfs "$r" "$t/r.sh" >"$t/r.json" 2>/dev/null
    [ "$(field "$t/r.json" status)" = completed ] && [ "$(field "$t/r.json" stdout)" = "$(printf 'marker\nno-python')" ] \
        && [ "$(field "$t/r.json" policy.rootfs)" = "$r" ] \
        && ok "--rootfs: the program sees the rootfs, recorded in policy.rootfs" || ko "rootfs" "$(head -c 300 "$t/r.json")"
    printf '{"rootfs": "%s"}\n' "$r" >"$t/rp.json"
    "$cb" run --policy "$t/rp.json" "$t/r.sh" >"$t/r2.json" 2>/dev/null
    [ "$(field "$t/r2.json" stdout)" = "$(printf 'marker\nno-python')" ] && ok "policy key rootfs" || ko "policy rootfs" "$(head -c 200 "$t/r2.json")"
    chmod 777 "$r/usr"
    "$cb" run --rootfs "$r" "$t/r.sh" >"$t/r3.json" 2>/dev/null; rc=$?
    [ $rc = 1 ] && [ "$(field "$t/r3.json" error.reason)" = invalid_request ] \
        && ok "--rootfs writable by everyone: refused" || ko "rootfs perms" "rc=$rc"
    chmod 755 "$r/usr"
else
    echo "SKIP --rootfs: no /usr/bin/dash or ldd"
fi
"$cb" run --rootfs relative/dir "$t/ok.py" >"$t/u.out" 2>/dev/null; rc=$?
[ $rc = 2 ] && [ ! -s "$t/u.out" ] && ok "--rootfs relative: usage error" || ko "rootfs relative" "rc=$rc"

# Start-time guard (docs/architecture.md): the libraries only some commands
# need are loaded with dlopen, jansson is linked statically and libm not at
# all (util/num.h), so `clearbox run` loads libc only. A direct call that
# links one back in fails here, not silently in a benchmark.
# The binary's own NEEDED entries: under SAN=1, libasan itself needs libm.
heavy=$(readelf -d "$cb" 2>/dev/null | grep NEEDED |
    grep -oE 'lib(sqlite3|seccomp|crypto|curl|pq|microhttpd|jansson|m)\.so[^] ]*' | tr '\n' ' ')
[ -z "$heavy" ] && ok "the binary links none of the dlopen'ed libraries" || ko "linked at start: $heavy" ""

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
