# expect: status=completed exit=0 stdout=no-host-info
import os
leaks = []
for p in ("/proc/1/environ", "/proc/1/cmdline", "/proc/kcore", "/proc/sysrq-trigger"):
    try:
        open(p, "rb").read(16)
        if p != "/proc/sysrq-trigger":
            leaks.append(p)
    except OSError:
        pass
try:
    open("/proc/sys/kernel/hostname", "w").write("pwned")
    leaks.append("sysctl-write")
except OSError:
    pass
print("no-host-info" if not leaks else "LEAK %s" % leaks)
