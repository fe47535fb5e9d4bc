# expect: status=completed exit=0 stdout=blocked event=blocked_syscall
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
params = ctypes.create_string_buffer(120)
r = libc.syscall(425, 8, params)  # io_uring_setup
print("blocked" if r < 0 else "IO_URING")
