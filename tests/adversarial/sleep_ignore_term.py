# expect: status=timeout event=timeout
# flags: --timeout 0.5
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGINT, signal.SIG_IGN)
time.sleep(60)
