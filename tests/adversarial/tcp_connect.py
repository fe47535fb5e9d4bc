# expect: status=completed exit=0 stdout=failed event=network_attempt
# The address is TEST-NET-3 (never routed); the sandbox has loopback only.
import socket
s = socket.socket()
s.settimeout(2)
try:
    s.connect(("203.0.113.7", 443))
    print("CONNECTED")
except OSError:
    print("failed")
