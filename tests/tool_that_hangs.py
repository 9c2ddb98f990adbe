"""A stand-in for a bench tool that stalls (tests/test_bench.py, ``run_tool``): it starts
a child process, says its pid and waits for a signal; interrupted (SIGINT), it stops the
child as the bench tools' context managers stop what they started, and says so."""

import signal
import subprocess
import sys

child = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"])
print(child.pid, flush=True)
try:
    signal.pause()  # until a signal: Ctrl-C raises KeyboardInterrupt here
finally:
    child.terminate()
    child.wait()
    print("stopped what it started", flush=True)
