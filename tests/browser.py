"""Headless Chromium driven over the Chrome DevTools Protocol, with nothing but the
``websockets`` client the tests already use (no Playwright, no Selenium).

``--use-fake-device-for-media-stream --use-file-for-fake-audio-capture=F.wav`` makes F.wav the
microphone. Waiting is done inside the page: :meth:`Browser.wait_for` resolves a promise from a
MutationObserver when a condition on the page becomes true.
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import subprocess
import time
import urllib.request
from itertools import count
from pathlib import Path
from typing import Any

from websockets.sync.client import connect


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    def __init__(
        self,
        url: str,
        profile: Path,
        fake_microphone: Path | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        args = [
            chromium_path() or "chromium",
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "--use-fake-ui-for-media-stream",
            "--autoplay-policy=no-user-gesture-required",
            "--window-size=1100,1200",
            *extra_args,
        ]
        if fake_microphone is not None:
            args += [
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={fake_microphone}%noloop",
            ]
        self.process = subprocess.Popen(
            [*args, url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.close()
                raise RuntimeError("chromium did not start")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            pages = [t for t in json.load(r) if t["type"] == "page"]
        self._stack = contextlib.ExitStack()
        self._ws = self._stack.enter_context(
            connect(pages[0]["webSocketDebuggerUrl"], max_size=None)
        )
        self._ids = count(1)
        self.call("Runtime.enable")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        message_id = next(self._ids)
        self._ws.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self._ws.recv(timeout=120))
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def evaluate(self, expression: str, timeout_ms: int = 60_000) -> Any:
        result = self.call(
            "Runtime.evaluate",
            expression=expression,
            returnByValue=True,
            awaitPromise=True,
            timeout=timeout_ms,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, condition: str, timeout_s: float = 60) -> None:
        """Resolve when the JavaScript ``condition`` is true, re-checked on every DOM change."""
        ok = self.evaluate(
            f"""new Promise((resolve) => {{
                const check = () => {{
                    if ({condition}) {{ observer.disconnect(); resolve(true); }}
                }};
                const observer = new MutationObserver(check);
                observer.observe(document.body, {{subtree: true, childList: true,
                                                 characterData: true, attributes: true}});
                setTimeout(() => {{ observer.disconnect(); resolve(false); }}, {timeout_s * 1000});
                check();
            }})""",
            timeout_ms=int(timeout_s * 1000) + 5000,
        )
        assert ok, f"the page never got to: {condition}; status: " + str(
            self.evaluate("document.getElementById('status').textContent")
        )

    def wait_loaded(self) -> None:
        deadline = time.monotonic() + 30
        # the tab can still be about:blank (already "complete") when DevTools first lists it
        loaded = "location.protocol.startsWith('http') && document.readyState === 'complete'"
        while not self.evaluate(loaded):
            assert time.monotonic() < deadline, "the page did not load"
            time.sleep(0.05)

    def click(self, selector: str) -> None:
        self.evaluate(f"document.querySelector({json.dumps(selector)}).click()")

    def set_file(self, selector: str, path: Path) -> None:
        found = self.call(
            "Runtime.evaluate", expression=f"document.querySelector({json.dumps(selector)})"
        )
        self.call("DOM.setFileInputFiles", objectId=found["result"]["objectId"], files=[str(path)])

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        if getattr(self, "_stack", None) is not None:
            self._stack.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
