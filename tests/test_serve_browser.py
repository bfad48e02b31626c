"""The web app and the tour's report in a real browser: `genfoundry serve` runs in a subprocess on a free
localhost port and headless Chromium (Debian's chromium + chromium-driver, through selenium) drives each
tab once, checks the result appears and saves a screenshot per tab; then it opens a tour's report.html.

Skipped when chromium, its driver or selenium is missing (.ci/run installs them)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

webdriver = pytest.importorskip("selenium.webdriver")
pytest.importorskip("gradio")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver")
ROOT = Path(__file__).resolve().parents[1]
WAIT = 300  # seconds for one model call on a busy 2-core machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # selenium must not look for a browser or driver online
    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1800",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    driver.set_page_load_timeout(120)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_sana_pipeline):
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "GENFOUNDRY_CACHE": str(tmp_path_factory.mktemp("cache")),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    command = [sys.executable, "-m", "genfoundry.cli", "serve", "--port", str(port), "--sana-model",
               str(tiny_sana_pipeline), "--calib-prompts", "1", "--calib-steps", "2", "--device", "cpu"]
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 180
    while time.time() < deadline:
        if process.poll() is not None:
            pytest.fail(f"genfoundry serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    break
        except OSError:
            time.sleep(1)
    else:
        process.terminate()
        pytest.fail(f"genfoundry serve did not answer on {url}:\n{log.read_text()[-3000:]}")
    yield url, log
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


def _field(driver, elem_id: str, text) -> None:
    box = driver.find_element(By.CSS_SELECTOR, f"#{elem_id} textarea, #{elem_id} input")
    box.clear()
    box.send_keys(str(text))


def _value(driver, elem_id: str) -> str:
    return driver.find_element(By.CSS_SELECTOR, f"#{elem_id} textarea, #{elem_id} input").get_attribute("value") or ""


def _image_shown(driver, elem_id: str) -> bool:
    return bool(driver.execute_script(
        "const i = document.querySelector(arguments[0]); return !!i && i.complete && i.naturalWidth > 0;",
        f"#{elem_id} img"))


def _tab(driver, label: str) -> None:
    driver.find_element(By.XPATH, f"//button[@role='tab' and contains(normalize-space(.), '{label}')]").click()


def _click(driver, elem_id: str) -> None:
    driver.find_element(By.ID, elem_id).click()


def test_every_tab_shows_its_result(browser, server, screenshots, tmp_path):
    from genfoundry.shapes import render

    url, _ = server
    browser.get(url)
    wait = WebDriverWait(browser, WAIT)
    wait.until(lambda d: d.find_elements(By.ID, "gen-run"))

    # Generate: 16-bit and W4A4 side by side (the app quantizes the model on this first call)
    _field(browser, "gen-steps", 2)
    _click(browser, "gen-run")
    wait.until(lambda d: "PSNR" in _value(d, "gen-result"))
    wait.until(lambda d: _image_shown(d, "gen-16bit") and _image_shown(d, "gen-w4a4"))
    browser.save_screenshot(str(screenshots / "generate.png"))

    # Ask & Imagine: VILA-U answers about an uploaded render, then draws a caption
    _tab(browser, "Ask & Imagine")
    render("a red circle", size=64, seed=1).save(tmp_path / "red.png")
    browser.find_element(By.CSS_SELECTOR, "#ask-image input[type=file]").send_keys(str(tmp_path / "red.png"))
    wait.until(lambda d: _image_shown(d, "ask-image"))
    _click(browser, "ask-run")
    wait.until(lambda d: _value(d, "ask-answer").strip())
    assert _value(browser, "ask-answer").strip() == "red"
    _field(browser, "imagine-candidates", 1)
    _click(browser, "imagine-run")
    wait.until(lambda d: "detector" in _value(d, "imagine-result") and _image_shown(d, "imagine-image"))
    browser.save_screenshot(str(screenshots / "ask_imagine.png"))

    # Quantize: round-to-nearest W4A4 on the app's SANA model, drawn beside 16-bit
    _tab(browser, "Quantize")
    _field(browser, "q-rank", 8)
    _click(browser, "q-run")
    wait.until(lambda d: "PSNR" in _value(d, "q-result"))
    wait.until(lambda d: _image_shown(d, "q-16bit") and _image_shown(d, "q-quantized"))
    browser.save_screenshot(str(screenshots / "quantize.png"))

    # RTL: a small GEMM on a 2x2 array -> report and the Verilog to download
    _tab(browser, "RTL")
    _field(browser, "rtl-workload", "gemm:8x8x8")
    _field(browser, "rtl-array", "2x2")
    _click(browser, "rtl-run")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#rtl-verilog a[href]"))
    link = browser.find_element(By.CSS_SELECTOR, "#rtl-verilog a[href]")
    assert "lego_top.v" in link.get_attribute("href")
    with urllib.request.urlopen(link.get_attribute("href"), timeout=30) as response:
        assert b"module lego_top" in response.read()
    report = browser.find_element(By.ID, "rtl-report").text
    assert "RTL cycles" in report and "bit-exact" in report
    browser.save_screenshot(str(screenshots / "rtl.png"))

    # bad input: a message in the page, never a traceback
    _field(browser, "rtl-array", "two by two")
    _click(browser, "rtl-run")
    wait.until(lambda d: "ROWSxCOLS" in d.find_element(By.TAG_NAME, "body").text)
    assert "Traceback" not in browser.find_element(By.TAG_NAME, "body").text
    browser.save_screenshot(str(screenshots / "rtl_bad_input.png"))
    print(f"screenshots in {screenshots}")


def test_tour_report_renders(browser, quick_tour, screenshots):
    out, result = quick_tour
    assert result.exit_code == 0, result.output
    browser.get((out / "report.html").as_uri())
    WebDriverWait(browser, 60).until(lambda d: d.execute_script("return document.readyState") == "complete")
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.complete && i.naturalWidth > 0, i.alt]);")
    assert len(images) >= 5 * 5 + 3 and all(ok for ok, _ in images), [alt for ok, alt in images if not ok]
    headings = [h.text for h in browser.find_elements(By.TAG_NAME, "h2")]
    assert {"Stages", "Scores", "ShapeWorld renders", "SANA", "SVDQuant W4A4", "VILA-U", "LEGO"} <= set(headings)
    tables = browser.find_elements(By.TAG_NAME, "table")
    assert len(tables) >= 8 and all(t.find_elements(By.TAG_NAME, "td") for t in tables)
    assert browser.find_elements(By.CSS_SELECTOR, ".mark.pass, .mark.fail")
    browser.save_screenshot(str(screenshots / "report.png"))
