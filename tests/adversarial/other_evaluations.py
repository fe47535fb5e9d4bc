# expect: status=completed exit=0 stdout=isolated
# Other evaluations' workspaces live under /run/clearbox on the host: invisible here.
import os
found = []
for root in ("/run", "/tmp", "/work"):
    for dirpath, dirs, files in os.walk(root):
        if "clearbox" in dirpath or any(f == "lock" for f in files):
            found.append(dirpath)
print("isolated" if not found else "SEEN %s" % found)
