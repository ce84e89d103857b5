"""Optional LLM correction of transcripts, through an OpenAI-compatible chat-completions API.

vLLM, llama.cpp's server, Ollama and OpenAI all speak ``POST {base_url}/chat/completions``.
The HTTP call is the standard library's ``urllib`` in a worker thread under a capacity limiter:
a request or two per transcript does not justify another dependency. Failure never costs the
client its transcript: the raw text still comes back, with the reason in ``postprocess_error``.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

import anyio
import anyio.to_thread

from .config import PostprocessConfig

__all__ = ["GLOSSARY", "PostprocessResult", "Postprocessor"]

GLOSSARY = "\n\nThe speaker uses these names and terms; spell them exactly so: {}."
"""Added to the system prompt for a request that names ``keywords``."""


@dataclass(frozen=True, slots=True)
class PostprocessResult:
    text: str | None
    """The corrected text; None when the stage was off or failed."""
    milliseconds: int
    error: str | None
    """Why it failed; None when it worked or was off."""


OFF = PostprocessResult(text=None, milliseconds=0, error=None)


class Postprocessor:
    def __init__(self, config: PostprocessConfig) -> None:
        self.config = config
        self._limiter = anyio.CapacityLimiter(config.concurrency)

    @property
    def configured(self) -> bool:
        return bool(self.config.base_url and self.config.model)

    def wanted(self, requested: bool | None) -> bool:
        """Whether a request gets the stage: its own choice, else the server default."""
        return self.config.enabled if requested is None else requested

    async def correct(
        self, text: str, language: str, keywords: tuple[str, ...] = ()
    ) -> PostprocessResult:
        """``text`` corrected by the LLM; ``keywords``: the names and terms the client said
        the speaker uses (OpenAI's ``keywords[]``), told to the LLM as they are spelled, so
        that it keeps what the recogniser got right from them instead of "correcting" it."""
        if not self.configured:
            return PostprocessResult(None, 0, "post-processing is not configured on this server")
        if not text.strip():
            return PostprocessResult(text, 0, None)
        started = time.monotonic()
        with anyio.move_on_after(self.config.timeout_seconds):
            try:
                corrected = await anyio.to_thread.run_sync(
                    self._call,
                    text,
                    language,
                    keywords,
                    limiter=self._limiter,
                    abandon_on_cancel=True,
                )
            except _Failure as exc:
                return PostprocessResult(None, _ms(started), str(exc))
            return PostprocessResult(corrected, _ms(started), None)
        return PostprocessResult(
            None, _ms(started), f"timeout after {self.config.timeout_seconds:g} s"
        )

    def _call(self, text: str, language: str, keywords: tuple[str, ...]) -> str:
        config = self.config
        system = config.prompts.get(language, config.prompt)
        if keywords:
            system += GLOSSARY.format(", ".join(keywords))
        body = {
            "model": config.model,
            "temperature": config.temperature,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": text},
            ],
        }
        headers = {"Content-Type": "application/json"}
        if config.api_key:
            headers["Authorization"] = f"Bearer {config.api_key}"
        request = urllib.request.Request(
            f"{config.base_url.rstrip('/')}/chat/completions",  # type: ignore[union-attr]
            data=json.dumps(body).encode(),
            headers=headers,
            method="POST",
        )
        deadline = time.monotonic() + config.timeout_seconds
        try:
            with urllib.request.urlopen(request, timeout=config.timeout_seconds) as response:
                payload = _read_body(response, deadline, config.timeout_seconds)
        except urllib.error.HTTPError as exc:
            exc.close()  # it holds the response's socket
            raise _Failure(f"the LLM endpoint answered HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, TimeoutError):
                raise _Failure(f"timeout after {config.timeout_seconds:g} s") from None
            raise _Failure(f"the LLM endpoint is unreachable: {reason}") from None
        except http.client.HTTPException as exc:  # not HTTP, or its answer cut short
            raise _Failure(f"the LLM endpoint broke HTTP: {type(exc).__name__}") from None
        try:
            content = json.loads(payload)["choices"][0]["message"]["content"]
        except (ValueError, RecursionError, KeyError, IndexError, TypeError):
            raise _Failure("the LLM endpoint sent a malformed response") from None
        return _answer(content)


_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"


def _answer(content: object) -> str:
    """The corrected text in a message's ``content``: a string, or a list of content parts
    (``[{"type": "text", "text": ...}]``, as some OpenAI-compatible servers send it), without
    the reasoning that reasoning models (DeepSeek-R1, Qwen3, QwQ behind Ollama, vLLM or
    llama.cpp without a reasoning parser) write before it between ``<think>`` and
    ``</think>``; some chat templates put the opening tag in the prompt, so the answer may
    hold only the closing one. Without this the client's ``postprocessed_text`` would carry
    the model's musings."""
    if isinstance(content, list):
        content = "".join(
            part["text"]
            for part in content
            if isinstance(part, dict)
            and part.get("type") == "text"
            and isinstance(part.get("text"), str)
        )
    if not isinstance(content, str):
        raise _Failure("the LLM endpoint sent no text")
    if _THINK_CLOSE in content:
        content = content.rpartition(_THINK_CLOSE)[2]
    elif content.lstrip().startswith(_THINK_OPEN):
        raise _Failure("the LLM endpoint sent only reasoning: it stopped before its answer")
    if not content.strip():
        raise _Failure("the LLM endpoint sent no text")
    return content.strip()


class _Failure(Exception):
    """A post-processing failure, stated for the client."""


_MOST_RESPONSE_BYTES = 4 << 20
"""The most of an endpoint's response that is read: a corrected transcript of the longest
audio allowed is a few tens of KB. An endpoint that sends on (a proxy's error stream, a model
that never stops) is cut off there, not buffered without bound."""


def _read_body(response: http.client.HTTPResponse, deadline: float, timeout: float) -> bytes:
    """The response's body, read until ``deadline``: the socket's timeout bounds each read,
    not the whole, and an endpoint that drips its answer would otherwise keep this thread
    (abandoned by the request once it timed out) reading for as long as it drips."""
    payload = bytearray()
    while chunk := response.read1(65536):
        payload += chunk
        if len(payload) > _MOST_RESPONSE_BYTES:
            raise _Failure(
                f"the LLM endpoint sent more than {_MOST_RESPONSE_BYTES >> 20} MiB; cut off"
            )
        if time.monotonic() > deadline:
            raise _Failure(f"timeout after {timeout:g} s")
    if response.length:  # closed short of its Content-Length
        raise http.client.IncompleteRead(bytes(payload), response.length)
    return bytes(payload)


def _ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)
