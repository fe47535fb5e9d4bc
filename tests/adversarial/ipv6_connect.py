# expect: status=completed exit=0 stdout=failed event=network_attempt
import socket
s = socket.socket(socket.AF_INET6)
s.settimeout(2)
try:
    s.connect(("2001:db8::1", 443))
    print("CONNECTED")
except OSError:
    print("failed")
