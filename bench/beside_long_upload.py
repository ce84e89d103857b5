#!/usr/bin/env python3
"""How long a stream's final and a short request take while a long upload is being decoded.

One ``speechgw serve`` on tiny.en with the Whisper backend's CPU defaults (one model worker,
CTranslate2's threads), a 5-minute recording (the three NASA podcast parts of ../shared/audio,
294 s; espeak-ng sentences repeated without it) sent through the OpenAI API, and, from 3 s
after the upload, ``--streams`` streams one after the other (2 s apart), each sending one
espeak-ng sentence and 1.5 s of silence at once, then ``{"type": "end"}``, then the same
sentence as a short upload of its own. Reported: each stream's reply time after its end
message and the short upload's time to answer (and whether the long upload was still
decoding), the long upload's time to answer, and the same with no long upload beside them.
Then, in this process, how long each ``generate`` call of the long upload takes (one per 30 s
window): the most a final or a short request should wait for the upload.

    python bench/beside_long_upload.py [--streams 3] [--runs 2]

With ``--live``: instead, one stream at real time with interim results, the six espeak-ng
test sentences 1.5 s apart (about 40 s), from 3 s after the upload (and alone, and the upload
alone): the interims it got while the upload decoded, the longest wait for a text while its
sentences were said (interim or final), its finals' time after each sentence's end, and the
upload's time to answer. ``--model base`` for the shipped default's model.

With ``--steady N``: instead of the streams, N clients that send the short upload one after
another for ``--steady-seconds`` (60), from 3 s after the long upload: the model is never
free of short requests meanwhile. Reported: the long upload's time to answer (and whether it
came while the short ones still flowed), alone and beside them, and the short ones' times.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import subprocess
import threading
import time
import urllib.request
import wave
from pathlib import Path

from _common import (
    NASA_PODCAST,
    in_process_model,
    pcm16k,
    served,
    tempdir,
    whisper_gateway_config,
)
from websockets.sync.client import connect

from tests.client import multipart_upload

SENTENCE = "The train to London leaves from platform number four."


def wav(pcm: bytes, path: Path) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm)
    return path


def recording(work: Path) -> bytes:
    """The 5-minute upload, as a 16 kHz WAV file's bytes."""
    from tests import speech

    if all(p.exists() for p in NASA_PODCAST):
        pcm = b"".join(pcm16k(p).tobytes() for p in NASA_PODCAST)
    else:
        parts = [speech.speak(t, work / f"{n}.wav") for n, t in speech.SENTENCES.items()]
        joined = speech.concat(parts * 12, work / "sentences.wav", silence_seconds=1.0)
        pcm = pcm16k(joined)[: 300 * 16000].tobytes()
    return wav(pcm, work / "upload.wav").read_bytes()


def utterance(work: Path) -> bytes:
    """The stream's sentence (espeak-ng) and 1.5 s of silence, as 16 kHz samples."""
    spoken = work / "sentence.wav"
    subprocess.run(["espeak-ng", "-w", str(spoken), SENTENCE], check=True)
    return pcm16k(spoken).tobytes() + bytes(2 * 24000)


def final_after_end(url: str, pcm: bytes) -> tuple[float, str]:
    """One stream: the sentence in 100 ms messages at once, then end; (seconds from the end
    message to the reply, the reply)."""
    with connect(f"{url}/api/core/google/asr", open_timeout=30, ping_interval=None) as ws:
        ws.recv(timeout=30)
        for i in range(0, len(pcm), 3200):
            ws.send(json.dumps({"audio": base64.b64encode(pcm[i : i + 3200]).decode()}))
        sent = time.monotonic()
        ws.send(json.dumps({"type": "end"}))
        reply = json.loads(ws.recv(timeout=900))
        return time.monotonic() - sent, reply.get("asr_reply", str(reply))


def answer_time(url: str, audio: bytes) -> float:
    """Seconds from sending ``audio`` through the OpenAI API to its whole answer."""
    body, kind = multipart_upload(audio)
    http = url.replace("ws://", "http://", 1)
    headers = {"Content-Type": kind}
    request = urllib.request.Request(f"{http}/v1/audio/transcriptions", body, headers)
    started = time.monotonic()
    with urllib.request.urlopen(request, timeout=3600) as response:
        response.read()
    return time.monotonic() - started


def run(url: str, upload: bytes | None, pcm: bytes, short: bytes, streams: int) -> None:
    done = threading.Event()
    took: list[float] = []

    def send_upload() -> None:
        assert upload is not None
        took.append(answer_time(url, upload))
        done.set()

    uploader = threading.Thread(target=send_upload) if upload is not None else None
    if uploader is not None:
        uploader.start()
        time.sleep(3)
    for n in range(streams):
        beside = uploader is not None and not done.is_set()
        seconds, reply = final_after_end(url, pcm)
        where = "while the upload decoded" if beside else "with no upload under way"
        print(f"  stream {n}: final {seconds:.2f} s after its end, {where}: {reply!r}")
        time.sleep(2)
    beside = uploader is not None and not done.is_set()
    seconds = answer_time(url, short)
    where = "while the upload decoded" if beside else "with no upload under way"
    print(f"  a {len(short) / 32000:.1f} s upload answered after {seconds:.2f} s, {where}")
    if uploader is not None:
        uploader.join()
        print(f"  upload answered after {took[0]:.1f} s")


def run_steady(url: str, upload: bytes, short: bytes, clients: int, seconds: float) -> None:
    """The long upload beside ``clients`` clients that send ``short`` back to back for
    ``seconds``."""
    import statistics

    alone = answer_time(url, upload)
    print(f"  the {len(upload) / 32000:.0f} s upload alone: answered after {alone:.1f} s")
    stop, times, beside = threading.Event(), [], []
    took: list[float] = []

    def client() -> None:
        while not stop.is_set():
            seconds = answer_time(url, short)
            (times if took else beside).append(seconds)

    uploader = threading.Thread(target=lambda: took.append(answer_time(url, upload)))
    uploader.start()
    time.sleep(3)
    started = time.monotonic()
    flow = [threading.Thread(target=client) for _ in range(clients)]
    for thread in flow:
        thread.start()
    uploader.join(timeout=seconds)
    flowing = not uploader.is_alive() and time.monotonic() - started < seconds
    time.sleep(max(0.0, started + seconds - time.monotonic()))  # the flow lasts its seconds
    stop.set()
    for thread in flow:
        thread.join()
    uploader.join()
    where = "while the short ones still came" if flowing else "after the short ones stopped"
    print(f"  beside them: answered after {took[0]:.1f} s, {where}")
    print(f"  short uploads ({clients} clients for {seconds:.0f} s):")
    for name, some in [("while the long one decoded", beside), ("after it", times)]:
        if len(some) < 2:
            print(f"    {name}: {len(some)}")
            continue
        p95 = statistics.quantiles(some, n=20)[18]
        print(
            f"    {name}: {len(some)}, p50 {statistics.median(some):.2f} s, p95 {p95:.2f} s, "
            f"max {max(some):.2f} s"
        )


def live_speech(work: Path) -> tuple[bytes, list[tuple[float, float]]]:
    """The six test sentences 1.5 s apart (1 s of silence before, 2 s after), as 16 kHz PCM,
    and each sentence's (start, end) in seconds."""
    import numpy as np

    from speechgw.audio import to_pcm16
    from tests import speech

    voices = {n: speech.speak(t, work / f"live-{n}.wav") for n, t in speech.SENTENCES.items()}
    audio, spans = speech.sentences_apart(voices, list(voices), 1.5, work)
    pcm = np.concatenate([np.zeros(16000, np.float32), audio, np.zeros(32000, np.float32)])
    seconds = [((a + 16000) / 16000, (b + 16000) / 16000) for a, b in spans]
    return to_pcm16(pcm).tobytes(), seconds


def run_live(url: str, upload: bytes, pcm: bytes, spans: list[tuple[float, float]]) -> None:
    """The live stream alone, the upload alone, then both: the upload first, the stream 3 s
    after."""
    import statistics

    from tests.streaming_client import StreamResult, stream_pcm

    def report(result: StreamResult, upload_ended: float | None = None) -> None:
        """``upload_ended``: when the upload beside it was answered (``time.monotonic()``)."""
        texts = [(kind, at - result.started) for kind, _, at in result.events]
        # the longest wait for a new text while a sentence was being said
        waits = []
        for a, b in spans:
            times = [a] + [t for _, t in texts if a < t < b] + [b]
            waits.append(max(y - x for x, y in itertools.pairwise(times)))
        finals = [t for k, t in texts if k == "reply"]
        after = [f - b for f, (_, b) in zip(finals, spans, strict=False)]
        beside = ""
        if upload_ended is not None:
            count = sum(
                1 for kind, _, at in result.events if kind == "interim" and at < upload_ended
            )
            beside = f" ({count} while the upload decoded)"
        print(
            f"  stream: {len(result.replies)} finals, {len(result.interims)} interims{beside}"
            + f"; longest wait for a text while speaking: p50 {statistics.median(waits):.2f} s,"
            f" max {max(waits):.2f} s; finals after each sentence's end: p50"
            f" {statistics.median(after):.2f} s, max {max(after):.2f} s"
        )

    def live() -> StreamResult:
        return stream_pcm(url, pcm, 16000, realtime=1.0, interim_results=True)

    print("the stream alone:")
    report(live())
    alone = answer_time(url, upload)
    print(f"the {len(upload) / 32000:.0f} s upload alone: answered after {alone:.1f} s")
    print("both:")
    took: list[float] = []
    uploader = threading.Thread(target=lambda: took.append(answer_time(url, upload)))
    began = time.monotonic()
    uploader.start()
    time.sleep(3)
    result = live()
    uploader.join()
    report(result, upload_ended=began + took[0])
    print(f"  upload answered after {took[0]:.1f} s (alone {alone:.1f} s)")


def window_calls(upload: bytes) -> None:
    """The long upload decoded in this process as the gateway decodes it (tiny.en, CTranslate2's
    threads, beam 5, English), each ``generate`` call of the model timed."""
    import statistics

    import numpy as np

    model = in_process_model("tiny.en", threads=0)
    inner, seconds = model.model, []

    class Timed:
        def __getattr__(self, name: str) -> object:
            return getattr(inner, name)

        def generate(self, *args: object, **kwargs: object) -> object:
            started = time.perf_counter()
            try:
                return inner.generate(*args, **kwargs)
            finally:
                seconds.append(time.perf_counter() - started)

    model.model = Timed()
    audio = np.frombuffer(upload[44:], dtype=np.int16).astype(np.float32) / 32768
    segments, _ = model.transcribe(audio, language="en", beam_size=5)
    list(segments)
    print(
        f"in-process: {len(seconds)} generate calls for the upload, "
        f"{min(seconds):.2f}-{max(seconds):.2f} s (median {statistics.median(seconds):.2f} s)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=3)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--steady", type=int, default=0, metavar="N")
    parser.add_argument("--steady-seconds", type=float, default=60.0)
    parser.add_argument("--live", action="store_true", help="a live stream with interims")
    parser.add_argument("--model", default="tiny.en")
    args = parser.parse_args()
    with tempdir() as folder:
        work = Path(folder)
        upload, pcm = recording(work), utterance(work)
        short = wav(pcm, work / "short.wav").read_bytes()
        config = whisper_gateway_config(work / "gateway.yaml", model=args.model)
        with served(config) as url:
            final_after_end(url, pcm)  # warm up
            if args.live:
                print(f"a live stream beside a long upload ({args.model}):")
                run_live(url, upload, *live_speech(work))
                return 0
            if args.steady:
                print(f"a long upload beside {args.steady} clients of short uploads:")
                run_steady(url, upload, short, args.steady, args.steady_seconds)
                return 0
            print("streams alone:")
            run(url, None, pcm, short, args.streams)
            for n in range(args.runs):
                print(f"beside a {len(upload) / 32000:.0f} s upload, run {n + 1}:")
                run(url, upload, pcm, short, args.streams)
        window_calls(upload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
