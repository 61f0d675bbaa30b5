"""Headless Chromium through Selenium for browser tests (Debian's chromium + chromium-driver).

Nothing is downloaded: the browser and driver paths are given, so Selenium Manager stays idle.
Tests skip cleanly when selenium, chromium or chromedriver is missing.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("CATSDOGS_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CATSDOGS_CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
    "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
)
BROKEN_IMAGES_JS = """
return Array.from(document.images)
  .filter(img => !img.complete || img.naturalWidth === 0)
  .map(img => img.alt || img.src.slice(0, 80));
"""


@contextmanager
def chromium_driver(tmp_path: Path, width: int = 1280, height: int = 900) -> Iterator:
    """A headless Chromium WebDriver with the browser console log enabled; quits on exit."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    for exe in (CHROMIUM, CHROMEDRIVER):
        if not Path(exe).is_file():
            pytest.skip(f"{exe} not found (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def severe_console_entries(driver) -> list[dict]:
    """Browser console entries of level SEVERE (errors) logged so far."""
    return [entry for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]


def broken_images(driver) -> list[str]:
    """alt text (or start of src) of every <img> that did not load."""
    return driver.execute_script(BROKEN_IMAGES_JS)


def horizontal_overflow(driver) -> int:
    """CSS pixels by which the page is wider than the viewport (0 when it fits)."""
    return driver.execute_script(
        "return Math.max(0, document.documentElement.scrollWidth - document.documentElement.clientWidth);"
    )


def emulate_phone(driver, width: int = 390, height: int = 844) -> None:
    """Make the page lay out as on a phone (mobile viewport, viewport meta honoured)."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": True},
    )


def save_full_page_screenshot(driver, out_png: Path) -> Path:
    """Screenshot of the whole page (beyond the viewport) through the DevTools protocol."""
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    out_png = Path(out_png)
    out_png.write_bytes(base64.b64decode(shot["data"]))
    return out_png
