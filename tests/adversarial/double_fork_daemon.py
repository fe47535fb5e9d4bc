# expect: status=completed exit=0
# Double-fork + setsid: the daemon must not outlive the evaluation.
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        open("/tmp/daemon-started", "w").write(str(os.getpid()))
        time.sleep(3600)
    os._exit(0)
time.sleep(0.2)
print("parent done")
