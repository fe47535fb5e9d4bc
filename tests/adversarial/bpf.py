# expect: status=completed exit=0 stdout=blocked event=blocked_syscall
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
r = libc.syscall(321, 0, 0, 0)  # bpf(BPF_MAP_CREATE, NULL, 0)
print("blocked" if r < 0 else "BPF")
