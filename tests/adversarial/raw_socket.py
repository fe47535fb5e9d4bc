# expect: status=completed exit=0 stdout=blocked
import socket
try:
    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    print("RAW")
except OSError:
    print("blocked")
