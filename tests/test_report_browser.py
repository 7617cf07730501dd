"""The comparison report, opened in a real browser: headless Chromium (Debian's package) driven by Playwright.

The report is meant to be a self-contained offline page: it must load from file:// with no failed request,
no console error and no script error, every inline PNG must decode, and the page must render (a screenshot
that is not blank). Chromium is installed here where it is missing (as root, with apt-get: ~35 s on the
2-core VM); the test is skipped, saying why, only when that cannot be done. Playwright is the `browser`
extra (`make setup` installs it); its own browser download (`playwright install`) is never used.
"""
from __future__ import annotations

import shutil

import pytest

from browser_support import CHROMIUM_ARGS, SCREENSHOT_COPY
from lorabench.cli import main

CONFIG = """
name: browser
data: {max_train_samples: 160, max_eval_samples: 80}
model: {max_length: 48}
train: {epochs: 1, batch_size: 16, learning_rate: 1.0e-3}
models:
  - name: tfidf-logreg
  - name: tiny-bert
    label: tiny BERT
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A real report.html from `lorabench compare` on tiny models (~15 s on 2 cores)."""
    tmp = tmp_path_factory.mktemp("browser-report")
    cfg = tmp / "browser.yaml"
    cfg.write_text(CONFIG)
    out = tmp / "runs"
    assert main(["compare", str(cfg), "--output-dir", str(out)]) == 0
    path = out / "report.html"
    assert path.is_file()
    return path


@pytest.mark.browser
def test_report_renders_in_headless_chromium(chromium, report, tmp_path):
    sync_playwright, executable = chromium
    console_errors, page_errors, failed, bad_status = [], [], [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS, timeout=60_000)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: console_errors.append(f"{m.text} ({m.location})")
                    if m.type == "error" else None)
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            page.on("requestfailed", lambda r: failed.append(f"{r.url[:120]}: {r.failure}"))
            page.on("response", lambda r: bad_status.append(f"{r.url[:120]}: {r.status}") if r.status >= 400 else None)
            response = page.goto(report.resolve().as_uri(), wait_until="load", timeout=30_000)
            assert response is None or response.ok
            page.wait_for_load_state("networkidle", timeout=15_000)

            images = page.eval_on_selector_all(
                "img", "els => els.map(e => ({alt: e.alt, complete: e.complete, w: e.naturalWidth, h: e.naturalHeight}))")
            headings = page.eval_on_selector_all("h1, h2, h3", "els => els.map(e => e.textContent.trim())")
            # the results table fits a 1280 px screen: no sideways scrolling, no row name wrapped over many lines
            fit = page.evaluate("""() => { const box = document.querySelector('div.scroll');
                const t = box.querySelector('table');
                return {scroll: box.scrollWidth, client: box.clientWidth, page: document.documentElement.scrollWidth,
                        window: window.innerWidth, header: Array.from(t.rows[0].cells).map(c => c.textContent),
                        rows: Array.from(t.rows).slice(1).map(r => r.getBoundingClientRect().height)}; }""")
            verdict = page.eval_on_selector_all(".verdict", "els => els.map(e => e.textContent)")
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    shutil.copyfile(shot, SCREENSHOT_COPY)

    assert console_errors == [], console_errors
    assert page_errors == [], page_errors
    assert failed == [], failed
    assert bad_status == [], bad_status

    # every plot decodes: a broken data: URL leaves a 0x0 image (Chromium also logs it as a console error)
    assert len(images) >= 5, images
    broken = [i["alt"] for i in images if not (i["complete"] and i["w"] > 0 and i["h"] > 0)]
    assert broken == [], broken
    alts = {i["alt"] for i in images}
    assert {"F1", "Peak memory", "text lengths", "confusion matrix of tiny BERT", "quality against serving cost",
            "reliability diagram"} <= alts, alts

    assert headings[0] == "runs", headings  # the report's folder name
    for h in ("Results", "Details", "Is the difference real?", "Quality against serving cost", "Where the models fail",
              "Calibration", "Data", "F1 against training time", "Peak memory", "Runs"):
        assert h in headings, (h, headings)
    assert headings.index("Results") == 1  # the verdict and the table come first
    assert len(verdict) == 1 and verdict[0].startswith("Verdict: "), verdict

    assert fit["scroll"] <= fit["client"] and fit["page"] <= fit["window"], fit
    assert {"val F1", "Δ F1 vs best", "predict rows/s", "1-row latency", "export size"} <= set(fit["header"]), fit
    assert max(fit["rows"]) < 4 * 22, fit  # at most ~3 lines of 14 px text per row

    _assert_not_blank(shot)


def _assert_not_blank(png):
    """A rendered page, not a blank (white or single-colour) one: many colours, a fair share of ink."""
    from PIL import Image
    with Image.open(png) as im:
        rgb = im.convert("RGB")
    width, height = rgb.size
    assert width >= 1000 and height > 900, rgb.size  # full page: taller than the viewport
    small = rgb.resize((width // 4, height // 4))
    colours = small.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50, len(colours or [])
    ink = sum(n for n, c in colours if min(c) < 240) / (small.width * small.height)
    assert ink > 0.03, f"only {ink:.1%} of the screenshot is not white"
