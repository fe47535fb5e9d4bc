# expect: status=completed exit=0 event=disk_limit
# flags: --disk 4
# Fill the workspace tmpfs: the write fails with ENOSPC (an ordinary error).
try:
    with open("/work/fill", "wb") as f:
        while True:
            f.write(b"\0" * 65536)
except OSError as e:
    print("stopped:", e.errno)
