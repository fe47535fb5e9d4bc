# expect: status=completed signal=SIGSEGV noevents
import ctypes
ctypes.string_at(0)
