# expect: status=completed exit=0 stdout=unprivileged noevents
# What the program holds, from the kernel's own view (/proc/self/status):
# no capability in any set (the bounding set too, so no setuid file or
# file capability could hand one back), no_new_privs on, the seccomp
# filter on, and uid/gid 1000 in every slot.
import os
st = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
bad = []
for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
    if int(st[k].strip(), 16) != 0:
        bad.append("%s=%s" % (k, st[k].strip()))
if st["NoNewPrivs"].strip() != "1":
    bad.append("NoNewPrivs=" + st["NoNewPrivs"].strip())
if st["Seccomp"].strip() != "2":
    bad.append("Seccomp=" + st["Seccomp"].strip())
for k in ("Uid", "Gid"):
    if set(st[k].split()) != {"1000"}:
        bad.append("%s=%s" % (k, st[k].strip()))
if os.getgroups() not in ([], [1000]):
    bad.append("groups=%s" % os.getgroups())
print("unprivileged" if not bad else "PRIVILEGED " + " ".join(bad))
