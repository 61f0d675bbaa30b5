"""AUDIT/audit.html in headless Chromium: thumbnails load, pairs side by side, no console errors, fits a phone."""

import pytest
from PIL import Image, ImageOps

from catsdogs.auditing import audit
from catsdogs.preparation import prepare
from test_audit import add_photo, jpeg, make_source, pixels, read_manifest, write_manifest

from browser import broken_images, chromium_driver, emulate_phone, horizontal_overflow, severe_console_entries

pytestmark = pytest.mark.browser


def test_audit_page_renders_in_chromium(tmp_path):
    data = tmp_path / "data"
    prepare(make_source(tmp_path / "source", per_class=12), data, val=0.25, test=0.25)
    rows = read_manifest(data)
    original = next(r for r in rows if r["split"] == "train")
    with Image.open(data / original["path"]) as image:
        add_photo(data, rows, f"test/{original['class']}/copy.jpg", jpeg(ImageOps.mirror(image)))
    write_manifest(data, rows)
    result = audit(data, tmp_path / "audit", extractor=pixels, image_size=9)
    with chromium_driver(tmp_path) as driver:
        driver.get((tmp_path / "audit" / "audit.html").as_uri())
        assert driver.title == "catsdogs audit"
        pairs = driver.execute_script("return document.querySelectorAll('.card[data-kind=near_duplicate] img').length")
        assert pairs == 2 * len(result.of_kind("near_duplicate")) >= 2
        singles = driver.execute_script("return document.querySelectorAll('.card.single img').length")
        assert singles == len(result.of_kind("label")[:48]) + len(result.of_kind("outlier")[:48])
        assert broken_images(driver) == []
        assert driver.execute_script("return performance.getEntriesByType('resource').length") == 0
        first = driver.execute_script("""const imgs = document.querySelectorAll('.pair img');
            const a = imgs[0].getBoundingClientRect(), b = imgs[1].getBoundingClientRect();
            return [a.top, b.top, a.left < b.left];""")
        assert abs(first[0] - first[1]) < 1 and first[2]  # side by side
        assert severe_console_entries(driver) == []
        emulate_phone(driver)
        assert horizontal_overflow(driver) == 0
        assert severe_console_entries(driver) == []
