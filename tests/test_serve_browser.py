"""The `catsdogs serve` page in headless Chromium: upload a real photo, read the label it shows."""

from __future__ import annotations

import shutil

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
pytest.importorskip("uvicorn")
pytest.importorskip("selenium")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from catsdogs.serve import background_server, create_app  # noqa: E402

from browser import chromium_driver  # noqa: E402
from serve_support import make_tiny_run, real_photos  # noqa: E402

pytestmark = pytest.mark.browser

SCREENSHOT = "/tmp/serve-screenshot.png"


def test_page_classifies_an_uploaded_photo(tmp_path):
    photos = real_photos(tmp_path, ["cat.3.jpg", "dog.1.jpg"])
    if photos is None:
        pytest.skip("the default data zip (../shared/data/dogs-vs-cats-train-5000.zip) is absent")
    app = create_app(make_tiny_run(tmp_path / "study"))
    with background_server(app) as url, chromium_driver(tmp_path) as driver:
        expected = {}
        for photo in photos:
            with photo.open("rb") as handle:
                response = httpx.post(url + "predict", files={"file": (photo.name, handle, "image/jpeg")}, timeout=30)
            expected[photo.name] = response.json()["predictions"][0]

        driver.get(url)
        wait = WebDriverWait(driver, 30)
        wait.until(lambda d: "threshold" in d.find_element(By.ID, "info").text)
        assert "threshold 0.500 (default)" in driver.find_element(By.ID, "info").text
        upload = driver.find_element(By.CSS_SELECTOR, "input[type=file]")
        upload.send_keys("\n".join(str(photo) for photo in photos))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".card[data-state=done]")) == len(photos))

        for card in driver.find_elements(By.CSS_SELECTOR, ".card"):
            name = card.find_element(By.CLASS_NAME, "name").text
            label = card.find_element(By.CLASS_NAME, "label").text.strip().lower()
            assert label in ("cat", "dog") and label == expected[name]["label"], name
            shown = card.find_element(By.CLASS_NAME, "bars").text
            for _cls, p in expected[name]["probabilities"].items():
                assert f"{100 * p:.1f}%" in shown
            images = card.find_elements(By.TAG_NAME, "img")
            assert all(driver.execute_script("return arguments[0].naturalWidth", img) > 0 for img in images)
            # the Grad-CAM overlay, beside the photo
            assert len(images) == 2 and images[1].get_attribute("src").startswith("data:image/png;base64,")

        severe = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert not severe, severe

        notes = tmp_path / "notes.txt"
        notes.write_text("not a photo\n" * 20)
        upload.send_keys(str(notes))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".card[data-state=error]"))
        error = driver.find_element(By.CSS_SELECTOR, ".card[data-state=error] .error").text
        assert error == "notes.txt: cannot decode: not an image"
        severe = [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert all("status of 415" in message for message in severe), severe  # only the refused upload

        driver.save_screenshot(str(tmp_path / "desktop.png"))
        driver.set_window_size(390, 844)
        wide = driver.execute_script("return document.documentElement.scrollWidth")
        assert wide <= driver.execute_script("return window.innerWidth"), "horizontal scrolling on a phone"
        driver.save_screenshot(str(tmp_path / "phone.png"))
        shutil.copyfile(tmp_path / "desktop.png", SCREENSHOT)
        shutil.copyfile(tmp_path / "phone.png", SCREENSHOT.replace(".png", "-phone.png"))
