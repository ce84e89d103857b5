#!/usr/bin/env python3
"""What deleting old ledger rows costs the requests a serving gateway answers meanwhile
(README, "Usage ledger"; BENCHMARKS.md, "Pruning the ledger while serving").

A SQLite ledger of ROWS old rows; ``speechgw serve`` on it (scripted backend: only the gateway
and its ledger are measured); CLIENTS clients sending one-second batch requests back to back.
First a few seconds of requests alone, then the same while the old rows are deleted: by
``speechgw prune-usage`` (the default), or by one ``DELETE`` statement (``--one-statement``,
what an admin's ``sqlite3 speechgw.db "DELETE FROM usage WHERE at < ..."`` does). Prints the
ledger's bytes per row, the deletion's time and the replies' latency (p50, p95, longest) and
errors in each phase.

    python bench/ledger_prune.py [--rows 1000000] [--clients 2] [--one-statement]
"""

from __future__ import annotations

import argparse
import datetime
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import _common

from speechgw.store import USAGE_COLUMNS, SQLiteStore

CUTOFF = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
"""The old rows are stamped before this; the gateway's own rows come after."""


def fill(ledger: Path, rows: int) -> None:
    SQLiteStore(ledger).close()  # the schema
    db = sqlite3.connect(ledger)
    with db:
        db.executemany(
            f"INSERT INTO usage ({USAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                (
                    f"4f1c2a9b3e-{i:07d}",
                    CUTOFF.timestamp() - rows + i,
                    f"customer-{i % 50}",
                    "streaming",
                    "whisper",
                    "transcribe",
                    "en",
                    "a1b2c3d4" * 8,
                    3.27,
                    0.21,
                )
                for i in range(rows)
            ),
        )
    db.close()  # the last connection: the write-ahead log goes into the file


def summary(latencies: list[float], errors: int) -> str:
    if not latencies:
        return f"no replies, {errors} errors"
    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return (
        f"{len(latencies)} replies, p50 {statistics.median(ordered) * 1000:.0f} ms, "
        f"p95 {p95 * 1000:.0f} ms, longest {ordered[-1] * 1000:.0f} ms, {errors} errors"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--alone-seconds", type=float, default=5.0)
    parser.add_argument("--one-statement", action="store_true")
    args = parser.parse_args()
    with _common.tempdir() as work:
        ledger = Path(work) / "ledger.db"
        started = time.perf_counter()
        fill(ledger, args.rows)
        took = time.perf_counter() - started
        per_row = ledger.stat().st_size / max(1, args.rows)
        print(f"ledger: {args.rows} rows in {took:.1f} s, {per_row:.0f} bytes a row (indexes too)")
        config = Path(work) / "speechgw.yaml"
        config.write_text(
            "backends: {echo: {type: scripted, text: ok}}\nrouting: [{backend: echo}]\n"
            f"store: {{path: {ledger}}}\nlogging: {{level: INFO}}\n"
        )
        wav = _common.wav_bytes(b"\0\0" * 16000)
        phase = ["alone"]
        results: dict[str, tuple[list[float], list[int]]] = {
            "alone": ([], [0]),
            "deleting": ([], [0]),
        }
        done = threading.Event()
        with _common.served(config) as url:

            def client() -> None:
                while not done.is_set():
                    seconds, text = _common.gateway_transcribe(url, wav)
                    latencies, errors = results[phase[0]]
                    if text == "ok":
                        latencies.append(seconds)
                    else:
                        errors[0] += 1

            threads = [threading.Thread(target=client) for _ in range(args.clients)]
            for t in threads:
                t.start()
            time.sleep(args.alone_seconds)
            phase[0] = "deleting"
            started = time.perf_counter()
            if args.one_statement:
                with sqlite3.connect(ledger, timeout=60) as db:
                    sql = "DELETE FROM usage WHERE at < ?"
                    deleted = db.execute(sql, (CUTOFF.timestamp(),)).rowcount
                how = "one DELETE statement"
            else:
                command = [sys.executable, "-m", "speechgw", "prune-usage", "--config"]
                out = subprocess.run(
                    [*command, str(config), "--before", CUTOFF.isoformat()],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                deleted = int(out.split()[1])
                how = "speechgw prune-usage"
            took = time.perf_counter() - started
            done.set()
            for t in threads:
                t.join()
    print(f"{how}: {deleted} rows deleted in {took:.1f} s")
    for name, (latencies, errors) in results.items():
        print(f"  {name:9s} {summary(latencies, errors[0])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
