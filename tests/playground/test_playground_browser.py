"""The playground in a real browser: Debian's chromium driven by Playwright. Skipped
where either is missing, as the arena report's browser test is."""

from __future__ import annotations

import io
import shutil
import threading

import pytest

from descent.cli.main import main
from descent.playground.server import PlaygroundServer

pytestmark = pytest.mark.browser

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:  # the test extra's playwright is not installed
        pytest.skip(f"no playwright: {exc}")
    binary = chromium()
    if binary is None:
        pytest.skip("no chromium binary")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=binary, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def server():
    srv = PlaygroundServer()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


class Page:
    """A page with its console errors and uncaught exceptions collected."""

    def __init__(self, browser, url):
        self.page = browser.new_page(viewport={"width": 1400, "height": 900})
        self.errors = []
        self.page.on("console", lambda m: m.type in ("error", "assert") and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(url)

    def settle(self, requests):
        self.page.wait_for_function(
            f"window.App && App.requests >= {requests} && !App.inflight", timeout=60_000
        )

    def js(self, expr):
        return self.page.evaluate(expr)


@pytest.fixture(scope="module")
def page(browser, server):
    p = Page(browser, server.url + "?tune=0")
    p.settle(1)
    yield p
    p.page.close()


def blank(png: bytes) -> bool:
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB").resize((200, 150))
    colors = img.getcolors(maxcolors=1 << 16) or []
    return len(colors) < 50


def test_the_page_loads_and_draws(page):
    assert page.errors == []
    assert page.js("App.result.runs.length") == 4
    assert page.js("App.drawn.paths") == 4
    assert not blank(page.page.locator("#contour").screenshot())
    assert not blank(page.page.screenshot())


def test_moving_the_lr_slider_redraws_a_different_path(page):
    before = page.js("JSON.stringify(App.result.runs[0].xy)")
    done = page.js("App.requests")
    slider = page.page.locator('.card[data-key="sgd"] input[type=range][data-name="lr"]')
    slider.evaluate(
        "(el) => { el.value = String(Number(el.value) + 150); el.dispatchEvent(new Event('input')); }"
    )
    page.settle(done + 1)
    after = page.js("JSON.stringify(App.result.runs[0].xy)")
    assert after != before
    assert page.js("App.result.runs[0].settings.lr") > page.js("App.catalog.optimizers[0].settings.lr")
    assert page.errors == []


def test_a_click_on_the_contour_moves_the_start(page):
    canvas = page.page.locator("#contour")
    box = canvas.bounding_box()
    done = page.js("App.requests")
    canvas.click(position={"x": box["width"] * 0.25, "y": box["height"] * 0.75})
    page.settle(done + 1)
    x0, x1, y0, y1 = page.js("App.surfaceData.window")
    start = page.js("App.result.start")
    assert start == pytest.approx([x0 + 0.25 * (x1 - x0), y0 + 0.25 * (y1 - y0)], abs=0.02 * (x1 - x0))
    assert page.js("App.result.runs.every((r) => r.xy[0][0] === App.result.start[0])")


def test_step_mode_draws_the_moments_and_the_formula(page):
    page.page.check("#stepmode")
    page.js("App.setFrame(5)")
    drawn = page.js("App.drawn")
    # −g for each run, −b for momentum, −m for Adam (and each step taken, when it is
    # long enough to see); boxes √v for RMSProp and Adam
    assert drawn["arrows"] >= 4 + 2 and drawn["boxes"] == 2
    text = page.page.locator("#steppanel").inner_text()
    assert "θ ← θ − η·m̂/(√v̂ + ε)" in text and "Step 6" in text
    page.page.uncheck("#stepmode")
    assert page.errors == []


def test_a_bad_value_is_shown(page):
    done = page.js("App.requests")
    box = page.page.locator('.card[data-key="adam"] input.num').first
    box.fill("-1")
    box.press("Enter")
    page.page.wait_for_function("!document.querySelector('#error').hidden", timeout=30_000)
    assert "lr = -1" in page.page.locator("#error").inner_text()
    # the 400 answer is the one console error, and an expected one
    assert len(page.errors) == 1 and "400" in page.errors[0]
    page.errors.clear()
    box.fill("0.01")
    box.press("Enter")
    page.settle(done + 1)
    assert page.page.locator("#error").is_hidden()


def test_the_quadratic_shows_its_theory(page):
    done = page.js("App.requests")
    page.page.select_option("#surface", "quadratic")
    page.settle(done + 1)
    assert page.page.locator("#theory").is_visible()
    rows = page.page.locator("#theory").inner_text()
    assert "heavy ball" in rows and "Nesterov" in rows
    assert page.errors == []


def test_the_static_export_loads_from_a_file(browser, tmp_path):
    out = tmp_path / "site"
    assert (
        main(
            [
                "playground",
                "--export",
                str(out),
                "--surfaces",
                "saddle",
                "--optimizers",
                "sgd,adam",
                "--lrs",
                "3",
            ]
        )
        == 0
    )
    p = Page(browser, (out / "index.html").as_uri())
    # the first race, then the tuned settings of both (the grid's centre)
    p.page.wait_for_function(
        "window.App && App.result && !App.inflight && App.state.runs.every((r) => /tuned/.test("
        "document.querySelector(`.card[data-run='${r.id}'] .card-note`).textContent))",
        timeout=60_000,
    )
    assert p.errors == []
    assert "computed ahead of time" in p.page.locator("#about-data").inner_text()
    assert p.js("App.result.runs.length") == 2 and p.js("App.drawn.paths") == 2
    assert not blank(p.page.locator("#contour").screenshot())
    p.page.close()
