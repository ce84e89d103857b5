"""Web pages of other origins calling the HTTP API (CORS, ``server.cors_allow_origins``): a real
headless Chromium on a page of another origin posts speech to the OpenAI-compatible route with
``fetch()``, as the OpenAI SDK does in a browser; and the headers a browser's preflight gets."""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import shutil
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from tests import speech
from tests.browser import Browser, chromium_path
from tests.serving import Server, running_server

KEY = "cors-test-key-0123"
AUTH = {"auth": {"keys": [{"name": "web", "key": KEY}]}}
SCRIPTED = {"null": {"type": "scripted", "text": "scripted words"}}
APP = "https://app.example.com"


def allowing(*origins: str) -> dict[str, Any]:
    return {**AUTH, "server": {"cors_allow_origins": list(origins)}}


def request(
    server: Server, method: str, path: str, headers: Mapping[str, str]
) -> tuple[int, Message]:
    """Status and headers, whatever the status."""
    sent = urllib.request.Request(server.http + path, method=method, headers=dict(headers))
    try:
        with urllib.request.urlopen(sent, timeout=30) as response:
            return response.status, response.headers
    except urllib.error.HTTPError as refused:
        with refused:
            return refused.code, refused.headers


def preflight(server: Server, origin: str) -> tuple[int, Message]:
    """What a browser asks before it POSTs with an Authorization header (the SDK's own
    ``x-stainless-*`` headers too)."""
    return request(
        server,
        "OPTIONS",
        "/v1/audio/transcriptions",
        {
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,x-stainless-os",
        },
    )


def test_the_listed_origins_pass_the_preflight_and_read_errors() -> None:
    with running_server(allowing(APP.upper()), backends=SCRIPTED) as server:
        status, headers = preflight(server, APP)  # as browsers write it: in lower case
        assert status == 200 and headers["Access-Control-Allow-Origin"] == APP
        allowed = headers["Access-Control-Allow-Headers"].lower()
        assert "authorization" in allowed and "x-stainless-os" in allowed
        assert "POST" in headers["Access-Control-Allow-Methods"]
        # another origin is refused, and told nothing a browser would accept
        status, headers = preflight(server, "https://elsewhere.example.com")
        assert status == 400 and headers["Access-Control-Allow-Origin"] is None
        # an error answers with the headers too, so the page can read why it was refused
        status, headers = request(server, "GET", "/v1/models", {"Origin": APP})
        assert status == 401 and headers["Access-Control-Allow-Origin"] == APP
        assert "retry-after" in headers["Access-Control-Expose-Headers"].lower()
    with running_server(AUTH, backends=SCRIPTED) as server:  # none listed: no CORS at all
        status, headers = preflight(server, APP)  # OPTIONS is no method of the API: 404
        assert status == 404 and headers["Access-Control-Allow-Origin"] is None


FETCH = """(async () => {
    const audio = await (await fetch('/speech.wav')).blob();
    const form = new FormData();
    form.append('file', audio, 'speech.wav');
    form.append('model', 'whisper-1');
    try {
        const response = await fetch(%(url)s + '/v1/audio/transcriptions', {
            method: 'POST', headers: {Authorization: 'Bearer ' + %(key)s}, body: form});
        return {status: response.status, body: await response.json(),
                requestId: response.headers.get('X-Request-Id')};
    } catch (error) {
        return {error: String(error)};
    }
})()"""


@contextlib.contextmanager
def web_page(folder: Path) -> Iterator[str]:
    """A static web server for ``folder`` on a port of its own: an origin other than the
    gateway's. Yields the origin."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def fetch_from_page(origin: str, server: Server, key: str, profile: Path) -> dict[str, Any]:
    browser = Browser(origin + "/index.html", profile)
    try:
        browser.wait_loaded()
        return browser.evaluate(FETCH % {"url": json.dumps(server.http), "key": json.dumps(key)})
    finally:
        browser.close()


def test_a_page_of_another_origin_transcribes_with_fetch(voices, tmp_path: Path) -> None:
    if chromium_path() is None:
        pytest.skip("chromium is not installed (scripts/setup.sh --test installs it)")
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<!doctype html><title>another origin</title><body></body>")
    shutil.copy(voices["children"], site / "speech.wav")
    with web_page(site) as origin:
        with running_server(allowing(origin)) as server:
            answer = fetch_from_page(origin, server, KEY, tmp_path / "p1")
            assert answer.get("status") == 200, answer
            text = answer["body"]["text"]
            assert speech.word_recall(speech.SENTENCES["children"], text) >= 0.75, text
            assert answer["requestId"], "X-Request-Id is exposed to the page"
            refused = fetch_from_page(origin, server, "wrong-key", tmp_path / "p2")
            assert refused.get("status") == 401, refused
            assert refused["body"]["error"]["code"] == "unauthorized", refused
        with running_server(AUTH, backends=SCRIPTED) as server:  # the origin is not listed
            blocked = fetch_from_page(origin, server, KEY, tmp_path / "p3")
            assert "Failed to fetch" in blocked.get("error", ""), blocked
