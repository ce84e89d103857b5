"""Prometheus metrics, fed the same way by every protocol.

The four metrics of batch-protocol.txt keep exactly their names, types and labels. Each app
gets its own :class:`CollectorRegistry`, so several servers can live in one process (tests)
without sharing counters. ``machine_id`` comes from clients, so its label values are checked
and capped: a malformed id is counted as ``invalid`` and ids beyond the cap as ``other``.
"""

from __future__ import annotations

import re
import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["GatewayMetrics"]

_MACHINE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class GatewayMetrics:
    """The gateway's metric families, registered in a registry of its own."""

    def __init__(self, max_machine_ids: int = 1000) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "asr_requests_total",
            "Total request count",
            ["machine_id", "task", "status"],
            registry=r,
        )
        self.audio_seconds = Counter(
            "asr_audio_seconds_total",
            "Audio duration processed",
            ["machine_id", "task"],
            registry=r,
        )
        self.processing = Histogram(
            "asr_processing_seconds",
            "End-to-end processing latency",
            ["machine_id", "task"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.postprocess = Histogram(
            "asr_postprocess_seconds",
            "LLM post-processing latency",
            ["machine_id", "task"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "speechgw_requests_in_flight",
            "Jobs being recognised (recordings and stream utterances)",
            registry=r,
        )
        self.active_streams = Gauge(
            "speechgw_active_streams", "Open streaming connections", registry=r
        )
        self.backend_latency = Histogram(
            "speechgw_backend_seconds",
            "Time spent in a backend per job",
            ["backend"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "speechgw_errors_total",
            "Errors returned to clients",
            ["protocol", "error"],
            registry=r,
        )
        self.interims = Counter(
            "speechgw_interims_total",
            "Interim results sent (text of an utterance still being spoken; not billed)",
            ["protocol"],
            registry=r,
        )
        self.fallbacks = Counter(
            "speechgw_fallbacks_total",
            "Jobs moved to a fallback backend",
            ["from", "to"],
            registry=r,
        )
        self.backend_ready = Gauge(
            "speechgw_backend_ready",
            "1 when a backend's model is loaded",
            ["backend"],
            registry=r,
        )
        self.store_up = Gauge(
            "speechgw_store_up",
            "1 when the key and usage store answered its last health check, else 0",
            registry=r,
        )
        self.store_errors = Counter(
            "speechgw_store_errors_total",
            "Requests refused (server_busy) because the store was unreachable, by what was "
            "needed of it (keys, ledger)",
            ["operation"],
            registry=r,
        )
        self.limit_fallbacks = Counter(
            "speechgw_limit_fallbacks_total",
            "Per-key limit decisions taken on this replica's own count because the shared "
            "store was unreachable (limit: rate, connections)",
            ["limit"],
            registry=r,
        )
        self._max_machine_ids = max_machine_ids
        self._machine_ids: set[str] = set()
        self._lock = threading.Lock()

    def machine_label(self, machine_id: str) -> str:
        """A bounded label value for a client-supplied machine id."""
        if machine_id in self._machine_ids:
            return machine_id
        if not _MACHINE_ID.match(machine_id):
            return "invalid"
        with self._lock:
            if len(self._machine_ids) >= self._max_machine_ids:
                return "other"
            self._machine_ids.add(machine_id)
        return machine_id
