"""The HTML report in headless Chromium: every image loads, no console errors, fits a phone."""

import pytest
from PIL import Image

from catsdogs.report import write_report

from browser import (
    broken_images,
    chromium_driver,
    emulate_phone,
    horizontal_overflow,
    save_full_page_screenshot,
    severe_console_entries,
)
from fake_runs import make_run

pytestmark = pytest.mark.browser


def test_report_renders_in_chromium(tmp_path):
    with chromium_driver(tmp_path) as driver:
        study = tmp_path / "study"
        runs = [make_run(study, "baseline"), make_run(study, "transfer <vgg16>", model="transfer", backbone="vgg16"),
                make_run(study, "features-bare", model="features", full=False)]
        report = write_report(runs, study / "report.html", published={"baseline": {"train": 0.85, "val": 0.82}})
        driver.get(report.as_uri())

        assert driver.title == "catsdogs report"
        assert driver.execute_script("return document.images.length") == 2 * (1 + 4 + 1 + 2)
        assert broken_images(driver) == []
        assert driver.execute_script("return performance.getEntriesByType('resource').length") == 0
        assert severe_console_entries(driver) == []
        desktop = save_full_page_screenshot(driver, tmp_path / "report-desktop.png")

        emulate_phone(driver)
        assert horizontal_overflow(driver) == 0  # wide tables scroll inside their own box
        assert driver.execute_script("return document.images[0].getBoundingClientRect().width") <= 390
        phone = save_full_page_screenshot(driver, tmp_path / "report-phone.png")
        assert severe_console_entries(driver) == []

    for shot, min_width in ((desktop, 1000), (phone, 390)):
        with Image.open(shot) as im:
            assert im.width >= min_width and im.height > 2000
