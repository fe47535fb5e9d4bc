# expect: status=output_limit event=output_limit stdout_truncated=true
# flags: --output-limit 65536
import sys
while True:
    sys.stdout.write("x" * 65536)
