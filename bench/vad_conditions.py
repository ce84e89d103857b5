#!/usr/bin/env python3
"""Where the streaming segmenter (webrtcvad) stops finding speech, or stops finding pauses.

Runs the gateway's :class:`~speechgw.segmenter.Segmenter` with the default streaming settings
on real speech from ``../shared/audio`` (no server, no model): first the recordings made
quieter, 0 to -50 dB, counting the utterances and the seconds of audio they keep; then
``faster-whisper/jfk.flac`` (11 s, pauses between its sentences) between 3 s and 5 s of
silence, under white and brown noise (integrated white noise, high-passed: fans, traffic) at
-60 to -25 dBFS, listing the utterances' lengths. One utterance of the whole length means the
pauses were heard as speech: its final would come only at ``max_utterance_seconds``.

``--alternatives`` compares, on clean and noisy recordings, how webrtcvad cuts them with how
two other speech decisions would, each put in its place frame by frame (tried; not kept):
an energy gate over a tracked noise floor, and Silero VAD v6 as faster-whisper ships it; and
prints what the gateway's own Silero listener (``streaming.silero_vad_after_seconds``) costs.

``--microphones`` counts the cuts of every English recording with a cheap microphone's DC
offset or mains hum added, or heard through a room (BENCHMARKS.md, "A cheap microphone", "A
room's reverberation").

    python bench/vad_conditions.py [--alternatives | --microphones]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
from _common import SHARED_AUDIO, segmented

from speechgw.audio import to_16k_mono, to_pcm16
from speechgw.config import StreamingConfig
from speechgw.media import decode_media
from speechgw.segmenter import Segmenter

RECORDINGS = [
    "faster-whisper/jfk.flac",
    "librispeech-Speech2Text/1089-134686-0000.flac",
    "transcription-benchmark/real-world-nasa-podcast-science-in-space_part1.mp3",
]


def load(name: str, seconds: float = 60.0) -> np.ndarray:
    samples, rate = decode_media((SHARED_AUDIO / name).read_bytes(), 3600)
    return to_16k_mono(samples, rate)[: int(seconds * 16000)].astype(np.float32)


def utterances(samples: np.ndarray, config: StreamingConfig | None = None) -> list[float]:
    """The seconds of each utterance the segmenter cuts from ``samples`` fed in 100 ms chunks."""
    return [len(u) / 16000 for u in segmented(samples, config)]


def dbfs(samples: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(samples**2))))


Decision = Callable[[int, np.ndarray, bool], bool]
"""Whether a frame is speech, from its index, its int16 samples and webrtcvad's answer."""


def utterances_by(samples: np.ndarray, decide: Decision) -> list[float]:
    """The seconds of each utterance the segmenter cuts when ``decide`` says which frames are
    speech (fed frame by frame through its private step: this is an experiment on it)."""
    segmenter = Segmenter(StreamingConfig())
    pcm = to_pcm16(samples)
    size = segmenter._frame
    found = []
    for index, start in enumerate(range(0, len(pcm) // size * size, size)):
        frame = pcm[start : start + size]
        webrtc = segmenter._vad.is_speech(frame.tobytes(), 16000)
        closed = segmenter._step(frame, decide(index, frame, webrtc))
        if closed is not None:
            found.append(closed)
    found += segmenter.flush()
    return [len(u) / 16000 for u in found]


def energy_gate(margin_db: float = 9.0, rise_db: float = 0.1) -> Decision:
    """webrtcvad's speech only where the frame is ``margin_db`` over a noise floor that follows
    the quietest frames down at once and rises ``rise_db`` a frame (3.3 dB a second)."""
    floor = np.inf

    def decide(_index: int, frame: np.ndarray, webrtc: bool) -> bool:
        nonlocal floor
        energy = float(10 * np.log10(np.mean(frame.astype(np.float32) ** 2) + 1.0))
        floor = min(energy, floor + rise_db)
        return webrtc and energy > floor + margin_db

    return decide


def silero(
    model: Callable[[np.ndarray], np.ndarray], samples: np.ndarray, threshold: float = 0.5
) -> tuple[Decision, float, float]:
    """Silero VAD v6's speech (its probability of the 32 ms window holding the frame's middle
    over ``threshold``), the model's highest probability on ``samples``, and the CPU seconds
    it took."""
    whole = len(samples) // 512 * 512
    started = time.process_time()
    probabilities = model(samples[:whole].astype(np.float32)).reshape(-1)
    cpu = time.process_time() - started

    def decide(index: int, frame: np.ndarray, _webrtc: bool) -> bool:
        window = (index * len(frame) + len(frame) // 2) // 512
        return window < len(probabilities) and probabilities[window] > threshold

    return decide, float(probabilities.max()), cpu


def alternatives() -> None:
    from faster_whisper.vad import get_vad_model

    model = get_vad_model()
    cpu_seconds = audio_seconds = 0.0
    print("| recording | webrtcvad (as now) | energy gate | Silero v6 (peak probability) |")
    print("|---|---|---|---|")
    rng = np.random.default_rng(0)
    second = np.zeros(16000, np.float32)
    for name, noisy in (
        (RECORDINGS[0], True),
        (RECORDINGS[1], True),
        ("speech_recognition/english.wav", False),
        (RECORDINGS[2], False),
        ("transcription-benchmark/real-world-fountain-hughes-interview.mp3", False),
    ):
        clean = np.concatenate([second, load(name, 90.0), second])
        noise = rng.normal(0, 1, len(clean)).astype(np.float32)
        for noise_db in (None, -35, -30, -25) if noisy else (None,):
            audio = clean if noise_db is None else clean + noise * np.float32(10 ** (noise_db / 20))
            by_silero, peak, cpu = silero(model, audio)
            cpu_seconds += cpu
            audio_seconds += len(audio) / 16000
            cuts = [
                utterances(audio),
                utterances_by(audio, energy_gate()),
                utterances_by(audio, by_silero),
            ]
            shown = [f"{len(c)}: {sum(c):.1f} s" for c in cuts]
            label = name.split("/")[-1] + ("" if noise_db is None else f" + white {noise_db} dBFS")
            print(f"| {label} | {shown[0]} | {shown[1]} | {shown[2]} ({peak:.2f}) |")
    print(f"\nSilero: {1000 * cpu_seconds / audio_seconds:.2f} ms of CPU per second of audio")
    listener_cost(clean)


def listener_cost(audio: np.ndarray) -> None:
    """What ``streaming.silero_vad_after_seconds`` costs: the gateway's SileroListener fed
    ``audio`` 120 ms at a time (four 30 ms frames: how the segmenter feeds it), and once 3 s
    at a time (when it starts listening 3 s into an utterance)."""
    from speechgw.silero import SileroListener

    for step in (1920, 48000):
        listener = SileroListener()
        listener.feed(audio[:step])  # the first call sets onnxruntime up
        started, calls = time.process_time(), 0
        for i in range(0, len(audio), step):
            listener.feed(audio[i : i + step])
            calls += 1
        cpu = time.process_time() - started
        print(
            f"SileroListener, {step / 16:.0f} ms a call: {1000 * cpu / (len(audio) / 16000):.2f} "
            f"ms of CPU per second of audio, {1000 * cpu / calls:.3f} ms a call"
        )


MICROPHONES = [
    [], ["dc=0.01"], ["dc=0.05"], ["hum=50@-45"], ["hum=60@-40"], ["room=0.3"], ["room=0.6"],
    ["room=1.0"],
]  # fmt: skip
"""The faults of ``--microphones``, as ``bench/stream_accuracy.py --microphone`` adds them."""


def microphones() -> None:
    """How a cheap microphone's DC offset or mains hum, or a room, moves the cuts: the English
    recordings of ../shared/audio (up to 300 s each) and jfk.flac after a second of silence, cut
    with each fault of :data:`MICROPHONES`, webrtcvad judging the stream less its DC offset (as
    shipped: ``vad_remove_dc_offset``) and as sent; the mean wait is how long a second of
    speech waits for its utterance's end (half an utterance's length, weighted by length).
    jfk.flac is cut twice: after a second of digital silence, and under a -60 dBFS hiss from
    its first sample (a live microphone's own noise: webrtcvad adapts its noise model to what
    comes first, and after digital silence it takes a faint hum for speech)."""
    from stream_accuracy import recordings, with_microphone

    names = [r["file"] for r in recordings(multilingual=False)]
    audio = {name: load(name, 300) for name in names}
    jfk = np.concatenate([np.zeros(16000, np.float32), load(RECORDINGS[0])])
    hiss = np.random.default_rng(0).normal(0, 1, len(jfk)).astype(np.float32)
    hissing = jfk + hiss * np.float32(10 ** (-60 / 20))
    print(
        "| microphone | webrtcvad judges | utterances | mean wait s | longest s "
        "| jfk.flac after 1 s of silence | the same under -60 dBFS hiss |"
    )
    print("|---|---|---|---|---|---|---|")
    for faults in MICROPHONES:
        for filtered in (True, False):
            config = StreamingConfig(vad_remove_dc_offset=filtered)
            heard = [with_microphone(audio[name], faults) for name in names]
            cut = [s for samples in heard for s in utterances(samples, config)]
            wait = sum(s * s / 2 for s in cut) / sum(cut)
            jfk_cuts = [
                ", ".join(f"{s:.1f}" for s in utterances(with_microphone(x, faults), config))
                for x in (jfk, hissing)
            ]
            print(
                f"| {', '.join(faults) or 'as recorded'} | {'filtered' if filtered else 'as sent'} "
                f"| {len(cut)} | {wait:.2f} | {max(cut):.1f} | {' | '.join(jfk_cuts)} |",
                flush=True,
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alternatives", action="store_true")
    parser.add_argument(
        "--microphones", action="store_true",
        help="count the cuts of every English recording with a DC offset or mains hum added, "
        "or through a room",
    )  # fmt: skip
    args = parser.parse_args()
    if args.alternatives:
        alternatives()
        return 0
    if args.microphones:
        microphones()
        return 0
    print("| recording (first 60 s) | level (RMS dBFS) | utterances | seconds kept |")
    print("|---|---|---|---|")
    for name in RECORDINGS:
        audio = load(name)
        for gain_db in (0, -10, -20, -30, -40, -50):
            quieter = audio * np.float32(10 ** (gain_db / 20))
            cut = utterances(quieter)
            print(
                f"| {name.split('/')[-1]} | {dbfs(quieter):.0f} | {len(cut)} | "
                f"{sum(cut):.1f} of {len(audio) / 16000:.1f} |"
            )
    jfk = load(RECORDINGS[0])
    padded = np.concatenate([np.zeros(3 * 16000, np.float32), jfk, np.zeros(5 * 16000, np.float32)])
    rng = np.random.default_rng(0)
    white = rng.normal(0, 1, len(padded)).astype(np.float32)
    brown = np.cumsum(white)
    brown -= np.convolve(brown, np.ones(400) / 400, mode="same")  # high-pass below ~40 Hz
    brown = (brown / np.std(brown)).astype(np.float32)
    print(f"\njfk.flac at {dbfs(jfk):.0f} dBFS, with 3 s of silence before and 5 s after:\n")
    print("| noise (RMS dBFS) | white: utterances (s) | brown: utterances (s) |")
    print("|---|---|---|")
    for noise_db in (None, -60, -50, -45, -40, -35, -30, -25):
        row = []
        for kind in (white, brown):
            noisy = (
                padded if noise_db is None else padded + kind * np.float32(10 ** (noise_db / 20))
            )
            row.append(", ".join(f"{s:.1f}" for s in utterances(noisy)))
        print(f"| {'none' if noise_db is None else noise_db} | {row[0]} | {row[1]} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
