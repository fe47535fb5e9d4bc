# expect: status=completed exit=0 stdout=after-the-escapes noevents
# tty: clean
# Tries to drive the operator's terminal through the readable summary of
# `clearbox run`: set the window title (OSC), clear the screen and move the
# cursor (CSI), the 8-bit C1 CSI, a bare carriage return that overwrites the
# line, bidi overrides that reorder it, a bell, and bytes that are not UTF-8.
# adversarial.sh also runs it on a terminal (script(1)) and checks that none
# of these reach the terminal raw.
import sys
out = sys.stdout.buffer
out.write(b"\x1b]0;pwned-title\x07")          # OSC: window title, BEL
out.write(b"\x1b]52;c;cHduZWQ=\x1b\\")       # OSC 52: write the clipboard, ST
out.write(b"\x1b[2J\x1b[H")                   # clear screen, cursor home
out.write(b"\x1b[31mred\x1b[0m\n")            # colours
out.write(b"\xc2\x9b2J\n")                    # C1 CSI (U+009B)
out.write(b"\x9b2J\n")                        # raw 8-bit CSI (not UTF-8)
out.write(b"everything is fine\rOVERWRITTEN\n")
out.write("\u202eevil\u202c\n".encode())      # right-to-left override
out.write(b"\x08\x08\x7f\x00\xff\xfe\n")
out.write(b"after-the-escapes\n")
out.flush()
sys.stderr.buffer.write(b"\x1b[2K\x1b]0;stderr-title\x07err\n")
