"""What the benchmark scripts share: a real ``speechgw serve`` process, and real speech."""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import wave
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from websockets.sync.client import connect

if TYPE_CHECKING:
    import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))  # the tests' helpers (speech, postgres) serve the benchmarks too
SHARED_AUDIO = REPO.parent / "shared" / "audio"


@dataclass
class Clip:
    name: str
    path: Path  # 16 kHz mono 16-bit WAV
    reference: str
    seconds: float

    def pcm(self) -> bytes:
        with wave.open(str(self.path), "rb") as w:
            return w.readframes(w.getnframes())


def english_clips(workdir: Path) -> list[Clip]:
    """The English recordings of ../shared/audio (real people), as 16 kHz WAV; espeak-ng
    sentences when that folder is absent."""
    clips = []
    manifest = SHARED_AUDIO / "MANIFEST.tsv"
    if manifest.exists():
        with open(manifest, encoding="utf-8") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                if row["language"] != "en" or "stereo" in row["file"] or "mp3" in row["file"]:
                    continue
                out = workdir / (row["file"].replace("/", "_") + ".wav")
                subprocess.run(
                    [
                        "sox",
                        str(SHARED_AUDIO / row["file"]),
                        "-r",
                        "16000",
                        "-c",
                        "1",
                        "-b",
                        "16",
                        str(out),
                    ],
                    check=True,
                    capture_output=True,
                )
                clips.append(
                    Clip(row["file"], out, row["reference_transcript"], float(row["duration_s"]))
                )
        return clips
    from tests import speech

    for name, text in speech.SENTENCES.items():
        raw = speech.speak(text, workdir / f"{name}.raw.wav")
        out = speech.convert(raw, workdir / f"{name}.wav", "-r", "16000")
        with wave.open(str(out)) as w:
            clips.append(Clip(name, out, text, w.getnframes() / 16000))
    return clips


def recordings(work: Path) -> list[Path]:
    """The clips joined in order into pieces of 10-30 s (16 kHz mono WAV files)."""
    pieces, current, seconds = [], [], 0.0
    for clip in english_clips(work):
        current.append(clip.path)
        seconds += clip.seconds
        if seconds >= 10:
            out = work / f"piece{len(pieces)}.wav"
            subprocess.run(["sox", *map(str, current), str(out)], check=True)
            pieces.append(out)
            current, seconds = [], 0.0
    return pieces


def normalise(text: str) -> list[str]:
    return re.findall(r"[\w']+", text.lower())


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(edit distance in words, reference length): the parts of a word error rate."""
    ref, hyp = normalise(reference), normalise(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1], len(ref)


class ServerURL(str):
    """A running server's ws:// base URL, which also knows the server's process ids."""

    pid: int
    pids: list[int]
    """The processes that serve: ``pid``, or with ``--processes`` its children."""

    def samples(self, metric: str) -> dict[str, float]:
        """The server's samples of one metric from ``/metrics``, by their label text
        (``outcome="used"``; "" for a metric without labels)."""
        http = self.replace("ws://", "http://", 1)
        with urllib.request.urlopen(f"{http}/metrics", timeout=10) as response:
            body = response.read().decode()
        found = re.finditer(rf"^{metric}(?:{{([^}}]*)}})? (\S+)$", body, re.M)
        return {labels or "": float(value) for labels, value in (m.groups() for m in found)}

    def early_finals(self, since: dict[str, int] | None = None) -> dict[str, int]:
        """``speechgw_early_finals_total`` by outcome (used, discarded, failed): all so far, or
        those after an earlier reading ``since``."""
        found = self.samples("speechgw_early_finals_total")
        before = since or {}
        return {
            o: int(found.get(f'outcome="{o}"', 0)) - before.get(o, 0)
            for o in ("used", "discarded", "failed")
        }

    def rss_mib(self) -> float:
        """The server processes' resident memory."""
        kib = 0
        for pid in self.pids:
            status = Path(f"/proc/{pid}/status").read_text()
            kib += next(
                int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")
            )
        return kib / 1024


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (``/proc``)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if parent == pid:
            found.append(int(stat.parent.name))
    return found


@contextmanager
def served(config: Path, processes: int = 1) -> Iterator[ServerURL]:
    """``speechgw serve --config config --processes N`` on a free port, once every process
    serves; yields its ws:// base URL."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "speechgw",
            "serve",
            "--config",
            str(Path(config).resolve()),  # the server runs in the repository, not here
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--processes",
            str(processes),
        ],
        cwd=REPO,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "SERVER_API_KEY": ""},
    )
    port: list[int] = []
    ready = threading.Event()
    said: list[str] = []  # what it wrote before it served, shown if it never does

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            found = re.search(r"Running on http://[\d.]+:(\d+)", line)
            if found:
                port.append(int(found.group(1)))
                if len(port) == processes:
                    ready.set()
            elif "ERROR" in line or "Traceback" in line:
                print(line, end="", file=sys.stderr)
            elif not ready.is_set():
                said.append(line)
        ready.set()  # it exited: stop waiting

    threading.Thread(target=read, daemon=True).start()
    try:
        if not ready.wait(180) or len(port) < processes:
            raise RuntimeError("the server did not start:\n" + "".join(said[-20:]))
        url = ServerURL(f"ws://127.0.0.1:{port[0]}")
        url.pid = process.pid
        url.pids = [process.pid] if processes == 1 else _children(process.pid)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=60)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every model benchmark takes alike: ``--model``, ``--device``,
    ``--compute-type`` and ``--audio`` (the GPU recipe's pieces)."""
    parser.add_argument("--model", default="tiny.en", help="tiny.en, base, or a model folder")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compute-type", default="int8")
    parser.add_argument("--audio", type=Path, help="folder of piece*.wav")


def settings(items: Sequence[str]) -> dict[str, object]:
    """``KEY=VALUE`` command-line settings as a config section's mapping, each value read as
    YAML (``vad_max_gain_db=0`` gives the number 0)."""
    import yaml

    return {key: yaml.safe_load(value) for key, value in (i.split("=", 1) for i in items)}


def whisper_gateway_config(
    path: Path,
    server: dict[str, object] | None = None,
    store: Path | None = None,
    **whisper: object,
) -> Path:
    """Write a config for ``speechgw serve`` with one whisper backend of these settings (and
    these ``server`` settings), limits far above any benchmark's load, and no store unless
    ``store`` names a SQLite file for the ledger; returns ``path``."""
    import yaml

    document = {
        "server": server or {},
        "backends": {"whisper": {"type": "whisper", **whisper}},
        "routing": [{"backend": "whisper"}],
        "store": {"path": None if store is None else str(store)},
        "limits": {"max_pending_jobs": 4096, "max_connections": 4096},
        "logging": {"level": "INFO"},  # served() waits for the "Running on" line
    }
    path.write_text(yaml.safe_dump(document))
    return path


def segmented(samples, config=None) -> list:
    """The utterances a stream of ``samples`` (16 kHz) is cut into: the gateway's segmenter,
    with ``config`` (a StreamingConfig; the defaults when None), fed 100 ms chunks as clients
    send them."""
    from speechgw.config import StreamingConfig
    from speechgw.segmenter import Segmenter

    segmenter = Segmenter(config or StreamingConfig())
    utterances = []
    for i in range(0, len(samples), 1600):
        utterances += segmenter.feed(samples[i : i + 1600])
    return utterances + segmenter.flush()


NASA_PODCAST = [
    SHARED_AUDIO / "transcription-benchmark" / f"real-world-nasa-podcast-science-in-space_{p}.mp3"
    for p in ("part1", "part2", "part3")
]
"""The NASA podcast's three consecutive parts in ../shared/audio: 294 s of conversation."""


def pcm16k(path: Path) -> np.ndarray:
    """Any file FFmpeg reads, as 16 kHz mono int16 samples, decoded by PyAV."""
    import av
    import numpy as np

    out = []
    with av.open(str(path)) as source:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=16000)
        for frame in [*source.decode(audio=0), None]:
            out += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    return np.concatenate(out)


def wav_bytes(pcm: bytes) -> bytes:
    """16 kHz mono 16-bit PCM as a WAV file's bytes (a batch frame, an upload)."""
    import io
    import wave

    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm)
    return out.getvalue()


def tempdir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="speechgw-bench-")


def in_process_model(name: str = "tiny.en", workers: int = 1, threads: int = 1):
    """faster-whisper in this process, set up as ``speechgw serve`` sets up its own: int8 on
    CPU, the same worker and thread counts as the bench config, and the same process settings
    (``server.retain_freed_memory_mib`` and ``server.blas_threads`` defaults), so that the
    baseline is the best this machine does, not one slowed by costs the gateway avoids."""
    from faster_whisper import WhisperModel
    from speechgw.backends.whisper import resolve_model

    from speechgw.tuning import limit_blas_threads, retain_freed_memory

    retain_freed_memory(1024)
    limit_blas_threads(1)
    return WhisperModel(
        resolve_model(name),
        device="cpu",
        compute_type="int8",
        cpu_threads=threads,
        num_workers=workers,
    )


@dataclass
class PairedRounds:
    """What :func:`paired_rounds` measured: per way of asking, each request's seconds; per way
    other than the baseline, each request's time over the baseline's for the same piece, and
    how often its text was the baseline's, and how many of the baseline's words it changed."""

    latency: dict[str, list[float]]
    ratios: dict[str, list[float]] = field(default_factory=dict)
    same: dict[str, int] = field(default_factory=dict)
    differing: dict[str, int] = field(default_factory=dict)
    words: int = 0
    """Words of the baseline's texts, all requests together."""
    total: int = 0
    """Requests per way."""

    def line(self, name: str, baseline: str) -> str:
        """The start of a way's report line: its median latency, and its median ratio to
        ``baseline``'s."""
        import statistics

        line = f"{name:9s} latency p50 {statistics.median(self.latency[name]):.3f} s"
        if name in self.ratios:
            line += f", ratio to {baseline} p50 {statistics.median(self.ratios[name]):.3f}"
        return line


def paired_rounds(
    calls: dict[str, Callable[[object], tuple[float, str | None]]],
    pieces: Sequence[object],
    runs: int,
    baseline: str,
    label: Callable[[int, object], str] = lambda i, _: f"piece {i}",
) -> PairedRounds:
    """Each piece sent each way (``calls``: name -> (seconds, text)), ``runs`` times, the ways'
    order rotating from piece to piece and run to run so that none always goes first on a
    warm or cold machine; prints a line per piece and returns the figures, each way compared
    with ``baseline`` on the same piece."""
    order = list(calls)
    others = [name for name in order if name != baseline]
    out = PairedRounds(
        latency={name: [] for name in order},
        ratios={name: [] for name in others},
        same=dict.fromkeys(others, 0),
        differing=dict.fromkeys(others, 0),
    )
    for run in range(runs):
        for i, piece in enumerate(pieces):
            shift = (run + i) % len(order)
            results = {name: calls[name](piece) for name in order[shift:] + order[:shift]}
            for name, (seconds, _) in results.items():
                out.latency[name].append(seconds)
            base_seconds, base_text = results[baseline]
            for name in others:
                seconds, text = results[name]
                out.ratios[name].append(seconds / base_seconds)
                out.same[name] += text == base_text
                out.differing[name] += word_errors(base_text or "", text or "")[0]
            out.words += len(normalise(base_text or ""))
            out.total += 1
            print(
                f"run {run + 1} {label(i, piece)}: "
                + ", ".join(f"{n} {results[n][0]:.3f} s" for n in order),
                flush=True,
            )
    return out


def sdk_transcribe(client, name: str, data: bytes, **fields) -> tuple[float, str]:
    """One ``POST /v1/audio/transcriptions`` through the official ``openai`` SDK's ``client``
    (English, ``whisper-1``, plus ``fields``): (seconds to the answer, its text)."""
    started = time.perf_counter()
    answer = client.audio.transcriptions.create(
        model="whisper-1", file=(name, data), language="en", **fields
    )
    return time.perf_counter() - started, answer.text


def gateway_transcribe(url: str, wav: bytes) -> tuple[float, str | None]:
    """One batch request as a client sees it: (seconds from connecting to the reply, the text,
    or None for an error reply)."""
    started = time.perf_counter()
    with connect(url + "/ws/transcribe", max_size=None, compression=None) as ws:
        ws.send(json.dumps({"type": "transcribe", "language": "en"}))
        ws.send(wav)
        reply = json.loads(ws.recv(timeout=600))
    return time.perf_counter() - started, reply.get("text")


def model_transcribe(model, audio) -> str:
    """In-process faster-whisper with the options the gateway uses (beam 5, English)."""
    segments, _ = model.transcribe(audio, language="en", beam_size=5)
    return "".join(s.text for s in segments).strip()


async def timed(n: int, concurrency: int, op) -> tuple[float, float]:
    """(operations per second, median ms) of ``n`` awaits of ``op()``, ``concurrency`` at once."""
    import asyncio
    import statistics

    latencies: list[float] = []

    async def worker(count: int) -> None:
        for _ in range(count):
            start = time.perf_counter()
            await op()
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker(n // concurrency) for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    return len(latencies) / elapsed, statistics.median(latencies) * 1000
