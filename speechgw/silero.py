"""Silero VAD over an utterance as it grows: a second opinion where webrtcvad hears only speech.

webrtcvad judges each frame by its spectrum, so steady noise (a fan, traffic, line hiss) from
about -30 dBFS on is speech to it and the pauses in a stream go unheard (BENCHMARKS, "The
segmenter in quiet and in noise"). Silero VAD, a small neural model, is not fooled by it, but
alone it cuts clean speech finer than webrtcvad and costs more CPU, so the segmenter asks it
only inside utterances that have run long (``streaming.silero_vad_after_seconds``).

The Whisper backend asks it once more (:func:`speech_windows`), over a whole utterance, where
Whisper rates a stream's utterance a little more likely not to be speech than to be: a short
word said briskly ("Wrong.", "Stop.") is rated so as often as a breath it wrote words into,
and Silero tells the two apart.

The model is the ONNX file faster-whisper ships and runs for its own ``vad_filter``
(Silero VAD v6, 16 kHz, 32 ms windows), through the onnxruntime it already depends on: no
download, no new package. The recurrent state and the 64 samples of context before each
window are carried from call to call, so feeding an utterance in pieces gives the same
probabilities as faster-whisper computes over the whole of it.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

__all__ = ["WINDOW", "SileroListener", "load", "speech_count", "speech_windows"]

WINDOW = 512
"""Samples per Silero window at 16 kHz (32 ms)."""
_CONTEXT = 64
_ON, _OFF = 0.5, 0.35  # faster-whisper's thresholds: speech above 0.5, until below 0.35


@functools.cache
def load() -> Any:
    """The ONNX session of faster-whisper's Silero model, loaded once per process (its run is
    thread-safe, so every stream shares it). The server calls it at startup when streams
    will use it, so that no stream waits on the load and a broken install fails at once."""
    from faster_whisper.vad import get_vad_model

    return get_vad_model().session


def speech_windows(samples: np.ndarray) -> int:
    """How many 32 ms windows of these 16 kHz samples Silero rates as speech (above 0.5): a
    second opinion on a whole utterance, where Whisper doubts that it holds speech."""
    return speech_count(SileroListener().feed(np.asarray(samples, dtype=np.float32)))


def speech_count(probabilities: np.ndarray) -> int:
    """How many of these windows' speech probabilities Silero's own line (0.5) calls speech."""
    return int(np.count_nonzero(probabilities > _ON))


class SileroListener:
    """Silero's speech decision for each 32 ms window of the audio fed to it, and how long the
    current stretch without speech has lasted."""

    def __init__(self) -> None:
        self._session = load()
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(_CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)  # less than one window
        self._speaking = False
        self.speech_windows = 0
        """Windows heard as speech so far."""
        self.quiet_windows = 0
        """Windows without speech since the last one with it."""
        self.windows = 0
        """Windows heard so far."""

    @property
    def quiet_since(self) -> int:
        """Where the current stretch without speech began, in samples from the first fed."""
        return (self.windows - self.quiet_windows) * WINDOW

    def feed(self, samples: np.ndarray) -> np.ndarray:
        """Take the next 16 kHz float32 samples; one model call for all the windows they
        complete. Returns those windows' speech probabilities."""
        if len(self._pending):
            samples = np.concatenate((self._pending, samples))
        whole = len(samples) // WINDOW * WINDOW
        self._pending = samples[whole:]
        if not whole:
            return np.zeros(0, dtype=np.float32)
        windows = samples[:whole].reshape(-1, WINDOW)
        contexts = np.concatenate((self._context[None, :], windows[:-1, -_CONTEXT:]))
        self._context = windows[-1, -_CONTEXT:].copy()
        batch = np.concatenate((contexts, windows), axis=1)
        out, self._h, self._c = self._session.run(
            None, {"input": batch, "h": self._h, "c": self._c}
        )
        probabilities = out.reshape(-1)
        self.windows += len(probabilities)
        for probability in probabilities:
            self._speaking = probability > (_OFF if self._speaking else _ON)
            if self._speaking:
                self.speech_windows += 1
                self.quiet_windows = 0
            else:
                self.quiet_windows += 1
        return probabilities
