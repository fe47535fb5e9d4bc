# expect: status=completed exit=0 stdout=no-sys
if [ -e /sys/fs/cgroup ] || [ -e /sys/kernel ]; then echo "SEEN /sys"; else echo no-sys; fi
