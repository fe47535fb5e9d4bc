# expect: status=completed exit=0 stdout=blocked event=blocked_syscall
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
r = libc.ptrace(16, 1, 0, 0)  # PTRACE_ATTACH to pid 1
print("blocked" if r != 0 else "ATTACHED")
