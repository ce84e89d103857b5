#!/usr/bin/env python3
"""How soon a replica answers again after a PostgreSQL restart (BENCHMARKS.md, "Fleet").

A private PostgreSQL cluster (Debian's packages), a gateway in this process on it (scripted
backend, keys from the store), requests while the database is stopped for OUTAGE seconds, then
requests back to back after it starts: the time from the start to the first answered request.

    python bench/store_recovery.py [--outage 15]
"""

from __future__ import annotations

import argparse
import time

import _common

from tests.client import transcribe
from tests.postgres import Cluster, fresh_database
from tests.serving import running_server
from tests.speech import speak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outage", type=float, default=15.0)
    args = parser.parse_args()
    cluster = Cluster()
    try:
        with fresh_database(cluster.url) as url:
            wav = speak("hello there", _common.Path("/tmp/speechgw-recovery.wav")).read_bytes()
            store = {"store": {"url": url, "timeout_seconds": 1}}
            with running_server(store, backends={"null": {"type": "scripted", "text": "x"}}) as s:
                assert "text" in transcribe(s.ws, wav).reply
                cluster.stop("fast")
                stopped = time.monotonic()
                refused = 0
                while time.monotonic() - stopped < args.outage:
                    refused += transcribe(s.ws, wav).reply.get("error") == "server_busy"
                cluster.start()
                started = time.monotonic()
                while "text" not in transcribe(s.ws, wav).reply:
                    pass
                print(
                    f"outage {args.outage:g} s ({refused} requests refused with server_busy); "
                    f"first answer {time.monotonic() - started:.2f} s after PostgreSQL started"
                )
    finally:
        cluster.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
