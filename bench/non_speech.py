#!/usr/bin/env python3
"""Words nobody said: what a stream's utterances of non-speech are decoded into, and what the
rules that drop Whisper's segments cost real speech.

Tones, music, hum, breath, clicks and noise (13 signals made by sox, repeatably) are speech to
webrtcvad often enough; Whisper then writes words nobody said ("I'll see you in the next
video.", "You"). Each signal, words said alone (espeak-ng: 18 in its default voice, and with
``--ivr-words`` 31 answers to a phone menu in 5 voices at 120, 150 and 200 words a minute, each
its own stream: short utterances are where Whisper is least sure of real speech), and each
English recording of ../shared/audio (optionally under white noise, ``--noise DBFS``), is cut
by the gateway's segmenter as a stream would be, and each utterance decoded as the gateway
decodes it (beam 5, the stream's last 200 characters of replies as its prompt, no conditioning
between windows). Silero VAD's count of speech windows in each utterance is kept with its
segments. Rules for dropping a segment are then applied to the same decodes:

- ``no_speech``: ``no_speech_prob`` above 0.5 (``utterance_no_speech_prob`` alone: the
  gateway's rule until session 16);
- ``+unsure``: also above 0.25 when ``avg_logprob`` is below -1.25
  (``utterance_unsure_no_speech_prob``: session 16's rule; BENCHMARKS.md, "Words nobody
  said"); ``--unsure-log-prob`` compares other lines on the same decodes;
- ``+vad``: but keep those rated above 0.5 and not above 0.7 when ``avg_logprob`` is -1 or
  more and Silero hears 3 windows of speech in the utterance (``utterance_vad_no_speech_prob``:
  session 17's rule); ``--vad-no-speech-prob`` compares other lines, and
  ``(no VAD)`` the same lines without Silero's opinion;
- ``veto over F``: ``+vad``, and drop those rated above F when Silero hears under 3 windows of
  speech in the utterance (``utterance_unheard_no_speech_prob``, 0.4: the gateway's rule since
  session 18); ``--veto`` compares other lines.

Reported per rule: the words replied to the non-speech signals, how many of the words said
alone got a reply (and a reply with the word), and the word errors on the recordings. The
prompts of later utterances are the first rule's replies (the rules differ in so few segments
that decoding twice would change little and cost twice the time).

    python bench/non_speech.py [--model base] [--noise -25] [--gain -30] [--no-recordings]
        [--ivr-words] [--veto 0.25 0.4]
    python bench/non_speech.py --noise-grid --no-recordings [--model base]
    python bench/non_speech.py --real-words 400 [--model base] [--unsure-log-prob -1.2 -1.25]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from _common import SHARED_AUDIO, in_process_model, normalise, segmented, word_errors
from speechgw.backends.whisper import WhisperOptions
from speechgw.backends.whisper_spoken import (
    HEARD_SPEECH_WINDOWS,
    SURE_LOG_PROB,
    UNSURE_LOG_PROB,
)
from stream_accuracy import recordings as scored_recordings
from stream_candidates import _noise

from speechgw.audio import from_pcm16, read_wav, to_pcm16
from speechgw.silero import speech_windows
from speechgw.stream import _context

GATEWAY = WhisperOptions()  # the gateway's lines, so that the bench's rules follow them
NO_SPEECH, UNSURE_NO_SPEECH = (
    GATEWAY.utterance_no_speech_prob,
    GATEWAY.utterance_unsure_no_speech_prob,
)
VAD_NO_SPEECH = GATEWAY.utterance_vad_no_speech_prob
UNHEARD_NO_SPEECH = GATEWAY.utterance_unheard_no_speech_prob
Segments = list[tuple[float, float, str, int]]
"""(no_speech_prob, avg_logprob, text, Silero's speech windows in its utterance) of each
segment of a stream's utterances."""
Rule = Callable[[float, float, int], bool]
"""Whether a rule drops a segment of this (no_speech_prob, avg_logprob, speech windows)."""
SOX_SIGNALS: dict[str, str] = {  # the arguments of sox -n ... synth
    "pink noise": "synth 12 pinknoise vol 0.3",
    "brown noise": "synth 12 brownnoise vol 0.5",
    "noise, swelling": "synth 12 pinknoise tremolo 2 100 vol 0.4",
    "breath": "synth 12 brownnoise lowpass 1500 tremolo 0.3 100 vol 0.8",
    "breath, softer": "synth 8 brownnoise lowpass 1500 tremolo 0.3 100 vol 0.3",
    "noise bursts": "synth 0.3 whitenoise vol 0.4 pad 0 0.7 repeat 11",
    "clicks": "synth 0.02 whitenoise vol 0.8 pad 0 0.15 repeat 70",
    "sweep": "synth 12 sine 100-4000 vol 0.3",
    "held note": "synth 20 square 440 vol 0.2",
    "tone, vibrato": "synth 12 sine 400 tremolo 6 40 vol 0.3",
    "chord, tremolo": "synth 12 sine 220 sine 277 sine 330 tremolo 3 80 vol 0.3",
    "plucked melody": "synth 0.6 pluck C4 synth 0.6 pluck E4 : synth 0.6 pluck G4 repeat 6",
    "mains hum": "synth 12 sine 50 sine 100 sine 150 vol 0.4",
}
NOISE_GRID: dict[str, str] = {  # --noise-grid: noises and plain tones, short and long
    f"{kind}{effect}, {seconds} s, vol {vol}": f"synth {seconds} {kind}{effect} vol {vol}"
    for kind in ("pinknoise", "brownnoise", "whitenoise")
    for effect in ("", " lowpass 1500 tremolo 0.3 100", " bandpass 1000 500")
    for seconds in (1, 3, 8)
    for vol in (0.1, 0.3, 0.6)
} | {
    f"{wave} {hz} Hz, {seconds} s": f"synth {seconds} {wave} {hz}{effect}"
    for wave, effect in (
        ("sine", " tremolo 5 50 vol 0.3"),
        ("sawtooth", " vol 0.2"),
        ("triangle", " fade 0.1 -0 0.3 vol 0.3"),
    )
    for hz in (200, 300, 500, 800)
    for seconds in (1, 4)
}
LEAD_SECONDS, TAIL_SECONDS = 0.3, 0.6
"""The silence around a word said alone (so that the segmenter closes it as after speech)."""
REVERSED = "The committee will meet again on Thursday to discuss the budget for next year."
WORDS_ALONE = ["one", "two", "three", "four", "five", "nine", "ten", "yes", "no", "okay"]
WORDS_ALONE += ["hello", "thanks", "stop", "right", "sure", "maybe", "goodbye", "what"]
"""Said alone (espeak-ng), each its own stream: the speech Whisper is least sure of."""
IVR_WORDS = "yes no okay one two three four five six seven eight nine ten zero hello thanks"
IVR_WORDS += " stop right sure maybe goodbye what cancel repeat help agent operator correct"
IVR_WORDS += " wrong later please"
IVR_VOICES, IVR_SPEEDS = ("en", "en-us", "en+f3", "en+m3", "en-gb-x-rp"), (120, 150, 200)
"""``--ivr-words``: answers to a phone menu, each in these espeak-ng voices and words a minute."""
NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
DIGITS = {word: n for n, word in enumerate(NUMBERS)}


def _read(path: Path) -> np.ndarray:
    """A 16 kHz mono WAV's samples, read as the gateway reads an upload."""
    return read_wav(path.read_bytes())[0]


def non_speech(work: Path, grid: bool = False) -> dict[str, np.ndarray]:
    """The signals (SOX_SIGNALS and reversed speech; with ``grid`` NOISE_GRID, with the
    silence around them of a word said alone), 16 kHz mono, the same on every run (sox -R)."""
    signals = {}
    for name, synth in (NOISE_GRID if grid else SOX_SIGNALS).items():
        out = work / f"{len(signals)}.wav"
        sox = ["sox", "-R", "-n", "-r", "16000", "-b", "16", "-c", "1", str(out), *synth.split()]
        pad = ["pad", str(LEAD_SECONDS), str(TAIL_SECONDS)] if grid else []
        subprocess.run([*sox, *pad], check=True, capture_output=True)
        signals[name] = _read(out)
    if grid:
        return signals
    spoken = work / "spoken.wav"
    subprocess.run(["espeak-ng", "-w", str(spoken), REVERSED], check=True, capture_output=True)
    out = work / "reversed.wav"
    sox = ["sox", "-R", str(spoken), "-r", "16000", "-b", "16", "-c", "1", str(out), "reverse"]
    subprocess.run(sox, check=True, capture_output=True)
    signals["speech reversed (espeak-ng)"] = _read(out)
    return signals


def words_alone(work: Path, ivr: bool = False) -> dict[str, tuple[str, np.ndarray]]:
    """Each of WORDS_ALONE (or with ``ivr`` each of IVR_WORDS in each of IVR_VOICES at each
    of IVR_SPEEDS) with LEAD_SECONDS of silence before and TAIL_SECONDS after:
    name -> (the word, 16 kHz samples)."""
    said = [(w, "en", 175) for w in WORDS_ALONE]  # 175: espeak-ng's default speed
    if ivr:
        said = [(w, v, s) for w in IVR_WORDS.split() for v in IVR_VOICES for s in IVR_SPEEDS]
    words = {}
    for word, voice, speed in said:
        spoken, out = work / "spoken.wav", work / "word.wav"
        espeak = ["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(spoken), word]
        subprocess.run(espeak, check=True, capture_output=True)
        sox = ["sox", "-R", str(spoken), "-r", "16000", "-b", "16", "-c", "1", str(out)]
        pad = ["pad", str(LEAD_SECONDS), str(TAIL_SECONDS)]
        subprocess.run([*sox, *pad], check=True, capture_output=True)
        words[word if not ivr else f"{word} ({voice}, {speed})"] = (word, _read(out))
    return words


def heard_right(word: str, text: str) -> bool:
    """Whether a reply holds ``word`` (a number in figures counts: Whisper writes "2")."""
    heard = normalise(text)
    return word in heard or (word in DIGITS and str(DIGITS[word]) in heard)


def english_recordings() -> Iterator[tuple[dict[str, str], np.ndarray]]:
    """The English recordings of ../shared/audio that stream_accuracy.py scores: each one's
    manifest row and its 16 kHz samples."""
    from faster_whisper import decode_audio

    for row in scored_recordings(multilingual=False):
        yield row, decode_audio(str(SHARED_AUDIO / row["file"]))


def recordings(noise_dbfs: float | None, gain_db: float = 0.0) -> dict[str, tuple[str, np.ndarray]]:
    """The English recordings of ../shared/audio (``gain_db`` louder: negative for a quiet
    speaker): name -> (reference, 16 kHz samples)."""
    found = {}
    for row, samples in english_recordings():
        samples = samples * np.float32(10 ** (gain_db / 20))
        if noise_dbfs is not None:  # the same noise as stream_candidates.py --noise white:DB
            samples = samples + _noise(len(samples), "white") * np.float32(10 ** (noise_dbfs / 20))
        found[row["file"]] = (row["reference_transcript"], from_pcm16(to_pcm16(samples)))
    return found


def real_words(model, limit: int) -> dict[str, tuple[str, np.ndarray]]:
    """Words of real people said alone, as near as recordings give them: each English
    recording of ../shared/audio is transcribed whole with word timestamps, and every word the
    model is sure of (probability 0.8 and up) is cut out (50 ms either side), then given the
    same silence as WORDS_ALONE. Cut from running speech, they are harder than words said
    alone (coarticulated, clipped where a timestamp is off): a worst case for the rules.
    Spread evenly over the recordings, at most ``limit``. name -> (the word, 16 kHz samples)."""
    candidates = []
    for row, samples in english_recordings():
        segments, _ = model.transcribe(samples, language="en", word_timestamps=True)
        for segment in segments:
            for w in segment.words or []:
                word = normalise(w.word)
                if len(word) != 1 or w.probability < 0.8:
                    continue
                start = max(0, int((w.start - 0.05) * 16000))
                end = min(len(samples), int((w.end + 0.05) * 16000))
                lead = np.zeros(int(LEAD_SECONDS * 16000), np.float32)
                tail = np.zeros(int(TAIL_SECONDS * 16000), np.float32)
                cut = np.concatenate((lead, samples[start:end], tail))
                candidates.append((f"{row['file']}@{w.start:.2f}", word[0], cut))
    step = max(1, len(candidates) // limit)
    return {key: (word, cut) for key, word, cut in candidates[::step][:limit]}


def decode(model, samples: np.ndarray) -> Segments:
    """Each segment of each utterance of a stream, with Silero's count of speech windows in
    its utterance."""
    return decode_utterances(model, segmented(samples))


def decode_utterances(model, utterances: list[np.ndarray]) -> Segments:
    """Each segment of these utterances of one stream, decoded in turn as the gateway decodes
    them, with Silero's count of speech windows in its utterance."""
    segments, context = [], ""
    for utterance in utterances:
        decoded, _ = model.transcribe(
            utterance,
            language="en",
            beam_size=5,
            initial_prompt=context or None,
            condition_on_previous_text=False,
        )
        heard = speech_windows(utterance)
        for s in decoded:
            if not any(c.isalnum() for c in s.text):
                continue
            segments.append((s.no_speech_prob, s.avg_logprob, s.text, heard))
            if s.no_speech_prob <= NO_SPEECH:
                context = _context(context, s.text, 200)
    return segments


def kept(segments: Segments, dropped: Rule) -> str:
    """The reply a rule leaves of these segments."""
    return " ".join(t for nsp, lp, t, heard in segments if not dropped(nsp, lp, heard))


def rules(
    unsure_log_probs: list[float], vad_no_speech_probs: list[float], veto_floors: list[float]
) -> dict[str, Rule]:
    """The rules compared: the first, the second with each of ``unsure_log_probs`` as its
    line, the gateway's with each of ``vad_no_speech_probs`` as its upper line, and the
    gateway's with Silero's veto over each of ``veto_floors``."""

    def unsure(nsp: float, lp: float, line: float = UNSURE_LOG_PROB) -> bool:
        return nsp > NO_SPEECH or (lp < line and nsp > UNSURE_NO_SPEECH)

    def vad(nsp: float, lp: float, heard: int, top: float) -> bool:
        if lp >= SURE_LOG_PROB and NO_SPEECH < nsp <= top and heard >= HEARD_SPEECH_WINDOWS:
            return False
        return unsure(nsp, lp)

    chosen: dict[str, Rule] = {"no_speech": lambda nsp, lp, heard: nsp > NO_SPEECH}
    for line in unsure_log_probs:
        chosen[f"+unsure({line:g})"] = lambda nsp, lp, heard, line=line: unsure(nsp, lp, line)
    for top in vad_no_speech_probs:
        chosen[f"+unsure+vad({top:g})"] = lambda nsp, lp, heard, top=top: vad(nsp, lp, heard, top)
        # the same without Silero's opinion: what raising the line alone would let through
        chosen[f"+unsure, sure up to {top:g} (no VAD)"] = lambda nsp, lp, heard, top=top: vad(
            nsp, lp, HEARD_SPEECH_WINDOWS, top
        )
    for floor in veto_floors:
        # also drop what Silero hears no speech in (under 3 windows), rated above the floor
        chosen[f"+unsure+vad, veto over {floor:g}"] = lambda nsp, lp, heard, floor=floor: (
            vad(nsp, lp, heard, VAD_NO_SPEECH) or (heard < HEARD_SPEECH_WINDOWS and nsp > floor)
        )
    return chosen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--noise", type=float, help="white noise under the recordings, dBFS")
    parser.add_argument(
        "--gain", type=float, default=0.0, help="the recordings this much louder, dB"
    )
    parser.add_argument("--no-recordings", action="store_true", help="skip ../shared/audio")
    parser.add_argument(
        "--real-words",
        type=int,
        metavar="N",
        help="only: N words cut out of the recordings of ../shared/audio, each streamed alone",
    )
    parser.add_argument(
        "--unsure-log-prob",
        type=float,
        nargs="+",
        default=[UNSURE_LOG_PROB],
        help=f"the +unsure rule's avg_logprob lines to compare (the gateway's: {UNSURE_LOG_PROB})",
    )
    parser.add_argument(
        "--vad-no-speech-prob",
        type=float,
        nargs="+",
        default=[VAD_NO_SPEECH],
        help=f"the +vad rule's upper lines to compare (the gateway's: {VAD_NO_SPEECH})",
    )
    parser.add_argument(
        "--veto",
        type=float,
        nargs="+",
        default=[UNHEARD_NO_SPEECH],
        metavar="FLOOR",
        help="the +vad rule plus Silero's veto: drop a segment rated above FLOOR when Silero "
        f"hears under {HEARD_SPEECH_WINDOWS} windows of speech in its utterance (the gateway's "
        f"FLOOR: {UNHEARD_NO_SPEECH})",
    )
    parser.add_argument(
        "--noise-grid",
        action="store_true",
        help="signals: 105 sox noises and tones of 1-8 s instead of the 13 and reversed speech",
    )
    parser.add_argument(
        "--ivr-words",
        action="store_true",
        help="words said alone: 31 answers to a phone menu, 5 voices, 3 speeds (465 streams)",
    )
    args = parser.parse_args()
    model = in_process_model(args.model, threads=2)
    chosen = rules(args.unsure_log_prob, args.vad_no_speech_prob, args.veto)
    if args.real_words:
        return report_real_words(args.model, model, real_words(model, args.real_words), chosen)
    with tempfile.TemporaryDirectory() as work:
        signals = {
            name: decode(model, s) for name, s in non_speech(Path(work), args.noise_grid).items()
        }
        alone = {
            name: (word, decode(model, s))
            for name, (word, s) in words_alone(Path(work), args.ivr_words).items()
        }
    speech = {}
    if not args.no_recordings and (SHARED_AUDIO / "MANIFEST.tsv").exists():
        for name, (reference, samples) in recordings(args.noise, args.gain).items():
            speech[name] = (reference, decode(model, samples))
    written = {name: max(heard for *_, heard in segs) for name, segs in signals.items() if segs}
    heard = {name: n for name, n in written.items() if n >= HEARD_SPEECH_WINDOWS}
    print(
        f"Silero VAD: {len(written)} signals got words from Whisper; it heard speech "
        f"({HEARD_SPEECH_WINDOWS}+ windows) in {len(heard)} of them: {heard}"
    )
    windows = [min(heard for *_, heard in segs) for _, segs in alone.values() if segs]
    print(f"Silero VAD: {len(windows)} words said alone got words; speech windows {min(windows)}+")
    said = [(f"signal, {name}", segs) for name, segs in signals.items()]
    said += [(f"said alone, {name}", segs) for name, (_, segs) in alone.items()]
    for name, segments in said:
        for nsp, lp, text, heard in segments:
            if nsp > NO_SPEECH or heard < HEARD_SPEECH_WINDOWS:
                # what the first rule drops, and what a veto might
                print(f"    {name}: {text.strip()!r} {nsp:.2f} / {lp:.2f} / {heard}")
    for rule, dropped in chosen.items():
        replied = {name: kept(segments, dropped) for name, segments in signals.items()}
        heard = sum(len(normalise(text)) for text in replied.values())
        line = f"{args.model} {rule}: {heard} words replied to {len(signals)} non-speech signals"
        answered = [name for name, (_, segments) in alone.items() if kept(segments, dropped)]
        right = sum(heard_right(w, kept(segments, dropped)) for w, segments in alone.values())
        line += f"; {len(answered)} of {len(alone)} words said alone replied, {right} right"
        if speech:
            errors = words = 0
            for reference, segments in speech.values():
                text = kept(segments, dropped)
                e, n = word_errors(reference, text)
                errors, words = errors + e, words + n
            noise = f" under white noise at {args.noise} dBFS" if args.noise is not None else ""
            noise += f" at {args.gain:+g} dB" if args.gain else ""
            line += f"; recordings{noise}: {errors}/{words} word errors"
        print(line)
        for name, text in replied.items():
            if text:
                print(f"    {name}: {text.strip()!r}")
        if len(answered) < len(alone):
            print(f"    no reply to: {', '.join(w for w in alone if w not in answered)}")
    return 0


def report_real_words(
    name: str,
    model,
    words: dict[str, tuple[str, np.ndarray]],
    chosen: dict[str, Rule],
) -> int:
    """Per rule: how many of ``words`` got a reply, and a reply with the word in it."""
    decoded = {key: (word, decode(model, cut)) for key, (word, cut) in words.items()}
    for rule, dropped in chosen.items():
        replied = right = 0
        lost = []
        for key, (word, segments) in decoded.items():
            left = normalise(kept(segments, dropped))
            replied += bool(left)
            right += word in left
            heard = normalise(kept(segments, lambda nsp, lp, heard: False))
            if word in heard and word not in left:  # heard right, then dropped
                lost.append(f"{key} {word!r} -> {segments}")
        print(
            f"{name} {rule}: {replied} of {len(decoded)} real words alone replied, "
            f"{right} with the word"
        )
        for line in lost:
            print(f"    heard right, dropped: {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
