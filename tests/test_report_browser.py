"""The report in a real browser: headless Chromium loads the page from disk (network off), the
figures decode, the eval table renders, and a screenshot shows a page that is not blank.
Skipped where no Chromium is installed (CI installs Debian's `chromium`)."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from report_fakes import make_raft_run

from rlhfx.plugins.report import write_report

BROWSER = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))
                if p), None)
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no Chromium installed")

#: Appended to a copy of the page: after the load event, writes what rendered into the DOM,
#: where --dump-dom reads it back.
PROBE = """<script>
window.addEventListener("load", () => {
  const box = (el) => el.getBoundingClientRect();
  const out = {
    images: [...document.querySelectorAll("img.figure")].map((img) => ({
      file: img.dataset.file, complete: img.complete, natural: img.naturalWidth,
      shown: Math.round(box(img).width) })),
    tables: Object.fromEntries([...document.querySelectorAll("table")].map((t) =>
      [t.id, { rows: t.rows.length, height: Math.round(box(t).height),
               cells: [...t.rows].slice(0, 2).map((r) => [...r.cells].map((c) => c.innerText)) }])),
  };
  const pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-extensions", f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1280,2000", *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, cwd=tmp_path)


def test_report_renders_in_chromium(tmp_path):
    run = make_raft_run(tmp_path / "run")
    page = write_report(run)
    probed = page.with_name("probed.html")
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"),
                      encoding="utf-8")

    dom = chromium(tmp_path, "--virtual-time-budget=10000", "--dump-dom", probed.as_uri())
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom.stdout, re.S)
    assert found, (dom.stdout[-2000:], dom.stderr[-2000:])
    probe = json.loads(html.unescape(found.group(1)))

    images = probe["images"]
    assert [i["file"] for i in images][:2] == ["run-stage-times.png", "align-reward.png"]
    for image in images:  # every figure decoded (a broken image has naturalWidth 0)
        assert image["complete"] and image["natural"] == 640, image
        assert image["shown"] > 300, image  # and is laid out at a readable size
    table = probe["tables"]["eval-align"]
    assert table["rows"] == 4 and table["height"] > 60  # head, 2 prompts, mean reward
    # the prompt as a conversation: the role shown, the ###Human/###Assistant markers hidden
    assert table["cells"][1][:3] == ["USER: How do I cook rice?", "rice rice", "1"]
    assert probe["tables"]["summary-align"]["rows"] > 5

    shot = tmp_path / "report.png"
    result = chromium(tmp_path, f"--screenshot={shot}", page.as_uri())
    assert shot.exists(), result.stderr[-2000:]
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[:2] == (2000, 1280)
    assert pixels[..., :3].std() > 0.05  # text, tables and figures, not a blank page
