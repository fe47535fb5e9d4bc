# expect: status=completed exit=0 stdout=failed event=network_attempt host=github.com
import socket
try:
    socket.getaddrinfo("github.com", 443)
    print("RESOLVED")
except OSError:
    print("failed")
