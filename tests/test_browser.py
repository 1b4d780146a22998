"""The figure set's index.html in a real browser (headless Chromium): every image loads and decodes, the
page logs nothing to the console, and a screenshot shows the page (a title, then the figures).

Skips with its reason where no Chromium is installed (``apt-get install chromium``; .ci/run does that).
"""

import html.parser
import json
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from jaxviz import figures as F

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--allow-file-access-from-files"]
# The smallest demo set that still has every kind of figure (a minute at most on 2 CPU cores).
TINY_SET = dict(pattern_layers=("block1_conv1",), pattern_methods=("keras",), pattern_filters=4, pattern_steps=1,
                single_layer="block1_conv1", single_size=32, kernel_filters=8, feature_maps=8,
                deepvis_classes=(3, 5), deepvis_steps=1, gradcam_top=3, progress=False)


def _browser():
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no Chromium found (tried " + ", ".join(BROWSERS) + "); install it with: apt-get install chromium")


@pytest.fixture(scope="module")
def figure_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("figset")
    F.make_figures("vgg_demo", "imagenet", None, out, **TINY_SET)
    return out


class _Images(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs)["src"])


def _run(browser, *args, timeout=90):
    return subprocess.run([browser, *FLAGS, *args], capture_output=True, text=True, timeout=timeout)


def test_every_image_loads_and_the_console_is_quiet(figure_set):
    browser = _browser()
    parser = _Images()
    parser.feed((figure_set / "index.html").read_text())
    assert len(parser.srcs) >= 10
    # A probe page next to index.html loads each of its images as the page does (same relative paths) and
    # writes what the browser decoded into the DOM, which --dump-dom prints.
    probe = figure_set / "probe.html"
    probe.write_text(
        "<!doctype html><html><body><pre id='r'></pre><script>"
        f"const srcs = {json.dumps(parser.srcs)}; const out = {{}}; let left = srcs.length;"
        "function done(s, ok, w) { out[s] = [ok, w]; if (--left === 0) "
        "document.getElementById('r').textContent = JSON.stringify(out); }"
        "for (const s of srcs) { const im = new Image(); im.onload = () => done(s, true, im.naturalWidth);"
        "im.onerror = () => done(s, false, 0); im.src = s; }"
        "</script></body></html>")
    res = _run(browser, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    text = res.stdout.split("<pre id=\"r\">", 1)[-1].split("</pre>", 1)[0]
    loaded = json.loads(text)
    assert set(loaded) == set(parser.srcs)
    assert [s for s, (ok, w) in loaded.items() if not (ok and w > 0)] == []
    probe.unlink()
    # The page itself: Chromium logs every console message of a page at INFO level on stderr.
    res = _run(browser, "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", "--dump-dom",
               (figure_set / "index.html").as_uri())
    assert res.returncode == 0
    assert [line for line in res.stderr.splitlines() if ":CONSOLE" in line] == []
    assert "What vgg_demo learned" in res.stdout


def test_screenshot_shows_the_title_and_the_figures(figure_set, tmp_path):
    browser = _browser()
    shot = tmp_path / "index.png"
    res = _run(browser, f"--screenshot={shot}", "--window-size=1280,2400", "--virtual-time-budget=5000",
               (figure_set / "index.html").as_uri())
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    page = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert page.shape[:2] == (2400, 1280)
    top = page[:120]
    assert (top.sum(-1) < 200).mean() > 0.002  # the h1 title: dark text on white
    colour = np.ptp(page, axis=-1) > 60  # saturated pixels: heatmaps, patterns, DeepVis images
    assert colour.mean() > 0.01
    assert (page.sum(-1) > 740).mean() > 0.3  # and a white page around them, not a blank or error screen
    shutil.copy(shot, figure_set / "_screenshot.png")  # kept with the set for a look when debugging
