"""The usage ledger's SQLite file read as an admin reads it, on a connection closed after the
query (Python 3.13 warns of a connection left to the garbage collector, and the tests turn
warnings into errors)."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any


def rows(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every row ``sql`` selects from the SQLite file at ``path``."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute(sql, params).fetchall()
