"""Whisper's log-mel features of a recording, its STFT taken a block of frames at a time.

faster-whisper computes the features of a whole recording before it decodes it, in one STFT:
for a 29-minute upload that call alone peaked at 1,786 MB (the recording's windowed frames,
its complex spectrum and a copy, its power spectrum, each in full at once), about 1 GB per 16
minutes of audio for every job decoding at once. :class:`BlockwiseFeatureExtractor` takes the
STFT 3,000 frames (30 s) at a time, straight from the waveform, into one power-spectrum array,
then the mel product over all of it at once: 196 MB for those 29 minutes (the power spectra,
140 MB, and the features, 56 MB), in an eighth of the time, and the features are faster-
whisper's bit for bit (a product taken per block rounds differently, and one rounding step in
the features of a long recording changed words of its decode). BENCHMARKS.md has the figures.

Installed on a loaded model as its ``feature_extractor``; faster-whisper's ``transcribe``,
language detection and word alignment use it unchanged.
"""

from __future__ import annotations

import numpy as np
from faster_whisper.feature_extractor import FeatureExtractor
from numpy.lib.stride_tricks import as_strided

__all__ = ["BlockwiseFeatureExtractor"]

BLOCK_FRAMES = 3000
"""Frames whose STFT is taken at a time: one Whisper window (30 s), some 36 MB of temporaries."""


class BlockwiseFeatureExtractor(FeatureExtractor):
    """faster-whisper's :class:`FeatureExtractor` (same constructor, same mel filters, same
    output) holding 281 floats per 10 ms of audio (its power spectrum and its features), not
    several copies of the whole recording's STFT."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        # the periodic Hann window faster-whisper builds on every call
        self._window = np.hanning(self.n_fft + 1)[:-1].astype(np.float32)

    def __call__(
        self, waveform: np.ndarray, padding: int = 160, chunk_length: int | None = None
    ) -> np.ndarray:
        half = self.n_fft // 2
        if len(waveform) + padding <= half:
            # too short to reflect at its edges as the STFT centres its frames: as faster-whisper
            return super().__call__(waveform, padding, chunk_length)
        if chunk_length is not None:
            # as faster-whisper: the window length a caller asks for stays set
            self.n_samples = chunk_length * self.sampling_rate
            self.nb_max_frames = self.n_samples // self.hop_length
        waveform = np.ascontiguousarray(waveform, dtype=np.float32)
        # frames of 400 samples every 160, centred (the STFT's last frame dropped, as
        # faster-whisper drops it); each frame's power spectrum as faster-whisper computes it
        count = (len(waveform) + padding) // self.hop_length
        power = np.empty((count, self.n_fft // 2 + 1), dtype=np.float32)
        for start in range(0, count, BLOCK_FRAMES):
            stop = min(start + BLOCK_FRAMES, count)
            frames = self._frames(waveform, padding, start, stop)
            spectrum = np.fft.rfft(frames * self._window, axis=-1)
            power[start:stop] = np.abs(spectrum.astype(np.complex64)) ** 2
        # one product over the whole power spectrum, laid out as faster-whisper's: taken a
        # block at a time, OpenBLAS rounds a quarter of the frames differently (its own
        # blocking), and that alone changed words of a 29-minute decode
        features = self.mel_filters @ power.T
        del power
        np.clip(features, 1e-10, None, out=features)
        np.log10(features, out=features)
        np.maximum(features, features.max() - 8.0, out=features)
        features += 4.0
        features /= 4.0
        return features

    def _frames(self, waveform: np.ndarray, padding: int, start: int, stop: int) -> np.ndarray:
        """Frames ``start`` to ``stop`` as rows: views of the waveform itself, but for a block
        at either end, whose samples are copied from the centred signal (the waveform, then
        ``padding`` zeros, reflected by half a frame at each end as ``np.pad`` reflects)."""
        hop, half = self.hop_length, self.n_fft // 2
        # the block's samples on the waveform's clock
        first, last = start * hop - half, (stop - 1) * hop + half
        if first >= 0 and last <= len(waveform):
            samples = waveform[first:last]
        else:
            length = len(waveform) + padding
            index = np.abs(np.arange(first, last))  # reflected at the start
            index = np.where(index >= length, 2 * (length - 1) - index, index)  # and the end
            samples = np.zeros(last - first, dtype=np.float32)
            inside = index < len(waveform)  # the rest is the padding's zeros
            samples[inside] = waveform[index[inside]]
        size = samples.itemsize
        return as_strided(samples, (stop - start, self.n_fft), (hop * size, size), writeable=False)
