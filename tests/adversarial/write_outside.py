# expect: status=completed exit=0 stdout=denied-all
import errno
bad = []
for p in ("/etc/passwd", "/usr/bin/evil", "/evil", "/proc/sys/kernel/hostname", "/dev/evil"):
    try:
        open(p, "w").write("x")
        bad.append(p)
    except OSError:
        pass
print("denied-all" if not bad else "WROTE %s" % bad)
