# expect: status=completed exit=0 stdout=blocked event=blocked_syscall
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
r = libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)
print("blocked" if r != 0 else "MOUNTED")
