# expect: status=completed exit=1 noevents
import sys
sys.stderr.write("some error\n")
sys.exit(1)
