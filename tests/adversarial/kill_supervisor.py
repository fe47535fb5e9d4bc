# expect: status=completed exit=0 stdout=cannot-kill
import os, signal
ok = []
for pid in (1, os.getppid()):
    try:
        os.kill(pid, signal.SIGKILL)
        ok.append(pid)
    except OSError:
        pass
print("cannot-kill" if not ok else "KILLED %s" % ok)
