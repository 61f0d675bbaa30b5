"""Headless Chromium for the browser tests: Debian's chromium + chromedriver, nothing downloaded.

`make browser` installs them (`apt-get install chromium chromium-driver`); without them, or without
Selenium, the tests that use `chromium_driver` are skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("CATSDOGS_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("CATSDOGS_CHROMEDRIVER", "/usr/bin/chromedriver"))
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
         "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-extensions", "--hide-scrollbars",
         "--force-device-scale-factor=1", "--lang=en-US")


@contextmanager
def chromium_driver(tmp_path: Path, *, width: int = 1280, height: int = 900,
                    page_load_timeout: float = 30) -> Iterator:
    """A headless Chromium WebDriver with its own profile in `tmp_path`, quit on exit; skips if unavailable.

    Browser console messages are kept (`driver.get_log("browser")`).
    """
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (path.exists() and os.access(path, os.X_OK)):
            pytest.skip(f"{path} is absent (apt-get install {package})")
    profile = Path(tmp_path) / "chromium-profile"
    profile.mkdir(parents=True, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(Path(tmp_path) / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)  # installed but broken: fail, not skip
    try:
        driver.set_page_load_timeout(page_load_timeout)
        driver.set_script_timeout(page_load_timeout)
        yield driver
    finally:
        driver.quit()
