# expect: status=completed exit=0 stdout=failed event=network_attempt
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    s.sendto(b"x", ("203.0.113.7", 9))
    print("SENT")
except OSError:
    print("failed")
