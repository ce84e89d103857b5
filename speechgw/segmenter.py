"""Live audio in pieces: a stateful resampler, a DC blocker and a webrtcvad utterance
segmenter (with Silero VAD's second opinion inside long utterances, where configured).

All are synchronous, allocation-light and I/O-free, so that the streaming driver can call them
per chunk on the event loop and they can be tested sample for sample. Silero's model runs in
the same call (0.17 ms per 100 ms of audio it hears: small enough not to hand to a thread).
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import webrtcvad
from scipy.signal import lfilter, resample_poly

from .audio import from_pcm16, sample_ratio, to_pcm16
from .config import StreamingConfig
from .jobs import SAMPLE_RATE
from .silero import WINDOW, SileroListener
from .turns import SpeechEdge

__all__ = ["CUT_SEARCH_PART", "DcBlocker", "Segmenter", "StreamResampler", "VadLevel"]

CUT_SEARCH_PART = 5
"""An utterance that reaches ``max_utterance_seconds`` is cut in its last 1/CUT_SEARCH_PART
(20-25 s of 25), at its quietest moment: a tenth did as well on the English recordings, a
third or a half cut earlier, at shorter utterances, and did worse (BENCHMARKS.md, "Utterances
with no pause"); a fifth leaves more room to find a real pause than a tenth."""


class VadLevel:
    """The gain that brings a quiet stream up to the level webrtcvad hears speech at, for the
    copy of each frame it judges (the audio decoded is left as it is).

    webrtcvad weighs energy, so a speaker 10-30 dB quieter than usual has the softer parts of
    words taken for silence: utterances end inside sentences and words are lost, while Whisper
    hears the quiet audio as well as the loud (BENCHMARKS.md, "A quiet speaker"). The gain
    raises the loudest 30 ms frame of the last ``PEAK_SECONDS`` to ``PEAK_DBFS`` at most, and
    the quietest 300 ms of the last ``FLOOR_SECONDS`` to ``FLOOR_DBFS`` at most, so that noise
    (a quiet line's hiss, with nobody speaking) is never raised to where webrtcvad takes it
    for speech (about -30 dBFS). Over windows this long the gain stays steady while someone
    speaks: one that followed each word raised the pauses between them too. A stream as loud
    as the recordings of ../shared/audio (loudest frames -6 to -18 dBFS) gets none. Costs a
    dot product and a few comparisons per frame.
    """

    PEAK_DBFS = -24.0
    FLOOR_DBFS = -40.0
    PEAK_SECONDS = 10.0
    QUIET_FRAMES = 10
    """A floor is the quietest stretch of this many frames (300 ms), not the quietest frame:
    noise dips for a frame or two, a pause between sentences lasts."""
    FLOOR_SECONDS = 2.0

    def __init__(self, max_gain_db: float, frame_ms: int) -> None:
        self._max_gain_db = max_gain_db
        self._peak_frames = max(1, int(self.PEAK_SECONDS * 1000) // frame_ms)
        self._floor_frames = max(1, int(self.FLOOR_SECONDS * 1000) // frame_ms)
        self._frames = 0
        # (frame number, level) of the frames that can still be the window's loudest
        # (quietest): levels fall (rise) along each deque, so its first is the answer
        self._loud: deque[tuple[int, float]] = deque()
        self._quiet: deque[tuple[int, float]] = deque()
        self._recent: deque[float] = deque(maxlen=self.QUIET_FRAMES)  # frames' power
        self._recent_power = 0.0

    def hear(self, frame: np.ndarray) -> bytes:
        """The next frame (int16) as webrtcvad should judge it: raised by the gain, if any."""
        samples = frame.astype(np.float32)
        power = float(np.dot(samples, samples)) / max(1, len(frame))
        level = _dbfs(power)
        n = self._frames = self._frames + 1
        loud, quiet = self._loud, self._quiet
        while loud and loud[-1][1] <= level:
            loud.pop()
        loud.append((n, level))
        if loud[0][0] <= n - self._peak_frames:
            loud.popleft()
        recent = self._recent
        if len(recent) == recent.maxlen:
            self._recent_power -= recent[0]
        recent.append(power)
        self._recent_power += power
        stretch = _dbfs(max(0.0, self._recent_power) / len(recent))
        while quiet and quiet[-1][1] >= stretch:
            quiet.pop()
        quiet.append((n, stretch))
        if quiet[0][0] <= n - self._floor_frames:
            quiet.popleft()
        peak, floor = loud[0][1], quiet[0][1]
        gain = min(self.PEAK_DBFS - peak, self.FLOOR_DBFS - floor, self._max_gain_db)
        if gain <= 0 or power == 0:
            return frame.tobytes()
        raised = samples * np.float32(10 ** (gain / 20))
        return np.clip(raised, -32768, 32767).astype(np.int16).tobytes()


def _dbfs(power: float) -> float:
    """The level of a mean square of int16 samples, in dB below full scale (-120: silence)."""
    return 10 * math.log10(power / 32768**2) if power > 0 else -120.0


class StreamResampler:
    """Resamples a stream chunk by chunk to 16 kHz, giving the same samples as resampling the
    whole signal at once.

    Resampling each chunk on its own would treat every chunk edge as silence and put a click at
    each one. Instead each block is resampled with ``pad`` real input samples of context on both
    sides (at least the half-length of ``resample_poly``'s filter, rounded up to whole periods
    of the rate ratio so that the polyphase phase lines up), and only the middle is kept. The
    price is ``pad`` input samples of look-ahead (10 ms at 44.1 kHz). Work per chunk is
    proportional to the chunk: the carried buffer never exceeds ``2 * pad + period`` samples
    beyond the new chunk.
    """

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.up, self.down = sample_ratio(rate)
        half_len_in = math.ceil(10 * max(self.up, self.down) / self.up)  # resample_poly's filter
        self.pad = math.ceil(half_len_in / self.down) * self.down
        self._buffer = np.zeros(self.pad, dtype=np.float32)  # left context: silence, as at t=0
        self._consumed = 0  # input samples already emitted (excluding the leading context)

    def feed(self, samples: np.ndarray) -> np.ndarray:
        if self.rate == SAMPLE_RATE:
            return samples
        self._buffer = np.concatenate((self._buffer, samples))
        ready = (len(self._buffer) - 2 * self.pad) // self.down * self.down
        if ready <= 0:
            return np.zeros(0, dtype=np.float32)
        return self._emit(ready, self._buffer[: self.pad + ready + self.pad])

    def flush(self) -> np.ndarray:
        """The rest of the stream, with silence assumed after its end (as ``resample_poly``)."""
        if self.rate == SAMPLE_RATE:
            return np.zeros(0, dtype=np.float32)
        pending = len(self._buffer) - self.pad
        if pending <= 0:
            return np.zeros(0, dtype=np.float32)
        emitted = self._consumed * self.up // self.down
        total_out = math.ceil((self._consumed + pending) * self.up / self.down)
        ready = math.ceil(pending / self.down) * self.down
        window = np.concatenate(
            (self._buffer, np.zeros(ready - pending + self.pad, dtype=np.float32))
        )
        return self._emit(ready, window)[: total_out - emitted]

    def _emit(self, ready: int, window: np.ndarray) -> np.ndarray:
        y = resample_poly(window, self.up, self.down)
        first = self.pad * self.up // self.down
        out = y[first : first + ready * self.up // self.down].astype(np.float32, copy=False)
        self._buffer = self._buffer[ready:]
        self._consumed += ready
        return out


class DcBlocker:
    """Takes a microphone's DC offset out of the copy of a 16 kHz stream that webrtcvad judges,
    chunk by chunk, giving the same samples as filtering the whole stream at once.

    Cheap microphones (a robot's I2S microphone, a laptop's line input) add a constant to every
    sample, and webrtcvad weighs energy: the offset is energy in every pause. With 1 % of
    full scale, jfk.flac's three sentences were one utterance, answered only at the end, and
    a soft speaker's three (30 dB under espeak-ng's level, heard only in :class:`VadLevel`'s
    raised copy) were none (BENCHMARKS.md, "A cheap microphone"). The filter is the classic
    one-pole DC blocker, ``y[n] = x[n] - x[n-1] + R * y[n-1]``: -3 dB at 13 Hz, under 0.2 dB
    lost at 80 Hz, where speech begins. It starts as if the stream had always held its first
    chunk's median (the offset, whether the chunk holds a pause or speech): started at rest,
    the offset's step at the start was enough to keep jfk.flac's three sentences one.
    """

    R = 0.995
    """The pole: (1 - R) x 16000 / 2 pi = 13 Hz; it settles in 1 / (1 - R) = 200 samples."""
    _B = np.array([1.0, -1.0])
    _A = np.array([1.0, -R])

    def __init__(self) -> None:
        self._state: np.ndarray | None = None  # lfilter's: -(the offset) once settled

    def feed(self, pcm: np.ndarray) -> np.ndarray:
        """The next int16 samples (16 kHz) less the offset, as int16."""
        if not len(pcm):
            return pcm
        x = pcm.astype(np.float64)
        if self._state is None:
            self._state = np.array([-float(np.median(x))])
        y, self._state = lfilter(self._B, self._A, x, zi=self._state)
        # ufuncs in place, as audio.to_pcm16: np.clip's dispatch costs more than its work here
        np.rint(y, out=y)
        np.minimum(y, 32767.0, out=y)
        np.maximum(y, -32768.0, out=y)
        return y.astype(np.int16)


class Segmenter:
    """Cuts 16 kHz audio into utterances with webrtcvad.

    Not speaking, it keeps ``start_padding_ms`` of audio; it starts an utterance when at least
    half of that window is voiced, and the window becomes the utterance's start (padded with
    silence at the very start of a stream; after a close, the window begins with the audio the
    close cut off, so speech that resumes at once has the client's own lead-in). Speaking, it
    ends the utterance after ``end_silence_ms`` of unvoiced frames (``fragment_silence_ms``
    while it holds less than ``fragment_speech_ms`` of voiced frames: a word or two and a
    hesitation are not an utterance of their own), keeping ``end_padding_ms`` of them (also
    when the stream ends during such a pause); or when the utterance reaches
    ``max_utterance_seconds``, at its quietest moment in the last fifth of that, the rest
    beginning the next one. Utterances with less than ``min_speech_ms`` of voiced frames are
    dropped as noise. Every sample fed belongs to at most one utterance; none is repeated.

    With ``silero_vad_after_seconds`` set, an utterance that has run that long is also heard
    by Silero VAD (all of it, then 100 ms at a time), and ``silero_vad_silence_ms`` without
    speech to Silero ends it, trimmed as a webrtcvad pause would be; if Silero heard less
    than ``min_speech_ms`` of speech in it, it was noise and is dropped (also when the stream
    ends). After such an end, Silero listens to each utterance from its start, until
    webrtcvad hears a pause itself again.
    """

    def __init__(self, config: StreamingConfig, record_edges: bool = False) -> None:
        self._vad = webrtcvad.Vad(config.vad_aggressiveness)
        self._level = (
            VadLevel(config.vad_max_gain_db, config.frame_ms) if config.vad_max_gain_db else None
        )
        self._frame = SAMPLE_RATE * config.frame_ms // 1000
        ms = config.frame_ms
        self._start_frames = max(1, config.start_padding_ms // ms)
        self._end_pad_frames = config.end_padding_ms // ms
        self._end_silence_frames = max(1, config.end_silence_ms // ms)
        self._fragment_frames = config.fragment_speech_ms // ms
        self._fragment_silence_frames = max(
            self._end_silence_frames, config.fragment_silence_ms // ms
        )
        self._min_voiced_frames = max(1, config.min_speech_ms // ms)
        self._max_frames = max(1, int(config.max_utterance_seconds * 1000) // ms)
        # an utterance that reaches _max_frames is cut at its quietest boundary in this many
        # last frames, not mid-word at the limit
        self._cut_search_frames = max(1, self._max_frames // CUT_SEARCH_PART)
        self._pending = np.zeros(0, dtype=np.int16)  # less than one frame
        # what webrtcvad judges: the stream less its DC offset (the audio kept as it came)
        self._dc_blocker = DcBlocker() if config.vad_remove_dc_offset else None
        self._pending_judged = self._pending
        self._silence = np.zeros(self._frame, dtype=np.int16)
        self.lead_in_padding = 0
        """Samples of silence put before the first utterance returned (not client audio)."""
        self._emitted = False  # whether an utterance has been returned yet
        self._ring: deque[tuple[np.ndarray, bool]] = deque(maxlen=self._start_frames)
        self._ring_voiced = 0  # voiced frames in the ring, kept as frames come and go
        self._utterance: list[np.ndarray] = []
        self._flags: list[bool] = []  # webrtcvad's verdict on each frame of the utterance
        self._voiced = 0
        self._silent_run = 0
        self.utterances_started = 0
        """How many utterances have begun: identifies the one in progress."""
        self.edges: list[SpeechEdge] = []
        """Where utterances began and ended, with ``record_edges``, until the caller takes
        them (else always empty)."""
        self._record_edges = record_edges
        self._stepped = 0  # frames judged so far: the stream's position
        self._start_frame = 0  # the position of the utterance in progress's first frame
        self._silero_after: int | None = None  # frames into an utterance; None: off
        if config.silero_vad_after_seconds is not None:
            self._silero_after = int(config.silero_vad_after_seconds * 1000) // ms
        self._silero_quiet = math.ceil(config.silero_vad_silence_ms * SAMPLE_RATE / 1000 / WINDOW)
        self._silero_min_speech = math.ceil(config.min_speech_ms * SAMPLE_RATE / 1000 / WINDOW)
        self._listener: SileroListener | None = None  # listening to the utterance in progress
        self._listened = 0  # its frames fed to the listener
        self._listen_frames = max(1, 100 // ms)  # how many it is fed at a time
        # Silero found the last pause, webrtcvad has not heard one since: the noise that hid
        # it is likely still there, so Silero listens to the next utterance from its start
        self._noisy = False

    @property
    def speaking(self) -> bool:
        return bool(self._utterance)

    def open_utterance(self) -> np.ndarray | None:
        """A copy of the utterance in progress so far (float32), or None between utterances:
        what an interim result is decoded from."""
        if not self._utterance:
            return None
        return from_pcm16(np.concatenate(self._utterance))

    def closing_length(self) -> int | None:
        """Samples the utterance in progress closes with if the pause now running goes on, once
        that pause has reached ``end_padding_ms`` (from then on, more silence only adds what
        the close cuts off); None while speaking, between utterances, or when the utterance
        holds too little speech to be kept. The pause is webrtcvad's, or Silero's where it
        listens."""
        frames = self._closing_frames()
        return None if frames is None else frames * self._frame

    def closing_utterance(self) -> np.ndarray | None:
        """The utterance as :meth:`closing_length` says it would close (float32): what its
        final can be decoded from before the pause is long enough to end it."""
        frames = self._closing_frames()
        return None if frames is None else from_pcm16(np.concatenate(self._utterance[:frames]))

    def _closing_frames(self) -> int | None:
        if not self._utterance or self._voiced < self._min_voiced_frames:
            return None
        if self._silent_run >= max(1, self._end_pad_frames):
            return self._keep(len(self._utterance), self._silent_run)
        listener = self._listener
        if (
            listener is None
            or listener.quiet_windows * WINDOW < max(1, self._end_pad_frames) * self._frame
            or listener.speech_windows < self._silero_min_speech
        ):
            return None
        return self._silero_keep(listener)

    def _silero_keep(self, listener: SileroListener) -> int:
        """How many frames the utterance keeps if Silero's silence now running ends it: those
        before the silence, and ``end_padding_ms`` of it."""
        before = -(-listener.quiet_since // self._frame)
        return min(len(self._utterance), before + self._end_pad_frames)

    def _keep(self, frames: int, trailing_silence: int) -> int:
        """How many of an utterance's frames it keeps: its trailing silence cut to the end
        padding."""
        return frames - max(0, trailing_silence - self._end_pad_frames)

    @property
    def trailing_silence(self) -> int:
        """Samples of webrtcvad silence the utterance in progress ends with (0 while the last
        frame was speech, or between utterances)."""
        return self._silent_run * self._frame if self._utterance else 0

    @property
    def buffered_samples(self) -> int:
        """Samples held for the utterance in progress (for back-pressure accounting)."""
        return len(self._utterance) * self._frame

    def feed(self, samples: np.ndarray) -> list[np.ndarray]:
        """Feed 16 kHz samples (int16, or float32 in [-1, 1]); returns the utterances that
        closed (float32), of the samples as fed (webrtcvad's copy alone is less the DC offset
        and raised for a quiet speaker)."""
        pcm = to_pcm16(samples)
        judged = None if self._dc_blocker is None else self._dc_blocker.feed(pcm)
        if len(self._pending):
            pcm = np.concatenate((self._pending, pcm))
            if judged is not None:
                judged = np.concatenate((self._pending_judged, judged))
        if judged is None:  # webrtcvad judges the samples as fed
            judged = pcm
        whole = len(pcm) // self._frame * self._frame
        self._pending, self._pending_judged = pcm[whole:], judged[whole:]
        done: list[np.ndarray] = []
        for start in range(0, whole, self._frame):
            frame = pcm[start : start + self._frame]
            copy = judged[start : start + self._frame]
            self._stepped += 1
            heard = copy.tobytes() if self._level is None else self._level.hear(copy)
            utterance = self._step(frame, self._vad.is_speech(heard, SAMPLE_RATE))
            if utterance is None and self._silero_after is not None:
                utterance = self._listen()
            if utterance is not None:
                done.append(utterance)
        return done

    def _listen(self) -> np.ndarray | None:
        """Once the utterance has run ``silero_vad_after_seconds``, let Silero hear its frames
        that it has not heard yet, 100 ms at a time (one model call each, however the client
        sizes its chunks); close the utterance if the silence Silero hears at its end has
        lasted ``silero_vad_silence_ms``."""
        assert self._silero_after is not None
        frames = len(self._utterance)
        after = 0 if self._noisy else self._silero_after
        if frames < max(1, after) or frames - self._listened < self._listen_frames:
            return None
        listener = self._listener
        if listener is None:
            listener = self._listener = SileroListener()
        self._let_hear(listener)
        if listener.quiet_windows < self._silero_quiet:
            return None
        self._noisy = True
        speech = listener.speech_windows >= self._silero_min_speech
        keep = self._closing_frames()  # what was foreseen (webrtcvad's pause, if one runs)
        return self._close(self._silero_keep(listener) if keep is None else keep, speech=speech)

    def _let_hear(self, listener: SileroListener) -> None:
        """Feed Silero the utterance's frames it has not heard yet, in one model call."""
        if len(self._utterance) > self._listened:
            listener.feed(from_pcm16(np.concatenate(self._utterance[self._listened :])))
            self._listened = len(self._utterance)

    def flush(self) -> list[np.ndarray]:
        """End of stream: close the utterance in progress, if it holds enough speech. A stream
        that ends in a pause of ``end_padding_ms`` or more has it cut as the pause would have
        (to :meth:`closing_utterance`): the utterance is the same however the stream ended."""
        pending, self._pending = self._pending, np.zeros(0, dtype=np.int16)
        self._pending_judged = self._pending
        listener = self._listener
        if listener is not None:  # Silero has been listening: let it hear the end too
            self._let_hear(listener)
        keep = self._closing_frames()
        if keep is None:  # still speaking, or too short a pause: everything is kept
            if len(pending) and self._utterance:
                self._utterance.append(pending)
                self._flags.append(False)  # too short for webrtcvad's verdict
            keep = len(self._utterance)
        speech = listener is None or listener.speech_windows >= self._silero_min_speech
        utterance = self._close(keep, speech=speech)
        self._ring.clear()
        self._ring_voiced = 0
        return [] if utterance is None else [utterance]

    def _step(self, frame: np.ndarray, voiced: bool) -> np.ndarray | None:
        if not self._utterance:
            if len(self._ring) == self._start_frames:
                self._ring_voiced -= self._ring[0][1]  # about to fall out of the window
            self._ring.append((frame, voiced))
            self._ring_voiced += voiced
            if self._ring_voiced * 2 >= self._start_frames and voiced:
                # Speech in the stream's first moments has less lead-in than the padding; make
                # it up with silence: Whisper mishears words that begin at sample 0. (Later,
                # the ring starts with the audio the last close cut off, so the lead-in is the
                # client's own audio and nothing is added that the client did not send.)
                missing = 0
                if self.utterances_started == 0:
                    missing = self._start_frames - len(self._ring)
                    self.lead_in_padding = missing * self._frame
                self._utterance = [self._silence] * missing + [f for f, _ in self._ring]
                self._flags = [False] * missing + [v for _, v in self._ring]
                self.utterances_started += 1
                self._voiced = self._ring_voiced
                self._silent_run = 0
                self._ring.clear()
                self._ring_voiced = 0
                self._began(self._stepped - len(self._utterance))
            return None
        self._utterance.append(frame)
        self._flags.append(voiced)
        if voiced:
            self._voiced += 1
            self._silent_run = 0
        else:
            self._silent_run += 1
        needed = (
            self._fragment_silence_frames
            if self._voiced < self._fragment_frames
            else self._end_silence_frames
        )
        if self._silent_run >= needed:
            self._noisy = False
            return self._close(self._keep(len(self._utterance), self._silent_run))
        if len(self._utterance) >= self._max_frames:
            return self._cut_long()
        return None

    def _cut_long(self) -> np.ndarray | None:
        """The utterance reached ``max_utterance_seconds`` without a pause: end it at the
        quietest boundary between two frames in its last fifth (a gap between words, even
        where noise hides the pauses from webrtcvad or the speaker makes none), not mid-word at
        the limit, where Whisper mishears the word cut in two on both sides. The frames after
        the cut begin the next utterance: no sample is dropped or repeated."""
        frames, flags = self._utterance, self._flags
        cut = self._quietest_boundary()
        rest, rest_flags = frames[cut:], flags[cut:]
        rest_voiced = sum(rest_flags)
        # closed as if it had ended at the cut: nothing is cut off, so nothing waits in the
        # ring; the rest goes on as the next utterance
        self._utterance, self._flags = frames[:cut], flags[:cut]
        self._voiced -= rest_voiced
        rest_start = self._start_frame + cut
        closed = self._close(cut)
        if rest:
            self._utterance, self._flags = rest, rest_flags
            self._voiced = rest_voiced
            # its unvoiced frames at the end: a pause it may already be in
            trailing = (i for i, voiced in enumerate(reversed(rest_flags)) if voiced)
            self._silent_run = next(trailing, len(rest_flags))
            self.utterances_started += 1
            self._began(rest_start)
        return closed

    def _began(self, start_frame: int) -> None:
        """An utterance began at frame ``start_frame`` (before 0 where the stream's first has
        silence put before it)."""
        self._start_frame = start_frame
        if self._record_edges:
            at = max(0, start_frame) * self._frame
            self.edges.append(SpeechEdge(True, at))

    def discard(self) -> None:
        """Forget the utterance in progress and what waits to begin the next (the client
        cleared what it sent): the stream goes on from the next sample, as after a pause."""
        self._utterance, self._flags, self._voiced, self._silent_run = [], [], 0, 0
        self._listener, self._listened = None, 0
        self._ring.clear()
        self._ring_voiced = 0
        self._pending = self._pending_judged = np.zeros(0, dtype=np.int16)

    def _quietest_boundary(self) -> int:
        """The boundary (frames before it) in the utterance's last ``_cut_search_frames``
        whose two neighbouring frames hold the least energy together; ties go to the latest.
        Computed once per cut, so frames cost nothing while they come."""
        frames = self._utterance
        # never so early that the utterance keeps fewer frames than min_speech_ms asks for
        first = max(1, self._min_voiced_frames, len(frames) - self._cut_search_frames)
        if first >= len(frames):
            return len(frames)
        window = np.stack(frames[first - 1 :]).astype(np.float32)
        energy = np.einsum("ij,ij->i", window, window)  # per frame, from frame first - 1
        around = energy[:-1] + energy[1:]  # boundary first + k sits between k and k + 1
        latest = len(around) - 1 - int(np.argmin(around[::-1]))
        return first + latest

    def _close(self, keep: int, speech: bool = True) -> np.ndarray | None:
        """End the utterance: its first ``keep`` frames, or None if it holds too little speech
        (``speech`` False: Silero heard too little). The rest is trailing silence, not speech:
        its last ``start_padding_ms`` wait in the ring as the next utterance's possible
        lead-in."""
        frames, flags, voiced = self._utterance, self._flags, self._voiced
        kept = bool(frames) and speech and voiced >= self._min_voiced_frames
        if frames and self._record_edges:
            at = max(0, self._start_frame + keep) * self._frame
            self.edges.append(SpeechEdge(False, at, kept=kept))
        self._utterance, self._flags, self._voiced, self._silent_run = [], [], 0, 0
        self._listener, self._listened = None, 0
        # the ring (empty while speaking) starts with the end of what is cut off: the next
        # utterance's lead-in, should speech come back at once
        tail = slice(max(keep, len(frames) - self._start_frames), len(frames))
        self._ring.extend(zip(frames[tail], flags[tail], strict=True))
        self._ring_voiced = sum(flags[tail])
        if not kept:
            if not self._emitted:  # the stream's lead-in silence went with it
                self.lead_in_padding = 0
            return None
        self._emitted = True
        return from_pcm16(np.concatenate(frames[:keep]))
