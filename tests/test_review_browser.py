"""The review page in headless Chromium: relabel by keyboard, undo, reload keeps state, the next item in < 100 ms."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("selenium")

from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from catsdogs.auditing import Issue  # noqa: E402
from catsdogs.corrections import read_corrections  # noqa: E402
from catsdogs.preparation import prepare  # noqa: E402
from catsdogs.review import create_app, open_review  # noqa: E402
from catsdogs.serve import background_server  # noqa: E402
from test_audit import make_source  # noqa: E402
from test_review import rows  # noqa: E402

from browser import broken_images, chromium_driver, severe_console_entries  # noqa: E402

pytestmark = pytest.mark.browser


def wait_for(condition, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_review_by_keyboard(tmp_path):
    data = tmp_path / "data"
    prepare(make_source(tmp_path / "source", per_class=8), data, val=0.25, test=0.25)
    manifest = [r for r in rows(data) if r["class"] == "ants"][:6]
    issues = [Issue(r["path"], r["split"], "label", 0.9 - i / 100, "bees", True) for i, r in enumerate(manifest)]
    corrections = tmp_path / "corrections.csv"
    review = open_review(data, corrections=corrections, issues=issues)
    fixes = lambda: [(c.source, c.action, c.label) for c in read_corrections(corrections)] if corrections.exists() else []  # noqa: E731
    with background_server(create_app(review)) as url, chromium_driver(tmp_path) as driver:
        driver.get(url.rstrip("/") + "/")
        try:
            WebDriverWait(driver, 10).until(lambda d: d.execute_script("return window.reviewReady === true"))
        except Exception:
            raise AssertionError(f"{driver.get_log('browser')} {driver.page_source[-600:]}") from None
        progress = lambda: driver.execute_script("return document.getElementById('progress').textContent")  # noqa: E731
        assert progress().startswith("item 1 of 6")
        keys = ActionChains(driver)
        keys.send_keys("2").perform()  # relabel the first photo as bees
        wait_for(lambda: fixes() == [(manifest[0]["source"], "relabel", "bees")])
        assert progress().startswith("item 2 of 6")
        keys.send_keys("u").perform()  # undo: back to item 1, the file empty again
        wait_for(lambda: fixes() == [] and progress().startswith("item 1 of 6"))
        for key in ("2", " ", "x", "\ue014", "\ue012"):  # relabel, keep, exclude, then right and left arrows
            ActionChains(driver).send_keys(key).perform()
        wait_for(lambda: len(fixes()) == 2)
        assert fixes() == sorted([(manifest[0]["source"], "relabel", "bees"), (manifest[2]["source"], "exclude", "")])
        assert progress().startswith("item 4 of 6")
        timings = wait_for(lambda: driver.execute_script(
            "return window.reviewTimings.length >= 7 ? window.reviewTimings : null"))
        shown = [t["ms"] for t in timings if t["key"] != "u"]
        assert len(shown) >= 6 and max(shown) < 100, timings
        driver.refresh()  # a reload continues after the last decided item
        WebDriverWait(driver, 10).until(lambda d: d.execute_script("return window.reviewReady === true"))
        assert progress().startswith("item 4 of 6") and "3 decided" in progress()
        assert broken_images(driver) == []
        assert severe_console_entries(driver) == []
        assert driver.execute_script("return [...performance.getEntriesByType('resource')]"
                                     ".every(e => e.name.startsWith(location.origin))")
