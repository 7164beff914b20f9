"""The page in a real browser: Debian's headless chromium driven by Selenium through the system's chromedriver.

It uploads the shipped example picture, types two edits, paints each object's mask on its own layer, sees a
missing mask reported as a message, runs the edit on the tiny model, sees the result and the attention maps
appear, checks that nothing was fetched from outside the app, and takes a screenshot (also written to
``$ALE_APP_SCREENSHOT`` when that is set, which is how the README's picture is made).

A missing browser is a failure naming the command that installs it (``make test`` installs it), never a skip.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from PIL import Image

from ale_pipeline.app.session import EditSession
from tests.test_app_client import serve
from tests.tiny_models import tiny_ale_pipeline

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "coffee" / "coffee.png"
INSTALL = "apt-get install -y chromium chromium-driver"
#: How long a step of the page may take on a loaded 2-core machine.
WAIT = 240


def system_browser() -> tuple[str, str]:
    """Paths of Debian's chromium and its chromedriver; a test failure naming the install command if absent."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.fail(f"the browser test needs Debian's chromium and its driver: {INSTALL} (make test runs it as root)")
    return browser, driver


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = system_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1400,1760", "--hide-scrollbars"):  # fmt: skip
        options.add_argument(flag)
    session = EditSession(tiny_ale_pipeline(), out_dir=tmp_path_factory.mktemp("downloads"))
    with serve(session) as url:
        chrome = webdriver.Chrome(service=Service(driver), options=options)
        try:
            chrome.get(url)
            yield chrome, url
        finally:
            chrome.quit()


def visible(chrome, css: str):
    """The first displayed element matching ``css``, waited for."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def found(driver):
        shown = [e for e in driver.find_elements(By.CSS_SELECTOR, css) if e.is_displayed()]
        return shown[0] if shown else False

    return WebDriverWait(chrome, WAIT).until(found, f"nothing shown for {css!r}")


def type_into(chrome, elem_id: str, text: str) -> None:
    from selenium.webdriver.common.keys import Keys

    field = visible(chrome, f"#{elem_id} textarea, #{elem_id} input")
    field.clear()
    field.send_keys(text, Keys.TAB)


def choose(chrome, elem_id: str, option: str) -> None:
    """Pick ``option`` in the dropdown ``elem_id`` by typing it and pressing Enter."""
    from selenium.webdriver.common.keys import Keys

    field = visible(chrome, f"#{elem_id} input")
    field.click()
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(option, Keys.ENTER)


def paint(chrome, layer: int, start: tuple[int, int], end: tuple[int, int]) -> None:
    """Pick the editor layer ``object <layer>`` and drag the brush from ``start`` to ``end`` (offsets from the
    canvas' centre)."""
    from selenium.webdriver.common.action_chains import ActionChains

    visible(chrome, "#editor button[aria-label='Show Layers']").click()
    visible(chrome, f"#editor button[aria-label=layer-{layer}]").click()
    visible(chrome, "#editor button[aria-label='Show Layers']").click()
    canvas = chrome.find_elements("css selector", "#editor canvas")[-1]
    (x0, y0), (x1, y1) = start, end
    steps = ActionChains(chrome).move_to_element_with_offset(canvas, x0, y0).click_and_hold()
    for _ in range(4):
        steps = steps.move_by_offset((x1 - x0) // 4, (y1 - y0) // 4)
    steps.release().perform()


def test_an_edit_through_the_page(page, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    chrome, url = page
    visible(chrome, "#editor")
    chrome.find_element("css selector", "#editor input[type=file]").send_keys(str(EXAMPLE))
    visible(chrome, "#editor canvas")
    type_into(chrome, "source-0", "cup")
    type_into(chrome, "target-0", "blue cup")
    visible(chrome, "#add-object").click()
    type_into(chrome, "source-1", "spoon")
    type_into(chrome, "target-1", "golden spoon")
    type_into(chrome, "steps", "1")
    visible(chrome, "#advanced .label-wrap, #advanced > button").click()
    type_into(chrome, "longest-side", "64")
    choose(chrome, "backend", "torch")  # the pure-torch backend: no first-use build of the C++ kernel in the timing
    visible(chrome, "#editor button[aria-label=Brush]").click()
    paint(chrome, 1, (-70, -60), (10, -40))  # the cup

    # Only the first object painted: the page says which mask is missing, and no traceback.
    visible(chrome, "#run").click()
    toast = visible(chrome, ".toast-body, [data-testid=toast-body]")
    assert "edit 2 ('spoon') is empty" in toast.text and "Traceback" not in chrome.page_source
    for close in chrome.find_elements("css selector", ".toast-close, [data-testid=toast-close]"):
        if close.is_displayed():
            close.click()

    paint(chrome, 2, (30, 40), (55, 65))  # the spoon
    visible(chrome, "#run").click()
    WebDriverWait(chrome, WAIT).until(
        lambda d: (
            len(d.find_elements("css selector", "#slider img")) == 2
            and len(d.find_elements("css selector", "#attention img")) >= 2
        ),
        "no result and attention maps appeared",
    )
    timing = visible(chrome, "#timing").text
    assert timing.startswith("Edit time:") and "2 object(s), 64x40 px, 1 steps" in timing
    assert visible(chrome, "#backend input").get_attribute("value") == "torch"
    captions = {
        e.text for e in chrome.find_elements("css selector", "#attention .caption-label, #attention figcaption")
    }
    assert {"blue cup", "golden spoon"} <= captions or "golden spoon" in visible(chrome, "#attention").text
    assert visible(chrome, "#download").text.count("edited-") == 1
    time.sleep(0.5)  # let the pictures finish painting for the screenshot

    # Offline: every resource the page loaded came from the app itself (no fonts, scripts or pings elsewhere).
    loaded = chrome.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded and [name for name in loaded if not name.startswith(url.rstrip("/"))] == []

    shot = tmp_path / "ale-app.png"
    chrome.execute_script("window.scrollTo(0, 0)")
    assert chrome.save_screenshot(str(shot))
    assert Image.open(shot).size[0] >= 1000
    if os.environ.get("ALE_APP_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["ALE_APP_SCREENSHOT"])
