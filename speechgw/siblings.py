"""The processes of one ``speechgw serve --processes N`` answer ``/metrics`` as one server.

The kernel gives each connection to whichever process accepts it first, so a scrape reaches
one process of N, whose registry counts only what that process served. So each process also
serves its own exposition on a Unix socket in a folder the processes share, and the process
scraped reads its siblings' there and answers their sum: counters, histograms and the gauges
that count things (open streams, jobs in flight or waiting) are added up; the gauges that say
whether something works (``speechgw_backend_ready``, ``speechgw_store_up``) take the least
value, so they read 1 only when every process says 1; a ``_created`` time the earliest; the
build's info is the same everywhere. A sibling that does not answer within a second (starting,
or just replaced after it ended) is left out of that scrape: its counts come back with it, as
a restarted server's do (Prometheus' ``rate`` reads a drop as a counter reset).

Labels and names are the registries' own, so a dashboard cannot tell N processes from one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

__all__ = ["ProcessPlace", "Siblings", "merge_expositions"]

_LOGGER = logging.getLogger(__name__)

_ASK_SECONDS = 1.0
"""How long the scraped process waits for a sibling's exposition."""
_END = b"# end of this process's metrics\n"
"""The last line a process sends its sibling (a comment to the parser): without it, the text
was cut short."""
_LEAST = frozenset({"speechgw_backend_ready", "speechgw_store_up"})
_SAME = frozenset({"speechgw_build_info"})


class ProcessPlace:
    """Which of the ``count`` processes this one is (``index``, from 0), where the processes
    find each other (``folder``, the parent's, mode 0700: no other user can connect, or take
    a socket's name), which process is their parent (``parent``), and how this one tells it
    that it is serving (``ready``)."""

    def __init__(
        self, index: int, count: int, folder: Path, parent: int, ready: Callable[[], None]
    ) -> None:
        self.index = index
        self.count = count
        self.folder = folder
        self.parent = parent
        self.ready = ready

    def socket_path(self, index: int) -> Path:
        return self.folder / f"{index}.sock"


class Siblings:
    """Serves this process's metrics to its siblings, and gathers theirs for a scrape."""

    def __init__(self, place: ProcessPlace, registry: CollectorRegistry) -> None:
        self.place = place
        self._registry = registry
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        """Serve this process's exposition to the others (on the event loop: one is asked
        for only when one of them is scraped)."""
        path = self.place.socket_path(self.place.index)
        path.unlink(missing_ok=True)  # left by the process this one replaces
        self._server = await asyncio.start_unix_server(self._answer, path=str(path))

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(generate_latest(self._registry) + _END)
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self.place.socket_path(self.place.index).unlink(missing_ok=True)
            if _ended(self.place.parent):
                # the parent was killed (when it stops, it removes the folder itself), so the
                # last process to end removes it (the others' sockets keep it until then)
                with contextlib.suppress(OSError):
                    self.place.folder.rmdir()

    async def exposition(self) -> bytes:
        """Every process's metrics as one registry's: this one's and those of the siblings
        that answer."""
        own = generate_latest(self._registry)
        others = [i for i in range(self.place.count) if i != self.place.index]
        found = await asyncio.gather(*(self._ask(i) for i in others))
        return merge_expositions([own, *(text for text in found if text is not None)])

    async def _ask(self, index: int) -> bytes | None:
        try:
            async with asyncio.timeout(_ASK_SECONDS):
                reader, writer = await asyncio.open_unix_connection(
                    str(self.place.socket_path(index))
                )
                try:
                    text = await reader.read()
                finally:
                    writer.close()
        except (OSError, TimeoutError):  # not serving yet, or gone: left out of this scrape
            _LOGGER.debug("metrics of process %d: no answer", index)
            return None
        if not text.endswith(_END):  # it ended while it wrote: its counts would be partial
            return None
        return text


def _ended(pid: int) -> bool:
    """Whether process ``pid`` has ended (a zombie counts). Not ``os.getppid()``: a child is
    told of its parent's death (``PR_SET_PDEATHSIG``) when the thread that started it ends,
    and until the parent's last thread has, the child's parent is still that process."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def merge_expositions(texts: list[bytes]) -> bytes:
    """The Prometheus text expositions ``texts`` as one: the families in the order first
    seen, each sample combined across the texts (summed, but for the gauges named above)."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text.decode("utf-8")):
            if family.name not in families:
                families[family.name] = Metric(family.name, family.documentation, family.type)
                values[family.name] = {}
            combine = _combiner(family.name)
            seen = values[family.name]
            for sample in family.samples:
                key = (sample.name, tuple(sample.labels.items()))
                old = seen.get(key)
                seen[key] = sample.value if old is None else combine(old, sample.value)
    for name, family in families.items():
        for (sample_name, labels), value in values[name].items():
            family.add_sample(sample_name, dict(labels), value)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(list(families.values())))
    return generate_latest(registry)


def _combiner(family: str) -> Callable[[float, float], float]:
    if family in _LEAST or family.endswith("_created"):
        return min
    if family in _SAME:
        return max
    return _add


def _add(a: float, b: float) -> float:
    return a + b


class _Fixed(Collector):
    """Families already gathered, for :func:`generate_latest` to write out."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families
