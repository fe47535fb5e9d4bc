# expect: status=completed exit=0 stdout=8 noevents
import threading
out = []
ts = [threading.Thread(target=lambda i=i: out.append(i)) for i in range(8)]
[t.start() for t in ts]
[t.join() for t in ts]
print(len(out))
