#!/usr/bin/env bash
# tests/integration/cgroup_v2_vm.sh - the sandbox and the service on a real
# cgroup v2 kernel.
#
# The machines this suite usually runs on mount cgroup v1, while most hosts
# clearbox runs on are pure v2. So the v2 paths run for real here, in a
# throwaway VM: qemu (software emulation: no KVM needed) boots Debian's
# kernel (linux-image-amd64, which make deps unpacks into
# /var/cache/clearbox/vm-kernel without installing it) with an initramfs made
# here from busybox-static and the kernel's virtio/9p modules. It mounts this machine's root read-only
# over virtio-9p (fresh tmpfs on /tmp and /run), mounts cgroup2 alone at
# /sys/fs/cgroup with cpuset, cpu, io, memory and pids enabled (as systemd
# does), has no network device (loopback only), and runs with this build:
#   - the cgroup unit tests (test_sandbox_cgroup; the v1-only pool tests
#     skip), and the runs of test_sandbox and test_sandbox_spawner that check
#     limits, accounting, the CPU mask, gc and leftovers (not the ones that
#     time the sandbox in milliseconds or give it 200 ms: emulation is ~20x
#     slower, and a shell's start alone can use that much CPU there);
#   - tests/integration/adversarial.sh on the programs that hit the cgroup:
#     limits, the kill path, what is left behind;
#   - a `clearbox serve` round over HTTP: evaluations end completed,
#     memory_limit, pids_limit and cancelled; the record says cgroup_mode v2
#     and nothing degraded; /readyz is ready; no cgroup is left; SIGTERM
#     exits 0 and the audit log verifies.
# Each part's "N passed, N failed" comes back over the serial console and is
# summed here. Skipped (with a line saying so) for an ASan build: the VM
# checks the kernel's side, which the normal build already covers.
# Needs root, qemu-system-x86, busybox-static and that kernel (make deps). Prints every check, then "N passed, N failed".
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
cb=$(readlink -f "${CLEARBOX:-$here/../build/clearbox}")
tests=$(dirname "$cb")/tests
timeout_s=${V2VM_TIMEOUT_S:-1500}

if [ "$(id -u)" != 0 ]; then echo "SKIP cgroup_v2_vm: needs root"; echo "0 passed, 0 failed"; exit 0; fi
if ldd "$cb" 2>/dev/null | grep -q libasan; then
    echo "SKIP cgroup_v2_vm: an ASan build (the normal build's run covers the kernel's side)"
    echo "0 passed, 0 failed"; exit 0
fi
setup_fail() { echo "FAIL cgroup v2 VM: $*"; echo "0 passed, 1 failed"; exit 1; }
command -v qemu-system-x86_64 >/dev/null || setup_fail "no qemu-system-x86_64 (make deps installs qemu-system-x86)"
[ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 ||
    setup_fail "no static /bin/busybox (make deps installs busybox-static)"
[ -x "$cb" ] && [ -x "$tests/test_sandbox_cgroup" ] || setup_fail "no $cb or $tests (make test builds them)"

# The kernel: the one make deps unpacked (Debian's), else the newest in this
# machine's /boot; either with its 9p modules.
kimg="" kmods=""
for base in /var/cache/clearbox/vm-kernel ""; do
    for k in $(ls -v "$base"/boot/vmlinuz-* 2>/dev/null | tac); do
        v=${k##*/vmlinuz-}
        if [ -n "$(find "$base/lib/modules/$v" -name '9p.ko*' 2>/dev/null | head -n1)" ]; then
            kimg=$k kmods=$base/lib/modules/$v
            break 2
        fi
    done
done
[ -n "$kimg" ] || setup_fail "no kernel with 9p modules (make deps unpacks Debian's into /var/cache/clearbox/vm-kernel)"

# Below /var/tmp, not /tmp: the VM sees this machine's files but mounts a
# tmpfs of its own on /tmp.
work=$(mktemp -d /var/tmp/cb-v2vm.XXXXXX)
trap 'rm -rf "$work"' EXIT

# The VM mounts tmpfs of its own on /tmp and /run: what it needs from below
# them here (the build, the tests) is bound in from the host's root.
binds=""
for p in "$(dirname "$cb")" "$here"; do
    case "$p" in /tmp/* | /run/*) binds="$binds $p" ;; esac
done

# the initramfs: busybox, the modules for virtio-9p, an /init that mounts
# this machine's root and hands over to inner.sh
mods="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci 9pnet 9pnet_virtio netfs fscache 9p"
mkdir -p "$work/initrd/bin" "$work/initrd/mod" "$work/initrd/proc" "$work/initrd/sys" \
    "$work/initrd/dev" "$work/initrd/newroot"
cp /bin/busybox "$work/initrd/bin/busybox"
for m in $mods; do
    f=$(find "$kmods" -name "$m.ko*" | head -n1)
    [ -n "$f" ] || continue # built into this kernel
    case "$f" in
        *.ko.xz) xz -dc "$f" >"$work/initrd/mod/$m.ko" ;;
        *.ko.zst) zstd -qdc "$f" >"$work/initrd/mod/$m.ko" ;;
        *) cp "$f" "$work/initrd/mod/$m.ko" ;;
    esac
done
cat >"$work/initrd/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $mods; do [ -f /mod/\$m.ko ] && insmod /mod/\$m.ko; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 hostroot /newroot ||
    { echo "VM: cannot mount the host's root over 9p"; poweroff -f; }
mkdir -p /hostroot
mount --bind /newroot /hostroot
mount -t tmpfs -o mode=1777 tmp /newroot/tmp
mount -t tmpfs -o mode=755 run /newroot/run
# what the tests need from below the host's /tmp or /run (a checkout there)
for p in $binds; do mkdir -p /newroot\$p && mount --bind /hostroot\$p /newroot\$p; done
umount /proc /sys /dev
exec switch_root /newroot /bin/bash $work/inner.sh
EOF
chmod +x "$work/initrd/init"
(cd "$work/initrd" && find . | cpio -o -H newc 2>/dev/null | gzip -1) >"$work/initrd.gz" ||
    setup_fail "cannot make the initramfs"

# What runs in the VM as pid 1. "@@ PART: N passed, N failed" lines are
# what this script sums; VM-END says it got to the end.
cat >"$work/inner.sh" <<EOF
#!/bin/bash
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 CLEARBOX=$cb
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/shm /dev/pts
mount -t tmpfs shm /dev/shm
mount -t devpts devpts /dev/pts
mount -t cgroup2 cgroup2 /sys/fs/cgroup
echo "+cpuset +cpu +io +memory +pids" >/sys/fs/cgroup/cgroup.subtree_control
ip link set lo up
echo "VM: kernel \$(uname -r), cgroup2 controllers: \$(cat /sys/fs/cgroup/cgroup.subtree_control)"
cd /tmp
part() { # name, command...
    local name=\$1 out last; shift
    echo "== \$name"
    out=\$("\$@" 2>&1)
    printf '%s\n' "\$out" | grep -vE '^\{"ts"|^ *skipped: |^PASS ' | tail -n 40
    last=\$(printf '%s\n' "\$out" | grep -E '^[0-9]+ passed, [0-9]+ failed\$' | tail -n1)
    echo "@@ \$name: \${last:-0 passed, 1 failed}"
}
part test_sandbox_cgroup $tests/test_sandbox_cgroup
part test_sandbox $tests/test_sandbox runs_python_and_reports program_gets_the_callers_cpu_mask \
    the_old_root_is_gone exit_code_stdin_and_files memory_and_pids_limits setup_failure_fails_closed \
    invalid_utf8 gc_removes_stale_keeps_live gc_judges_runs a_run_holds_a_lock_file
part test_sandbox_spawner $tests/test_sandbox_spawner runs_programs_like_a_direct_clone \
    the_spawner_keeps_only program_gets_default_signals program_gets_the_callers_cpu_mask \
    setup_failure_through concurrent_runs_through
part adversarial bash $here/integration/adversarial.sh \
    memory_bomb,fork_bomb,cpu_spin,disk_fill,output_flood,double_fork_daemon,sleep_ignore_term,kill_supervisor,benign_threads,benign_subprocess,list_processes,other_evaluations
part serve bash $work/serve.sh
echo VM-END
exec busybox poweroff -f
EOF

# The service on v2: a few evaluations over HTTP, then what must be true.
cat >"$work/serve.sh" <<'EOF'
#!/bin/bash
cb=$CLEARBOX
d=$(mktemp -d /tmp/v2serve.XXXXXX)
pass=0 fail=0
check() { # what, condition (bash)
    if eval "$2"; then echo "PASS $1"; pass=$((pass + 1)); else echo "FAIL $1"; fail=$((fail + 1)); fi
}
url=http://127.0.0.1:8080
"$cb" serve --listen 127.0.0.1:8080 --db "sqlite:$d/db" --audit-log "$d/audit" --workers 2 \
    --node-id v2vm --submit-rate-per-s 0 >"$d/log" 2>&1 &
spid=$!
for _ in $(seq 300); do curl -sf "$url/healthz" >/dev/null && break; sleep 0.2; done
field() { /usr/bin/python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."): d=d[k] if isinstance(d,dict) else d[int(k)]
print(json.dumps(d) if isinstance(d,(dict,list)) else d)' "$@"; }
printf 'print(1)\n' >"$d/ok.py"
printf 'chunks = []\nwhile True:\n    chunks.append(bytearray(16 << 20))\n' >"$d/mem.py"
printf 'b() { b | b & }; b\nsleep 5\n' >"$d/bomb.sh"
printf 'import time\ntime.sleep(60)\n' >"$d/sleep.py"
"$cb" submit --server "$url" --wait --json "$d/ok.py" >"$d/ok.json" 2>"$d/ok.err"
"$cb" submit --server "$url" --wait --json --memory 64 "$d/mem.py" >"$d/mem.json" 2>>"$d/err"
"$cb" submit --server "$url" --wait --json --pids 16 "$d/bomb.sh" >"$d/bomb.json" 2>>"$d/err"
sid=$("$cb" submit --server "$url" "$d/sleep.py" 2>>"$d/err")
for _ in $(seq 300); do
    [ "$(curl -sf "$url/v1/evaluations/$sid" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')" = running ] && break
    sleep 0.2
done
"$cb" cancel --server "$url" "$sid" >/dev/null 2>>"$d/err"
for _ in $(seq 300); do
    curl -sf "$url/v1/evaluations/$sid" >"$d/sleep.json"
    [ "$(field "$d/sleep.json" status)" = cancelled ] && break
    sleep 0.2
done
check "print(1) completed with stdout 1" '[ "$(field "$d/ok.json" status)" = completed ] && [ "$(field "$d/ok.json" stdout)" = 1 ]'
check "the record says cgroup v2, nothing degraded" '[ "$(field "$d/ok.json" policy.cgroup_mode)" = v2 ] && [ "$(field "$d/ok.json" policy.degraded)" = "[]" ]'
check "memory peak, pids peak and CPU measured" '/usr/bin/python3 -c "import json,sys; r=json.load(open(sys.argv[1]))[\"resources\"]; sys.exit(not (r[\"memory_peak_mb\"] > 0 and r[\"pids_peak\"] >= 1 and r[\"cpu_seconds\"] > 0))" "$d/ok.json"'
check "a memory bomb ends memory_limit" '[ "$(field "$d/mem.json" status)" = memory_limit ]'
check "a fork bomb ends pids_limit" '[ "$(field "$d/bomb.json" status)" = pids_limit ]'
check "a running evaluation cancelled ends cancelled" '[ "$(field "$d/sleep.json" status)" = cancelled ]'
check "/readyz is ready" 'curl -sf "$url/readyz" >/dev/null'
sleep 0.5
check "no evaluation cgroup is left" '[ -z "$(find /sys/fs/cgroup/clearbox -mindepth 1 -maxdepth 1 -type d 2>/dev/null)" ]'
kill -TERM "$spid"
wait "$spid"
rc=$?
check "SIGTERM: exit 0" '[ "$rc" = 0 ]'
check "the audit log verifies" '"$cb" audit verify "$d/audit" >/dev/null 2>&1'
if [ "$fail" -ne 0 ]; then echo "-- serve log:"; tail -n 20 "$d/log"; cat "$d/err" 2>/dev/null | tail -n 5; fi
echo "$pass passed, $fail failed"
EOF

out="$work/console.txt"
echo "booting $kimg (emulated, up to ${timeout_s} s)"
timeout "$timeout_s" qemu-system-x86_64 -accel tcg -m 2048 -smp 2 -nographic -no-reboot -nic none \
    -kernel "$kimg" -initrd "$work/initrd.gz" \
    -append "console=ttyS0 panic=-1 quiet" \
    -virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap" \
    </dev/null >"$out" 2>&1
qrc=$?
# the console without carriage returns and the firmware's escape sequences
clean() { tr -d '\r' <"$out" | sed 's/\x1b\[[0-9;?]*[a-zA-Z]//g; s/\x1bc//g'; }
clean | sed -n '/VM: kernel/,/^VM-END/p' | grep -v '^@@ '
pass=0 fail=0
while read -r line; do
    p=${line%% passed*}; p=${p##* }
    f=${line##*, }; f=${f%% failed}
    echo "$line"
    pass=$((pass + p)); fail=$((fail + f))
done < <(clean | grep -E '^@@ [a-z_]+: [0-9]+ passed, [0-9]+ failed$')
if ! clean | grep -q '^VM-END'; then
    echo "FAIL the VM did not get to the end (qemu exit $qrc); its console's last lines:"
    clean | tail -n 30
    fail=$((fail + 1))
fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
