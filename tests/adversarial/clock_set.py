# expect: status=completed exit=0 stdout=blocked event=blocked_syscall
import time
try:
    time.clock_settime(time.CLOCK_REALTIME, 0)
    print("SET")
except OSError:
    print("blocked")
