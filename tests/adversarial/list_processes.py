# expect: status=completed exit=0 stdout=only-own
import os
pids = [p for p in os.listdir("/proc") if p.isdigit()]
# our own pid namespace: this process (and init is hidden by hidepid)
print("only-own" if len(pids) <= 2 and str(os.getpid()) in pids else "SEEN %s" % pids)
