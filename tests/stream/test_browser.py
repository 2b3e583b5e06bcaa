"""The real thing: headless Chromium opens the page, streams its (fake, real-clip) camera through
`stylestream serve`, shows the stylized video and switches style. Saves a screenshot."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.serve_process import ServeProcess

CHROMIUM = "/usr/bin/chromium"
pytestmark = [pytest.mark.browser, pytest.mark.slow]


def make_y4m(media: Path, out: Path) -> Path:
    """A fake-camera clip from the real webcam clip; Chrome needs 'C420', ffmpeg writes 'C420mpeg2'."""
    if not shutil.which("ffmpeg"):
        pytest.fail("ffmpeg is required for the browser test (.ci/run installs it)")
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(media / "video" / "webcam_walk.mkv"), "-vf", "scale=320:240",
         "-pix_fmt", "yuv420p", "-t", "2", str(out)], check=True,
    )  # fmt: skip
    data = out.read_bytes()
    head, _, rest = data.partition(b"\n")
    out.write_bytes(head.replace(b"C420mpeg2", b"C420") + b"\n" + rest)
    return out


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def session_gone(url: str, timeout: float = 5.0) -> bool:
    """True once the session's own URL answers 404 (listing all sessions needs the admin token)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            get_json(url)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return True
            raise
        time.sleep(0.1)
    return False


@pytest.fixture
def server(tmp_path):
    srv = ServeProcess(tmp_path, "--style", "edges")
    srv.wait_ready()
    yield srv.base, srv.proc
    srv.stop()


FRAME_DIFF_JS = """() => {
  const grab = (v) => { const c = document.createElement('canvas'); c.width = 160; c.height = 120;
    const g = c.getContext('2d'); g.drawImage(v, 0, 0, 160, 120); return g.getImageData(0, 0, 160, 120).data; };
  const a = grab(document.getElementById('camera')), b = grab(document.getElementById('output'));
  let d = 0; for (let i = 0; i < a.length; i += 4) d += Math.abs(a[i] - b[i]) + Math.abs(a[i+1] - b[i+1]);
  return d / (a.length / 2);
}"""


def test_page_streams_camera_stylized_and_switches_style(server, media, tmp_path):
    from playwright.sync_api import sync_playwright

    base, _proc = server
    y4m = make_y4m(media, tmp_path / "cam.y4m")
    args = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-video-capture={y4m}", "--no-sandbox", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"]  # fmt: skip
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            context = browser.new_context(viewport={"width": 1200, "height": 860})
            context.grant_permissions(["camera"], origin=base)
            page = context.new_page()
            page.goto(base + "/")
            page.wait_for_selector('.style[data-style="sketch"]')
            page.click("#start")
            page.wait_for_function(
                "() => { const v = document.getElementById('output');"
                " return v.readyState >= 2 && v.videoWidth > 0 && v.currentTime > 0.5; }", timeout=30000,
            )  # fmt: skip
            t0 = page.evaluate("document.getElementById('output').currentTime")
            page.wait_for_timeout(1000)
            assert page.evaluate("document.getElementById('output').currentTime") > t0, "output video is frozen"
            diff_edges = page.evaluate(FRAME_DIFF_JS)
            assert diff_edges > 40, f"stylized output looks like the camera (mean diff {diff_edges:.1f})"

            sid = page.evaluate("window.stylestream.session")
            page.click('.style[data-style="sketch"]')
            page.wait_for_timeout(1500)
            assert get_json(f"{base}/api/sessions/{sid}")["style"] == "sketch"
            assert page.inner_text("#current-style") == "sketch"
            diff_sketch = page.evaluate(FRAME_DIFF_JS)
            assert diff_sketch > 20 and abs(diff_sketch - diff_edges) > 5, (diff_edges, diff_sketch)
            page.wait_for_timeout(1200)  # one stats refresh
            assert "→" in page.inner_text("#stat-size") and page.inner_text("#stat-backend") == "opencv"
            shot = tmp_path / "page.png"
            page.screenshot(path=str(shot))
            shutil.copy(shot, Path(os.environ.get("STYLESTREAM_SCREENSHOT", "/tmp/stylestream_page.png")))
            assert shot.stat().st_size > 10_000

            page.click("#stop")
            assert session_gone(f"{base}/api/sessions/{sid}"), "Stop must end the server session"
        finally:
            browser.close()
