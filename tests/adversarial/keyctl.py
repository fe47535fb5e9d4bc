# expect: status=completed exit=0 stdout=blocked event=blocked_syscall
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
r = libc.syscall(250, 0, 0, 0, 0, 0)  # keyctl(KEYCTL_GET_KEYRING_ID)
print("blocked" if r < 0 else "KEYCTL")
