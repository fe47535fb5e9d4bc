# expect: status=completed exit=0 stdout=pong noevents
# Loopback inside the sandbox is the program's own: allowed, not flagged.
import socket, threading
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
port = srv.getsockname()[1]
def serve():
    c, _ = srv.accept(); c.sendall(c.recv(4).replace(b"i", b"o")); c.close()
threading.Thread(target=serve).start()
c = socket.create_connection(("127.0.0.1", port)); c.sendall(b"ping")
print(c.recv(4).decode())
