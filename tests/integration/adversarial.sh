#!/usr/bin/env bash
# tests/integration/adversarial.sh - run every program in tests/adversarial/
# through `clearbox run` and check what its header promises:
#   # expect: status=S [exit=N] [signal=SIG] [stdout=TEXT] [event=REASON]...
#             [host=NAME] [stdout_truncated=true] [noevents]
#   # flags:  extra clearbox run flags
# plus, for every program: valid result record, the audit log verifies, and
# nothing is left behind (state directory, cgroups, processes of the
# sandbox uids). Each run happens inside a network namespace this script
# creates (unshare -n), so nothing can leave even if the sandbox failed.
# Needs root. An argument runs only the programs it names (NAME[,NAME...]).
# Prints "N passed, N failed".
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
cb=${CLEARBOX:-$here/../build/clearbox}
py=/usr/bin/python3
pass=0 fail=0
if [ "$(id -u)" != 0 ]; then echo "SKIP adversarial: needs root"; echo "0 passed, 0 failed"; exit 0; fi
work=$(mktemp -d /tmp/cb-adv.XXXXXX)
# our own cgroup parent: other suites may run sandboxes at the same time
# (same uids), so "left behind" means "in our cgroups"
cgp="clearbox-adv-$$"
trap 'rm -rf "$work"; rmdir /sys/fs/cgroup/*/"$cgp" /sys/fs/cgroup/"$cgp" 2>/dev/null' EXIT
only=${1:-}
for f in "$here"/adversarial/*.py "$here"/adversarial/*.sh; do
    name=$(basename "$f"); name=${name%.*}
    [ -n "$only" ] && case ",$only," in *",$name,"*) ;; *) continue ;; esac
    expect=$(sed -n 's/^# expect: //p' "$f" | head -n1)
    flags=$(sed -n 's/^# flags: //p' "$f" | head -n1)
    id="adv-$name-$$"
    audit="$work/$name.audit"
    # shellcheck disable=SC2086
    unshare -n -- "$cb" run --json --eval-id "$id" --audit-log "$audit" --cgroup-parent "$cgp" $flags "$f" \
        >"$work/$name.json" 2>"$work/$name.err"
    rc=$?
    why=$("$py" - "$work/$name.json" "$expect" "$rc" <<'PY'
import json, sys
path, expect, rc = sys.argv[1], sys.argv[2].split(), int(sys.argv[3])
try:
    d = json.load(open(path))
except Exception as e:
    print("result is not one JSON document: %s" % e); sys.exit()
bad = []
if rc != 0: bad.append("exit status %d" % rc)
reasons = [e["reason"] for e in d.get("security_events", [])]
for e in expect:
    k, _, v = e.partition("=")
    if k == "status" and d["status"] != v: bad.append("status %s != %s (%s)" % (d["status"], v, d.get("error")))
    if k == "exit" and d["exit_code"] != int(v): bad.append("exit_code %r != %s" % (d["exit_code"], v))
    if k == "signal" and d["signal"] != v: bad.append("signal %r != %s" % (d["signal"], v))
    if k == "stdout" and v not in d["stdout"]: bad.append("stdout %r lacks %r" % (d["stdout"][:200], v))
    if k == "event" and v not in reasons: bad.append("no %s event (have %s)" % (v, reasons))
    if k == "host" and not any(e["details"].get("attempted_host") == v for e in d["security_events"]): bad.append("no attempted_host %s" % v)
    if k == "stdout_truncated" and d["stdout_truncated"] is not True: bad.append("stdout not truncated")
    if k == "noevents" and reasons: bad.append("false alarm: %s" % reasons)
for e in d.get("security_events", []):
    det = e["details"]
    if "blocked" not in det or "code_snippet" not in det: bad.append("event without blocked/code_snippet")
print("; ".join(bad))
PY
)
    # the audit record for every security event, and the chain verifies
    if [ -z "$why" ] && [ -s "$audit" ]; then
        "$cb" audit verify "$audit" >/dev/null 2>&1 || why="audit log does not verify"
    fi
    if [ -z "$why" ] && grep -q 'event=' <<<"$expect" && [ ! -s "$audit" ]; then
        why="no audit record written"
    fi
    # nothing left behind
    [ -e "/run/clearbox/$id" ] && why="$why; state directory left"
    for c in /sys/fs/cgroup/*/"$cgp"/"$id" /sys/fs/cgroup/"$cgp"/"$id"; do
        [ -e "$c" ] && why="$why; cgroup $c left"
    done
    [ -e /tmp/daemon-started ] && why="$why; wrote /tmp/daemon-started on the host"
    # "# tty: clean": run it again on a terminal (script(1) gives it a pty) and
    # check that the readable summary lets no control sequence through raw
    # (NO_COLOR: the console log lines then hold no escape codes of their own)
    if [ -z "$why" ] && grep -q '^# tty: clean' "$f"; then
        tid="adv-$name-tty-$$"
        script -q -e -c "NO_COLOR=1 unshare -n -- '$cb' run --eval-id '$tid' --cgroup-parent '$cgp' '$f'" \
            "$work/$name.tty" </dev/null >/dev/null 2>&1
        trc=$?
        [ "$trc" -ne 0 ] && why="on a terminal: exit status $trc"
        why="$why$("$py" - "$work/$name.tty" <<'PY'
import sys
t = open(sys.argv[1], "rb").read()
# script(1) adds a first and a last line of its own; the pty turns \n into \r\n
body = t.split(b"\n", 1)[1].rsplit(b"\nScript done", 1)[0].replace(b"\r\n", b"\n")
bad = []
if b"after-the-escapes" not in body: bad.append("summary lacks the program's output")
if b"\\x1b]0;pwned-title" not in body: bad.append("ESC not shown as \\x1b")
for ch in sorted(set(body.decode("utf-8", "surrogateescape"))):
    o = ord(ch)
    if 0xdc80 <= o <= 0xdcff:
        bad.append("byte 0x%02x (not UTF-8) reached the terminal" % (o - 0xdc00))
    elif (o < 0x20 and ch not in "\n\t") or 0x7f <= o <= 0x9f or 0x202a <= o <= 0x202e or 0x2066 <= o <= 0x2069:
        bad.append("raw U+%04X reached the terminal" % o)
print(("; " if bad else "") + "; ".join(bad), end="")
PY
)"
        why=${why#; }
    fi
    if [ -z "$why" ]; then
        echo "PASS $name"; pass=$((pass + 1))
    else
        echo "FAIL $name: $why"; head -c 300 "$work/$name.err"; fail=$((fail + 1))
    fi
done
# no process of the sandbox uids survives the suite in our cgroups, and the
# cgroups themselves go (rmdir fails while a task is left in one)
sleep 0.2
left=""
for pid in $(ps -eo uid=,pid= | awk '$1 == 100000 || $1 == 101000 {print $2}'); do
    grep -q "/$cgp/" "/proc/$pid/cgroup" 2>/dev/null && left="$left $pid($(cat "/proc/$pid/comm" 2>/dev/null))"
done
for c in /sys/fs/cgroup/*/"$cgp" /sys/fs/cgroup/"$cgp"; do
    [ -d "$c" ] && ! rmdir "$c" 2>/dev/null && left="$left cgroup:$c"
done
if [ -n "$left" ]; then echo "FAIL leftover processes:$left"; fail=$((fail + 1)); else echo "PASS no leftover processes"; pass=$((pass + 1)); fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
