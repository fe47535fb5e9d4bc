# expect: status=memory_limit event=memory_limit
# Allocate and touch memory until the cgroup's OOM killer fires.
chunks = []
while True:
    chunks.append(bytearray(16 << 20))
