"""What every SDK test script reports: one line per check, exit 1 at the first failure."""
import sys


def check(cond, what):
    if not cond:
        print("FAILED:", what, file=sys.stderr)
        sys.exit(1)
    print("ok:", what)
