"""The dashboard in a real headless browser (Debian's chromium via Selenium, chromedriver from apt).

The page must load without console errors, draw its charts from live history, a solve/apply
made from the page must change what the (real, embedded) Triton servers have loaded, and traffic
sent through a gateway must show as the gateway's, with its batches' speed against the profile.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

sys.path.insert(0, str(Path(__file__).parent))
from controlplane_helpers import DEVICE_CLASS, TOKEN, call, running_control_plane  # noqa: E402

from orchestrator.gateway.core import wait_ready  # noqa: E402
from orchestrator.gateway.server import GatewayServer  # noqa: E402

selenium = pytest.importorskip("selenium")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait as _WebDriverWait  # noqa: E402


def WebDriverWait(browser, timeout_s: float, poll_frequency: float) -> _WebDriverWait:  # noqa: N802
    """Selenium's wait, looking again when the page re-drew an element between finding it and
    reading it (the dashboard re-renders its panels every poll)."""
    return _WebDriverWait(browser, timeout_s, poll_frequency=poll_frequency,
                          ignored_exceptions=(StaleElementReferenceException,))

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
pytestmark = pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
                                reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")


@pytest.fixture
def browser():
    profile = tempfile.mkdtemp(prefix="chromium-test-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1200", f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def post_traffic(url: str, seconds: int = 40, rps: int = 8) -> None:
    """What a shim would have reported over the last `seconds` (telemetry intake is a real endpoint)."""
    now = int(time.time())
    rows = [{"family": "resnet", "second": s, "arrivals": rps, "completions": rps, "met": rps - 1,
             "deadline_misses": 1, "drops": 0, "errors": 0, "retries": 0, "served": {"resnet18": rps}}
            for s in range(now - seconds, now - 2)]
    status, body = call(url + "/api/v1/telemetry", "POST", {"client_id": "test", "seconds": rows}, token=None)
    assert status == 202, body


def severe_console_entries(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_dashboard_draws_and_solve_apply_from_the_page_loads_models(model_repo, browser):
    with running_control_plane(model_repo, controller=True, auto=False) as server:
        post_traffic(server.url)
        wait = WebDriverWait(browser, 60, poll_frequency=0.2)
        browser.get(server.url + "/")
        wait.until(lambda d: d.execute_script("return document.body.dataset.ready === '1'"))
        # devices listed, nothing loaded yet
        devices = browser.find_elements(By.CSS_SELECTOR, "#devices .device")
        assert [d.get_attribute("data-device") for d in devices] == ["cpu0", "cpu1"]
        # the charts draw the history the controller wrote from the telemetry
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#chart-demand path.series[data-series='arrivals']"))
        arrivals = browser.find_element(By.CSS_SELECTOR, "#chart-demand path.series[data-series='arrivals']")
        assert int(arrivals.get_attribute("data-points")) >= 10
        assert browser.find_elements(By.CSS_SELECTOR, "#chart-mix polygon.series[data-series='resnet18']")
        assert browser.find_elements(By.CSS_SELECTOR, "#chart-accuracy path.series")
        assert browser.find_elements(By.CSS_SELECTOR, "#chart-misses path.series")

        # solve (preview) then apply, from the page, with the token typed in
        browser.find_element(By.ID, "token").send_keys(TOKEN)
        browser.find_element(By.ID, "solve-button").click()
        wait.until(lambda d: "What would change" in d.find_element(By.ID, "preview").text)
        assert "load" in browser.find_element(By.ID, "preview").text
        apply_button = browser.find_element(By.ID, "apply-button")
        wait.until(lambda d: apply_button.is_enabled())
        apply_button.click()
        WebDriverWait(browser, 180, poll_frequency=0.5).until(
            lambda d: "Applied: plan v1" in d.find_element(By.ID, "preview").text)

        plan = server.cp.plan
        assert plan is not None and plan.version == 1
        loaded = {dev: set(server.runtime.control(dev).loaded()) for dev in ("cpu0", "cpu1")}
        for p in plan.placements:
            assert p.variant in loaded[p.device_id]
        assert sum(len(v) for v in loaded.values()) == len(plan.placements)
        # the page shows the new plan and the loaded models
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#plan-bars .bar[data-family='resnet'] div[data-variant]"))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#devices .chip")) == len(plan.placements))

        # traffic through a gateway (stock tritonclient) shows on the page as the gateway's
        gateway = GatewayServer(server.url, http_port=0, grpc_port=0, poll_s=0.2, telemetry_s=0.2)
        stop = threading.Event()
        sender = threading.Thread(target=send_until, args=(gateway, stop))
        try:
            assert wait_ready(gateway.gateway, 30.0), gateway.gateway.readiness()
            sender.start()
            WebDriverWait(browser, 60, poll_frequency=0.5).until(
                lambda d: re.search(r"1 gateway · [1-9]\d*\.\d req/s", d.find_element(By.ID, "kpi-clients").text))
            # its batches ran alone on their devices: the speed panel shows them against the profile,
            # with the capacity of the plan's placement as profiled and as observed
            rows = WebDriverWait(browser, 60, poll_frequency=0.5).until(
                lambda d: [r.text for r in d.find_elements(By.CSS_SELECTOR, "#speed tr") if DEVICE_CLASS in r.text])
            served = {p.variant for p in plan.placements if p.served_rps > 0}
            assert any(v in rows[0] for v in served) and "×" in rows[0] and "→" in rows[0], rows
        finally:
            stop.set()
            if sender.is_alive():
                sender.join(60)
            gateway.close()
        # a family's known peak, typed into the controls and saved, is the control plane's demand floor
        peak = browser.find_element(By.CSS_SELECTOR, "#family-settings tr[data-family='resnet'] input[aria-label='peak of resnet']")
        peak.send_keys("35")
        browser.find_element(By.CSS_SELECTOR, "#family-settings tr[data-family='resnet'] button").click()
        wait.until(lambda d: "resnet: settings saved" in d.find_element(By.ID, "message").text)
        assert server.cp.demand_floor() == {"resnet": 35.0}
        assert severe_console_entries(browser) == []


def send_until(gateway, stop: threading.Event) -> None:
    """Infer resnet through the gateway with stock tritonclient until `stop`."""
    image = np.zeros((1, 3, 224, 224), np.float32)
    client = grpcclient.InferenceServerClient(gateway.grpc.url)
    inp = grpcclient.InferInput("input", list(image.shape), "FP32")
    inp.set_data_from_numpy(image)
    while not stop.is_set():
        client.infer("resnet", [inp], parameters={"deadline_ms": 5000})
    client.close()


def test_dashboard_without_token_says_so_and_changes_nothing(model_repo, browser):
    with running_control_plane(model_repo) as server:
        browser.get(server.url + "/")
        wait = WebDriverWait(browser, 30, poll_frequency=0.2)
        wait.until(lambda d: d.execute_script("return document.body.dataset.ready === '1'"))
        browser.find_element(By.ID, "load-button").click()
        wait.until(lambda d: "token" in d.find_element(By.ID, "message").text)
        assert all(not server.runtime.control(dev).loaded() for dev in ("cpu0", "cpu1"))
        assert severe_console_entries(browser) == []
