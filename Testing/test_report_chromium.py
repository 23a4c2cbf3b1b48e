"""The HTML reports in a real browser: headless Chromium (Debian package ``chromium``).

Chromium is driven through the DevTools protocol over a pipe (``--remote-debugging-pipe``: file
descriptors 3 and 4, JSON messages ending in NUL), so the test sees what a reader would: the
page's load event, every console error and uncaught exception, every network request (a
self-contained report makes none besides its own file and ``data:`` images), whether each
image decoded, and a screenshot of the DVH plot, which must show the plot's coloured curves.
Skipped, with the reason, only when no Chromium is installed.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sbrtstandards.cli.main import main

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium")
                 if p and os.path.exists(p)), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium)")

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
    "--disable-background-networking", "--disable-component-update", "--disable-extensions", "--hide-scrollbars",
    "--mute-audio", "--window-size=1280,1024", "--remote-debugging-pipe",
]
TAB10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


# Chromium reads the protocol on fd 3 and writes on fd 4: move the pipe ends there, then exec it.
_LAUNCH = (
    "import fcntl, os, sys\n"
    "r, w = (fcntl.fcntl(int(fd), fcntl.F_DUPFD, 10) for fd in sys.argv[1:3])\n"
    "os.dup2(r, 3)\n"
    "os.dup2(w, 4)\n"
    "os.execv(sys.argv[3], sys.argv[3:])\n"
)


class Browser:
    """A minimal DevTools-protocol client over Chromium's pipe."""

    def __init__(self, profile: Path) -> None:
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _LAUNCH, str(to_chrome_r), str(from_chrome_w), CHROMIUM, *FLAGS,  # type: ignore[list-item]
             f"--user-data-dir={profile}", "about:blank"],
            pass_fds=(to_chrome_r, from_chrome_w), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def close(self) -> None:
        with contextlib.suppress(Exception):  # the browser may already be gone
            self.send("Browser.close", timeout=10)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        os.close(self._to_chrome)
        os.close(self._from_chrome)

    def _read_message(self, timeout: float) -> dict[str, Any]:
        import select

        deadline = time.monotonic() + timeout
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_chrome], [], [], left)[0]:
                raise TimeoutError("no message from Chromium")
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise EOFError("Chromium closed the pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float = 60.0) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read_message(timeout)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 60.0) -> dict[str, Any]:
        for i, event in enumerate(self.events):
            if event.get("method") == method:
                return self.events.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            event = self._read_message(max(0.01, deadline - time.monotonic()))
            if event.get("method") == method:
                return event
            self.events.append(event)


def render(html_path: Path, tmp: Path) -> dict[str, Any]:
    """Load ``html_path``; return errors, requests, images and a PNG of the DVH plot (if any)."""
    browser = Browser(tmp / "profile")
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.send(f"{domain}.enable", session=session)
        browser.send("Page.navigate", {"url": html_path.resolve().as_uri()}, session=session)
        browser.wait_for("Page.loadEventFired")
        state = browser.send("Runtime.evaluate", {"returnByValue": True, "expression": """
            JSON.stringify({
              images: Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete,
                       width: i.naturalWidth, height: i.naturalHeight})),
              title: document.title,
              tables: document.querySelectorAll('table').length,
              text: document.body.innerText.length
            })"""}, session=session)
        page = json.loads(state["result"]["value"])
        rect = browser.send("Runtime.evaluate", {"returnByValue": True, "expression": """
            (() => { const img = Array.from(document.images).find(i => /DVH/i.test(i.alt));
                     if (!img) return null; img.scrollIntoView();
                     const r = img.getBoundingClientRect();
                     return [r.x + window.scrollX, r.y + window.scrollY, r.width, r.height]; })()"""},
                            session=session)["result"].get("value")
        shot = None
        if rect:
            clip = {"x": rect[0], "y": rect[1], "width": rect[2], "height": rect[3], "scale": 1}
            data = browser.send("Page.captureScreenshot", {"format": "png", "clip": clip,
                                                           "captureBeyondViewport": True}, session=session)["data"]
            shot = base64.b64decode(data)
        time.sleep(0.2)  # let late console messages arrive
        browser.send("Runtime.evaluate", {"expression": "1"}, session=session)
    finally:
        browser.close()
    events = browser.events
    errors = [e for e in events if e.get("method") == "Runtime.exceptionThrown"]
    errors += [e for e in events if e.get("method") == "Runtime.consoleAPICalled"
               and e["params"].get("type") in ("error", "assert")]
    errors += [e for e in events if e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error"]
    errors += [e for e in events if e.get("method") == "Network.loadingFailed"]
    requests = [e["params"]["request"]["url"] for e in events if e.get("method") == "Network.requestWillBeSent"]
    return {"page": page, "errors": errors, "requests": requests, "dvh_png": shot}


def assert_report_renders(html: Path, tmp: Path, *, want_dvh: bool = True) -> dict[str, Any]:
    from PIL import Image

    seen = render(html, tmp)
    assert seen["errors"] == [], json.dumps(seen["errors"], indent=1)[:2000]
    assert all(u.startswith(("file:", "data:")) for u in seen["requests"]), seen["requests"]
    images = seen["page"]["images"]
    assert images and all(i["complete"] and i["width"] > 0 and i["height"] > 0 for i in images), images
    assert seen["page"]["tables"] >= 1
    if want_dvh:
        assert seen["dvh_png"] is not None, "no DVH plot in the page"
        img = np.asarray(Image.open(io.BytesIO(seen["dvh_png"])).convert("RGB")).reshape(-1, 3)
        assert img.shape[0] > 200 * 200  # drawn at a readable size
        colours = {tuple(c) for c in img[:: max(1, len(img) // 200000)]}
        assert len(colours) > 50, f"{len(colours)} distinct colours: the plot looks blank"
        assert (img.min(axis=1) < 200).mean() > 0.02, "almost nothing drawn"
        curves = [tuple(int(h[k:k + 2], 16) for k in (1, 3, 5)) for h in TAB10]
        hits = sum(np.any(np.all(np.abs(img.astype(int) - c) <= 12, axis=1)) for c in curves)
        assert hits >= 3, f"only {hits} of the DVH curve colours are visible"
    return seen


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from sbrtstandards.phantom import write_case

    return write_case("lung", tmp_path_factory.mktemp("phantom") / "lung", phases=2, seed=2)


def test_check_report_renders_in_chromium(phantom: dict[str, Any], tmp_path: Path) -> None:
    files = phantom["files"]
    html = tmp_path / "report.html"
    with pytest.raises(SystemExit) as exit_info:
        main(["check", "--rtstruct", files["planning_rtstruct"], "--rtdose", files["rtdose"], "--rtplan",
              files["rtplan"], "--ct", files["planning_ct"], "--protocol", "cn-lung-sbrt", "--html", str(html),
              "--quiet"])
    assert exit_info.value.code == 0
    seen = assert_report_renders(html, tmp_path)
    assert seen["page"]["title"].startswith("SBRT plan check")
    assert len(seen["page"]["images"]) >= 2  # the DVH and at least the slice at the PTV centre


def test_score_sheet_renders_in_chromium(phantom: dict[str, Any], tmp_path: Path) -> None:
    from sbrtstandards.teaching import score_sheet, write_score_sheet_html

    rs = phantom["files"]["planning_rtstruct"]
    sheet = score_sheet(rs, rs, site="lung", structures=["ITV", "PTV"])
    html = write_score_sheet_html(sheet, tmp_path / "sheet.html")
    assert_report_renders(html, tmp_path, want_dvh=False)


def test_a_broken_page_is_caught(tmp_path: Path) -> None:
    """The harness itself: a script error and an external request must be reported."""
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><head><title>x</title></head><body><table></table>"
                    "<img alt='DVH plot' src='data:image/png;base64,iVBORw0KGgo='>"
                    "<script>console.error('boom'); undefined_function();</script></body></html>")
    seen = render(page, tmp_path)
    kinds = {e["method"] for e in seen["errors"]}
    assert "Runtime.exceptionThrown" in kinds and "Runtime.consoleAPICalled" in kinds
    assert seen["page"]["images"][0]["width"] == 0  # the truncated PNG did not decode


@pytest.mark.slow
def test_demo_report_renders_in_chromium(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--out", str(out)])
    assert exit_info.value.code == 0
    reports = sorted(out.rglob("report.html"))
    assert reports, "the demo wrote no report.html"
    assert_report_renders(reports[0], Path(tempfile.mkdtemp(dir=tmp_path)))
