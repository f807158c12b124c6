"""The report of a real (short) run, opened from disk in headless Chromium.

Chromium is driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: JSON messages
separated by NUL bytes on file descriptors 3 and 4), so no websocket library and no network port
are needed. The page must load with no console errors, no failed loads and no broken images; a
full-page screenshot is kept in tests/artifacts/ for a person to look at.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import random
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason=f"{CHROMIUM} not found (apt-get install chromium)"),
]

BROKEN_IMAGES = """JSON.stringify(Array.from(document.images)
    .filter(i => !i.complete || i.naturalWidth === 0).map(i => i.getAttribute('src')))"""


class Chromium:
    """Headless Chromium with a DevTools session on one page."""

    def __init__(self, profile: Path) -> None:
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def fds() -> None:  # in the child: commands on fd 3, replies on fd 4
            a, b = os.dup(to_child_r), os.dup(from_child_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
             "--remote-debugging-pipe", "--window-size=1280,900", "about:blank"],
            preexec_fn=fds, pass_fds=(3, 4), stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        self._inbox: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.session = self._attach()

    def _read(self) -> None:
        buffer = b""
        while chunk := os.read(self._from_child, 65536):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for message in messages:
                self._inbox.put(json.loads(message))

    def send(self, method: str, params: dict[str, Any] | None = None, session: bool = True,
             timeout: float = 60) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        reply = self.wait(lambda m: m.get("id") == self._next_id, timeout)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def wait(self, match: Any, timeout: float = 60) -> dict[str, Any]:
        """Next message that `match`es; events seen meanwhile are kept in self.events."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer from chromium")
            message = self._inbox.get(timeout=left)
            if "method" in message:
                self.events.append(message)
            if match(message):
                return message

    def _attach(self) -> str:
        self.session = ""
        targets = self.send("Target.getTargets", session=False)["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        return self.send("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True},
                         session=False)["sessionId"]

    def open(self, path: Path) -> None:
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable")
        self.send("Page.navigate", {"url": path.resolve().as_uri()})
        self.wait(lambda m: m.get("method") == "Page.loadEventFired", timeout=120)

    def evaluate(self, expression: str) -> Any:
        return self.send("Runtime.evaluate", {"expression": expression,
                                              "returnByValue": True})["result"].get("value")

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions, error log entries and failed loads."""
        found = []
        for event in self.events:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append(f"console: {params.get('args')}")
            elif method == "Runtime.exceptionThrown":
                found.append(f"exception: {params.get('exceptionDetails')}")
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                found.append(f"log: {params['entry'].get('text')} {params['entry'].get('url')}")
            elif method == "Network.loadingFailed":
                found.append(f"load failed: {params.get('errorText')}")
        return found

    def screenshot(self, path: Path) -> None:
        size = self.send("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 16000),
                "scale": 1}
        data = self.send("Page.captureScreenshot", {"format": "png", "clip": clip,
                                                    "captureBeyondViewport": True})["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.send("Browser.close", session=False, timeout=10)
        except (OSError, TimeoutError, RuntimeError):
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_child)


def render(page: Path, profile: Path, screenshot: Path | None = None) -> tuple[list[str], list]:
    browser = Chromium(profile)
    try:
        browser.open(page)
        broken = json.loads(browser.evaluate(BROKEN_IMAGES))
        if screenshot is not None:
            browser.screenshot(screenshot)
        time.sleep(0.5)  # late console messages
        return browser.errors(), broken
    finally:
        browser.close()
        shutil.rmtree(profile, ignore_errors=True)


def test_report_of_a_real_run_renders_cleanly(tiny_config, tmp_path: Path) -> None:
    """A run that overfits on purpose (noise labels, high constant lr, no early stopping): its
    training loss falls to ~0 while validation loss climbs, and the page must say so."""
    from conftest import make_reviews, write_jsonl

    from finetunekit.run import train

    rng = random.Random(0)
    rows = make_reviews(64, seed=3)
    for row in rows:
        row["score"] = rng.choice(["great", "other"])  # only memorising lowers training loss
    write_jsonl(Path(tiny_config.data.train), rows)
    tiny_config.output = str(tmp_path / "run")
    tiny_config.eval.metric = "loss"
    tiny_config.train.lr, tiny_config.train.scheduler = 3e-3, "constant"
    tiny_config.train.warmup_ratio = 0.0
    tiny_config.train.max_steps, tiny_config.train.eval_every = 60, 4
    tiny_config.train.log_every = 2
    tiny_config.train.early_stopping.patience = None
    run = train(tiny_config, progress=False)
    page = run.dir / "report.html"
    assert "possible overfitting" in page.read_text(encoding="utf-8")
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    errors, broken = render(page, tmp_path / "profile", shot)
    assert errors == []
    assert broken == []
    assert shot.is_file() and shot.read_bytes()[:4] == b"\x89PNG"
    shutil.copytree(run.dir / "plots", ARTIFACTS / "plots", dirs_exist_ok=True)
    shutil.copy(page, ARTIFACTS / "report.html")  # opens with its plots beside it


def test_checker_sees_broken_images(tmp_path: Path) -> None:
    """The check above can fail: a missing image is reported as broken and as a failed load."""
    page = tmp_path / "page.html"
    page.write_text('<!DOCTYPE html><html><body><img src="plots/missing.png" alt="x">'
                    "</body></html>")
    errors, broken = render(page, tmp_path / "profile")
    assert broken == ["plots/missing.png"]
    assert errors
