# expect: status=completed exit=0 stdout=ok noevents
import os, json, tempfile
with open("/work/out.json", "w") as f:
    json.dump({"a": 1}, f)
with tempfile.NamedTemporaryFile(dir="/tmp") as t:
    t.write(b"hi")
print("ok" if json.load(open("/work/out.json"))["a"] == 1 else "bad")
