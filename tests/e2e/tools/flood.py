"""A partner system flooding the broker: POSTs one JSON body to one path from many threads on
kept-alive connections for a number of seconds, then prints a JSON line of the statuses seen
and, for the 429s, the smallest Retry-After and one problem body.

The tests run it at the lowest CPU priority (nice 19), standing in for a flooder on another
machine: the broker then competes with its own work only, not with the flooder's client code.

usage: flood.py BASE_URL PATH TOKEN BODY_JSON SECONDS THREADS
"""

import http.client
import json
import sys
import threading
import time
from urllib.parse import urlparse


def main():
    base, path, token, body, seconds, threads = sys.argv[1:7]
    url = urlparse(base)
    deadline = time.monotonic() + float(seconds)
    statuses = {}
    retry_after = []
    problem = []
    lock = threading.Lock()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def flood():
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        seen = {}
        while time.monotonic() < deadline:
            conn.request("POST", path, body=body, headers=headers)
            r = conn.getresponse()
            data = r.read()
            seen[r.status] = seen.get(r.status, 0) + 1
            if r.status == 429:
                with lock:
                    retry_after.append(int(r.getheader("Retry-After", "0")))
                    if not problem:
                        problem.append({"body": json.loads(data), "ratelimit": r.getheader("RateLimit"),
                                        "content_type": r.getheader("Content-Type")})
        with lock:
            for k, v in seen.items():
                statuses[k] = statuses.get(k, 0) + v

    workers = [threading.Thread(target=flood) for _ in range(int(threads))]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    print(json.dumps({"statuses": {str(k): v for k, v in statuses.items()},
                      "min_retry_after": min(retry_after) if retry_after else None,
                      "problem": problem[0] if problem else None}))


if __name__ == "__main__":
    main()
