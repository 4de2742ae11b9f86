"""The HTML feedback report rendered by a real browser: Debian's Chromium, headless, offline.

The page is opened from a file with the network switched off, screenshotted, and the screenshot's
pixels are read: the accepted (green) and overridden (red) bars of the chart must be drawn, in
proportion to the counts. FLUORO_CDS_UPDATE_SCREENSHOTS=1 copies the screenshot to
docs/feedback-report.png (the picture docs/service.md shows)."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from service.report import feedback_report, render_html
from tests.png_support import count_color
from tests.report_support import exercise
from tests.service_support import make_app

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
GREEN, RED = (0x2E, 0x7D, 0x32), (0xC6, 0x28, 0x28)


def screenshot(page: Path, out: Path, profile: Path, size: str = "1100,1300") -> None:
    """Headless Chromium takes a screenshot of a local file (no network, bounded)."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}",
           f"--window-size={size}", f"--screenshot={out}", page.as_uri()]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert result.returncode == 0 and out.exists(), result.stderr[-2000:]


def test_report_page_draws_its_charts_in_chromium(tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (tools/test-deps.sh installs it)")
    app = make_app(tmp_path)
    client = app.test_client()

    def post(path, body):
        resp = client.post(path, json=body)
        return resp.status_code, resp.get_json()

    exercise(post)
    report = feedback_report(app.config["FLUORO_STATE"])
    page = tmp_path / "report.html"
    page.write_text(render_html(report), encoding="utf-8")
    png = tmp_path / "report.png"
    screenshot(page, png, tmp_path / "profile")
    green, red = count_color(png, GREEN), count_color(png, RED)
    # 2 accepted and 3 overridden cards: both colours drawn, red about 1.5x green (bars and legend)
    assert green > 300 and red > 300, (green, red)
    assert 1.2 < red / green < 1.8, (green, red)
    if os.environ.get("FLUORO_CDS_UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(png, ROOT / "docs" / "feedback-report.png")
