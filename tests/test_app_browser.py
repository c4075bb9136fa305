"""The web page in a real headless browser (Debian's chromium + chromium-driver, driven by selenium).

Starts the app on a free port of 127.0.0.1, uploads a generated clip and a broken file as a user
would, waits for the result, checks every stem's player and download, downloads each stem through
the browser and compares it with what the separator itself writes for that clip, checks the broken
file's message, and saves a screenshot of the finished page (``app_finished.png`` in the test's
temporary folder, and in ``$BSMAMBA2_SCREENSHOT_DIR`` when that is set).
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import app_server
from bsmamba2_plugin.separate import Separator

pytest.importorskip("gradio")
webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
BROWSER_MISSING = "needs Debian's chromium and chromium-driver (tests/install.sh installs them as root)"
if not (CHROMIUM and CHROMEDRIVER) and os.environ.get("BSMAMBA2_REQUIRE_BROWSER"):
    raise RuntimeError(f"BSMAMBA2_REQUIRE_BROWSER is set but the browser test {BROWSER_MISSING}")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason=BROWSER_MISSING)]
STEMS = ["vocals", "other", "instrumental"]


@pytest.fixture
def browser(tmp_path):
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium must not fetch drivers: we give it Debian's
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1400,1800", "--lang=en-US"):
        options.add_argument(argument)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
    driver.downloads = downloads
    yield driver
    driver.quit()


def wait_for(condition, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_separate_in_the_browser(tmp_path, browser):
    config, checkpoint = app_server.write_tiny_model(tmp_path)
    clip = app_server.write_clip(tmp_path / "clip.wav", seconds=3.0)
    broken = app_server.write_broken(tmp_path / "broken.wav")
    torch.set_num_threads(1)  # as the app (OMP_NUM_THREADS=1), so the stems are bit-identical
    expected_files = Separator(config, checkpoint, device="cpu").separate_file(
        clip, tmp_path / "expected", filename_template="{instr}", extract_instrumental=True)
    app = app_server.AppProcess(tmp_path / "work", "--config_path", str(config), "--start_check_point",
                                str(checkpoint))
    try:
        browser.get(app.url)
        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#inputs input[type=file]")
                 and browser.find_elements(By.ID, "separate")
                 and browser.execute_script("return document.readyState") == "complete", 60, "the page")
        time.sleep(1)  # the page's scripts attach the upload handler after the elements appear
        browser.find_element(By.CSS_SELECTOR, "#inputs input[type=file]").send_keys(f"{clip}\n{broken}")
        listed = lambda: browser.find_element(By.ID, "inputs").text  # noqa: E731 - names show as "clip\n.wav"
        wait_for(lambda: "Uploading" not in listed() and "clip" in listed() and "broken" in listed(), 30,
                 "both uploads listed")
        browser.find_element(By.ID, "separate").click()
        status = wait_for(lambda: (lambda text: text if "Separated" in text else None)(
            browser.find_element(By.ID, "status").text), 120, "the separation to finish")
        assert "clip.wav: separated into vocals, other, instrumental" in status
        assert "Separated 1 of 2 file(s)." in status

        error = wait_for(lambda: browser.find_elements(By.ID, "error-1"), 30, "the broken file's message")[0]
        assert "broken.wav" in error.text and "cannot decode audio" in error.text
        assert "broken.wav: failed:" in status

        for stem in STEMS:
            player = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, f"#player-0-{stem}"), 30,
                              f"the {stem} player")[0]
            assert player.find_elements(By.TAG_NAME, "audio"), f"no <audio> in the {stem} player"
            [link] = browser.find_elements(By.CSS_SELECTOR, f"#download-0-{stem} a[href]")
            assert link.get_attribute("href").startswith(app.url)
            assert link.text.startswith(f"clip_{stem}") or f"clip_{stem}" in link.get_attribute("href")
            link.click()
            downloaded = browser.downloads / f"clip_{stem}.wav"
            wait_for(lambda: downloaded.is_file() and not list(browser.downloads.glob("*.crdownload")), 30,
                     f"the {stem} download")
            got, rate = sf.read(downloaded, dtype="float32", always_2d=True)
            want, want_rate = sf.read(expected_files[stem], dtype="float32", always_2d=True)
            assert rate == want_rate == 11025
            np.testing.assert_array_equal(got, want)
            # (not byte for byte: libsndfile's PEAK chunk of a float WAV holds the time it was written)
            assert sf.info(downloaded).subtype == sf.info(expected_files[stem]).subtype == "FLOAT"

        image = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#spectrogram-0 img"), 30,
                         "the spectrograms")[0]
        wait_for(lambda: browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0",
                                                image), 30, "the spectrogram picture to load")
        levels = browser.find_element(By.ID, "levels-0").text
        assert "level where vocals is silent" in levels and "instrumental" in levels
        assert browser.find_elements(By.CSS_SELECTOR, "#zip a[href]")

        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(1400, min(int(height) + 100, 8000))
        time.sleep(0.5)
        screenshot = tmp_path / "app_finished.png"
        assert browser.save_screenshot(str(screenshot))
        if os.environ.get("BSMAMBA2_SCREENSHOT_DIR"):
            target = Path(os.environ["BSMAMBA2_SCREENSHOT_DIR"])
            target.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(screenshot, target / "app_finished.png")
        assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        app.stop()
