"""Redraw the playground's pictures in this folder: ``python docs/playground/screenshots.py``.

Serves the playground, drives Debian's chromium with Playwright through three views
(the race, step mode, the quadratic's theory) and saves each as a PNG here.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright

from descent.playground.server import PlaygroundServer

HERE = Path(__file__).parent
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def save(png: bytes, name: str, width: int = 1100) -> None:
    img = Image.open(io.BytesIO(png)).convert("RGB")
    if img.width > width:
        img = img.resize((width, round(img.height * width / img.width)), Image.LANCZOS)
    img = img.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    img.save(HERE / name, optimize=True)
    print(f"{name}: {(HERE / name).stat().st_size // 1024} KB")


def settle(page, requests: int) -> None:
    page.wait_for_function(f"App.requests >= {requests} && !App.inflight", timeout=60_000)
    page.wait_for_timeout(400)


def main() -> None:
    server = PlaygroundServer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1480, "height": 900})
        page.goto(server.url)
        settle(page, 5)  # the first race and the four tuned ones
        save(page.screenshot(), "race.png")
        page.check("#stepmode")
        page.evaluate("App.setFrame(12)")
        page.wait_for_timeout(300)
        save(page.screenshot(full_page=True), "step.png")
        page.uncheck("#stepmode")
        done = page.evaluate("App.requests")
        page.select_option("#surface", "quadratic")
        settle(page, done + 1)
        for label in ("gradient descent", "heavy ball", "Nesterov"):
            done = page.evaluate("App.requests")
            page.locator("#theory tr", has_text=label).locator("button").click()
            settle(page, done + 1)
        save(page.screenshot(full_page=True), "quadratic.png")
        browser.close()
    server.shutdown()


if __name__ == "__main__":
    main()
