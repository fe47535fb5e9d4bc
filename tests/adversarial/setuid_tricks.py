# expect: status=completed exit=0 stdout=still-1000
import os
for f in (lambda: os.setuid(0), lambda: os.setgid(0), lambda: os.setgroups([0])):
    try:
        f()
    except OSError:
        pass
print("still-1000" if os.getuid() == 1000 and os.geteuid() == 1000 else "UID %d" % os.geteuid())
