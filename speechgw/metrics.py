"""Prometheus metrics, fed the same way by every protocol.

The four metrics of batch-protocol.txt keep exactly their names, types and labels. Each app
gets its own :class:`CollectorRegistry`, so several servers can live in one process (tests)
without sharing counters. ``machine_id`` comes from clients, so its label values are checked
and capped: a malformed id is counted as ``invalid`` and ids beyond the cap as ``other``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from . import __version__
from .batching import BatchStats

__all__ = ["BatchSource", "GatewayMetrics", "WaitingSource"]

BatchSource = Callable[[], Iterable[tuple[str, BatchStats | None]]]
"""Each backend's name and batch counts (None: it does not batch), read at each scrape."""
WaitingSource = Callable[[], Iterable[tuple[str, int]]]
"""Each backend's name and the jobs waiting for it now, read at each scrape."""

_MACHINE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
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
        # which release each replica runs, for a fleet in a rolling upgrade
        Info("speechgw_build", "The running speechgw", registry=r).info({"version": __version__})
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
        self.early_finals = Counter(
            "speechgw_early_finals_total",
            "Stream finals decoded while the utterance's closing pause ran, by outcome: used "
            "(the reply), discarded (the speaker went on), failed",
            ["outcome"],
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
        self._batches = _BatchCollector(lambda: ())  # until the gateway names its backends
        r.register(self._batches)
        self._waiting = _WaitingCollector(lambda: ())
        r.register(self._waiting)
        self._max_machine_ids = max_machine_ids
        self._machine_ids: set[str] = set()
        self._lock = threading.Lock()

    def watch_backends(self, source: WaitingSource) -> None:
        """Export how many jobs wait for each backend, read from ``source`` at each scrape."""
        self._waiting.source = source

    def watch_batches(self, source: BatchSource) -> None:
        """Export the backends' batch counts, read from ``source`` at each scrape (nothing on
        the inference path counts for Prometheus)."""
        self._batches.source = source

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


class _WaitingCollector(Collector):
    """``speechgw_backend_waiting``: jobs that wait for each backend's compute now."""

    def __init__(self, source: WaitingSource) -> None:
        self.source = source

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "speechgw_backend_waiting",
            "Jobs waiting now for a backend's compute: for a place, or between their model "
            "calls for the model",
            labels=["backend"],
        )

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for name, waiting in self.source():
            family.add_metric([name], waiting)
        yield family


class _BatchCollector(Collector):
    """``speechgw_batch_size`` (a histogram of model calls per batched call),
    ``speechgw_batch_retried_alone_total`` and ``speechgw_batch_waiting``, per backend that
    batches: how well a GPU is being fed."""

    def __init__(self, source: BatchSource) -> None:
        self.source = source

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        for name, stats in self.source():
            if stats is not None:
                _add(families, name, stats)
        return iter(families)

    @staticmethod
    def _families() -> list[Metric]:
        return [
            HistogramMetricFamily(
                "speechgw_batch_size",
                "Model calls (jobs' encode-and-decode steps) run together in one batched call",
                labels=["backend"],
            ),
            CounterMetricFamily(
                "speechgw_batch_retried_alone",
                "Calls run again one by one because the batch they were in failed",
                labels=["backend"],
            ),
            GaugeMetricFamily(
                "speechgw_batch_waiting",
                "Model calls waiting now for a place in a batch",
                labels=["backend"],
            ),
        ]


def _add(families: list[Metric], backend: str, stats: BatchStats) -> None:
    size, retried, waiting = families
    buckets = []
    for bound in _BATCH_BUCKETS:
        seen = sum(n for s, n in stats.sizes.items() if s <= bound)
        buckets.append((floatToGoString(bound), seen))
    buckets.append(("+Inf", stats.batches))
    size.add_metric([backend], buckets, sum_value=stats.calls)  # type: ignore[attr-defined]
    retried.add_metric([backend], stats.retried_alone)  # type: ignore[attr-defined]
    waiting.add_metric([backend], stats.waiting)  # type: ignore[attr-defined]
