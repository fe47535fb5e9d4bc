# expect: status=completed exit=0 stdout=isolated
import os
seen = [p for p in ("/etc/shadow", "/root", "/home", "/work/../../etc/shadow", "/var", "/run/clearbox", "/sys/fs/cgroup", "/boot") if os.path.exists(p)]
print("isolated" if not seen else "SEEN %s" % seen)
