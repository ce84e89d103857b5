"""Property tests of both protocols' message parsers: whatever a client sends, the answer is a
documented error or a well-formed request, never another exception."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import random
import textwrap

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from speechgw.protocols.batch import parse_request, read_frame
from speechgw.protocols.streaming import (
    DECODE_PIECE_CHARS,
    audio_of,
    audio_of_message,
    decode_base64,
    decode_base64_in_pieces,
    parse_message,
    wire_message,
)

from speechgw.audio import to_pcm16
from speechgw.errors import InvalidAudio, SpeechGWError
from speechgw.jobs import JobRequest
from speechgw.languages import canonical_tag, from_bcp47, language_of

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
KEYS = [
    "type",
    "language",
    "task",
    "api_key",
    "machine_id",
    "postprocess",
    "audio",
    "rate",
    "language_code",
]
messages = st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), json_values, max_size=6)
texts = st.one_of(st.text(max_size=200), messages.map(json.dumps), json_values.map(json.dumps))


@settings(max_examples=500, deadline=None)
@given(texts)
def test_batch_metadata_parser(text: str) -> None:
    try:
        frame = read_frame(text)
        parsed = None if frame is None else parse_request(frame)
    except SpeechGWError as exc:
        assert exc.error in {"invalid_request", "unsupported_language", "unsupported_task"}
        return
    assert parsed is None or isinstance(parsed, JobRequest)
    if parsed is not None:
        assert parsed.task in ("transcribe", "translate")
        assert parsed.language.isalpha() and parsed.language.islower()
        assert isinstance(parsed.machine_id, str) and len(parsed.machine_id) <= 256


@settings(max_examples=500, deadline=None)
@given(texts | st.none())
def test_streaming_message_parser(text: str | None) -> None:
    try:
        parsed = parse_message(text)
        samples = None if parsed is None else audio_of(parsed)
    except SpeechGWError as exc:
        assert wire_message(exc) in {
            "Invalid Message Format",
            "Missing Audio Field",
            "Audio Decoding Error",
        }
        return
    assert parsed is None or isinstance(samples, np.ndarray)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64), st.integers(-(10**12), 10**12) | st.none())
def test_streaming_audio_round_trips(pcm: bytes, rate: int | None) -> None:
    text = json.dumps({"audio": base64.b64encode(pcm).decode(), "rate": rate})
    parsed = parse_message(text)
    assert parsed is not None
    try:
        samples = audio_of(parsed)
    except SpeechGWError as exc:
        assert len(pcm) % 2 == 1 and wire_message(exc) == "Audio Decoding Error"
        return
    # LINEAR16 -> float -> LINEAR16 gives back every sample exactly
    assert to_pcm16(samples).tobytes() == pcm
    assert parsed["rate"] == rate


BASE64_FORMS = {
    "standard": lambda data: base64.b64encode(data).decode(),
    "MIME line breaks": lambda data: base64.encodebytes(data).decode(),
    "CRLF every 64": lambda data: "\r\n".join(textwrap.wrap(base64.b64encode(data).decode(), 64)),
    "URL-safe": lambda data: base64.urlsafe_b64encode(data).decode(),
    "no padding": lambda data: base64.b64encode(data).decode().rstrip("="),
    "URL-safe, no padding": lambda data: base64.urlsafe_b64encode(data).decode().rstrip("="),
}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(sorted(BASE64_FORMS)))
def test_base64_as_other_encoders_write_it_gives_the_same_bytes(data: bytes, form: str) -> None:
    """A client whose encoder wraps lines (GNU ``base64``, Python's ``encodebytes``, Java's
    MIME encoder), writes the URL-safe alphabet or leaves padding off sends the same audio."""
    assert decode_base64(BASE64_FORMS[form](data)) == data


def _decoded(decode, text: str) -> bytes | str:
    """What a decoder makes of ``text``: its bytes, or the error's wire message."""
    try:
        result = decode(text)
    except InvalidAudio as refused:
        return wire_message(refused)
    return result if isinstance(result, bytes) else b"".join(result)


@settings(max_examples=400, deadline=None)
@given(
    st.binary(max_size=300).map(lambda data: base64.b64encode(data).decode())
    | st.tuples(st.binary(max_size=300), st.sampled_from(sorted(BASE64_FORMS))).map(
        lambda pair: BASE64_FORMS[pair[1]](pair[0])
    )
    | st.text(alphabet="AQgw+/=-_ \n*\u00e9", max_size=80),
    st.sampled_from([4, 8, 12, 64]),
)
@example("AA==AAAA", 4)  # padding that ends a piece but not the text
@example("AAA=AAAAAAAA", 8)
@example("AAAAAAAAAAA", 4)  # padding left off
@example("AAAA*AAAAAAA", 4)  # a character outside both alphabets, in a later piece
def test_base64_decoded_in_pieces_is_decoded_as_in_one_call(text: str, piece_chars: int) -> None:
    """A long ``audio`` decoded a piece at a time (so that one large message does not hold
    the server) gives the same bytes as one call, or the same refusal, whatever its form."""
    in_pieces = _decoded(lambda t: asyncio.run(decode_base64_in_pieces(t, piece_chars)), text)
    assert in_pieces == _decoded(decode_base64, text)


@pytest.mark.parametrize("size", [DECODE_PIECE_CHARS // 4 * 3 * 3 + 2, DECODE_PIECE_CHARS * 2 + 1])
def test_a_long_audio_field_gives_the_samples_of_one_call_or_is_refused_whole(size: int) -> None:
    """A message of several pieces of base64: its samples, piece after piece, are the samples
    of one call; with half a sample at the end it is refused whole (none of it fed first)."""
    pcm = random.Random(size).randbytes(size)
    message = {"audio": base64.b64encode(pcm).decode()}
    if size % 2:
        with pytest.raises(InvalidAudio) as refused:
            asyncio.run(audio_of_message(message))
        assert wire_message(refused.value) == "Audio Decoding Error"
        return
    pieces = asyncio.run(audio_of_message(message))
    assert len(pieces) > 1
    assert np.concatenate(pieces).tobytes() == audio_of(message).tobytes() == pcm


@pytest.mark.parametrize(
    "text",
    [
        "@@not base64@@",
        "AAAA+AA-",  # the two alphabets mixed
        "AAAAA",  # a length no encoder writes
        "AA==AA==",  # padding inside
        "AAAA\u00e9AAA",
        "AA*A",
    ],
)
def test_base64_that_no_encoder_writes_is_refused_not_skipped(text: str) -> None:
    with pytest.raises(InvalidAudio) as refused:
        decode_base64(text)
    assert wire_message(refused.value) == "Audio Decoding Error"


@settings(max_examples=200, deadline=None)
@given(
    key=st.binary(min_size=4, max_size=4),
    size=st.integers(min_value=0, max_value=9000),
    cuts=st.lists(st.integers(min_value=0, max_value=9000), max_size=6),
)
def test_numpy_unmasking_gives_wsprotos_bytes(key: bytes, size: int, cuts: list[int]) -> None:
    """A masked frame arriving in chunks of any sizes, small and large: the payload unmasked
    with numpy (``speechgw._wsproto_compat``) is byte for byte what wsproto's own code gives,
    the key rotating across chunks."""
    from wsproto.frame_protocol import XorMaskerSimple

    from speechgw._wsproto_compat import unmask_with_numpy

    data = random.Random(size).randbytes(size)
    unmask_with_numpy()
    original = XorMaskerSimple.process.__wrapped__  # type: ignore[attr-defined]
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    chunks = [data[a:b] for a, b in itertools.pairwise(bounds)]
    theirs = XorMaskerSimple(key)
    expected = b"".join(bytes(original(theirs, c)) for c in chunks)
    ours = XorMaskerSimple(key)
    assert b"".join(bytes(ours.process(c)) for c in chunks) == expected


@pytest.mark.parametrize(
    ("tag", "language", "canonical"),
    [
        ("en-US", "en", "en-US"),
        ("en_us", "en", "en-US"),  # Java's and Android's locales
        ("pt-br", "pt", "pt-BR"),
        ("es-419", "es", "es-419"),
        ("zh-hant-tw", "zh", "zh-Hant-TW"),
        ("cmn-Hans-CN", "zh", "cmn-Hans-CN"),  # Google's code for Mandarin
        ("iw-IL", "he", "iw-IL"),  # ISO 639's retired code for Hebrew, still in Google's list
        ("nb-NO", "no", "nb-NO"),
        ("fil-PH", "tl", "fil-PH"),
        (" de ", "de", "de"),
        ("english", None, None),
        ("", None, None),
    ],
)
def test_language_tags_name_the_language_and_keep_their_region(
    tag: str, language: str | None, canonical: str | None
) -> None:
    """What routing and Whisper see (the language) and what a backend with a model per
    region (Google) is sent (the tag, in its canonical case)."""
    assert from_bcp47(tag) == language
    assert canonical_tag(tag) == canonical


@pytest.mark.parametrize(
    ("named", "language"),
    [
        ("german", "de"),  # as OpenAI's verbose_json writes it
        ("English", "en"),
        (" Haitian  Creole ", "ht"),
        ("Castilian", "es"),  # openai-whisper's other names
        ("lao", "lo"),  # a name, not the ISO 639-2 code it also is
        ("de-DE", "de"),
        ("DE", "de"),
        ("klingon", None),
        ("", None),
    ],
)
def test_a_language_may_be_named_by_code_tag_or_english_name(
    named: str, language: str | None
) -> None:
    assert language_of(named) == language
