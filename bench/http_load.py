"""A concurrent HTTP client as its own process: ``python -m bench.http_load URL SECONDS N``.

N threads, each with one keep-alive connection, GET URL back to back for SECONDS; prints
``{"requests": ok, "errors": n, "seconds": elapsed}``. A separate process, so the client's
own Python work does not share a GIL with anything else the bench does.
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
import urllib.parse


def worker(url: urllib.parse.SplitResult, deadline: float, counts: list[int]) -> None:
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=10)
    ok = errors = 0
    while time.monotonic() < deadline:
        try:
            conn.request("GET", url.path or "/")
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                ok += 1
            else:
                errors += 1
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()
    conn.close()
    counts[0], counts[1] = ok, errors


def main(argv: list[str]) -> int:
    url, seconds, threads = urllib.parse.urlsplit(argv[0]), float(argv[1]), int(argv[2])
    counts = [0, 0]
    lock = threading.Lock()
    start = time.monotonic()
    deadline = start + seconds

    def run() -> None:
        local = [0, 0]
        worker(url, deadline, local)
        with lock:
            counts[0] += local[0]
            counts[1] += local[1]

    pool = [threading.Thread(target=run) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    print(json.dumps({"requests": counts[0], "errors": counts[1],
                      "seconds": time.monotonic() - start}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
