# expect: status=completed exit=0 stdout=blocked event=blocked_syscall
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
r = libc.unshare(0x10000000 | 0x00020000)  # CLONE_NEWUSER | CLONE_NEWNS
print("blocked" if r != 0 else "UNSHARED")
