"""The chat page of a running `ferrite serve`, in headless Chromium driven by Selenium: it loads
without console errors, a message streams a reply, the second turn sends the first, the stop
button ends a long generation (the server counts an abort and holds no KV block), and the
operations panel shows throughput. Saves screenshots of the chat and of the operations panel,
and prints the page's size and first paint.

Usage: webui_test.py BASE_URL OUT_DIR
"""
import json
import os
import sys
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from checks import check

base, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)


def metric(series):
    """A series' value (`name{labels}` exactly), or a family's sum (`name`)."""
    text = urllib.request.urlopen(base + "/metrics").read().decode()
    total = 0.0
    for line in text.splitlines():
        key = line.rsplit(" ", 1)[0]
        if key == series or key.split("{")[0] == series:
            total += float(line.rsplit(" ", 1)[1])
    return total


def wait(cond, seconds, what):
    end = time.time() + seconds
    while time.time() < end:
        if cond():
            return
        time.sleep(0.1)
    check(False, what)


opts = webdriver.ChromeOptions()
for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--window-size=1280,900"]:
    opts.add_argument(a)
opts.binary_location = os.environ.get("FERRITE_CHROMIUM", "/usr/bin/chromium")
opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
driver = webdriver.Chrome(service=Service(os.environ.get("FERRITE_CHROMEDRIVER", "/usr/bin/chromedriver")),
                          options=opts)
try:
    driver.get(base + "/")
    wait(lambda: "context" in driver.find_element(By.ID, "model-info").text, 30, "model information shown")
    info = driver.find_element(By.ID, "model-info").text
    check("Q4_1" in info and "llama" in info, f"model info names quantization and architecture: {info!r}")
    paint = driver.execute_script(
        "const p = performance.getEntriesByName('first-contentful-paint')[0]; return p ? p.startTime : null")
    size = len(urllib.request.urlopen(base + "/").read())
    print(f"page: {size} bytes, first contentful paint {paint:.0f} ms")

    # Greedy, short answers; the settings persist in localStorage.
    for fid, v in [("temperature", "0"), ("max-tokens", "24")]:
        el = driver.find_element(By.ID, fid)
        el.clear()
        el.send_keys(v)
    prompt = driver.find_element(By.ID, "prompt")

    def ask(text):
        prompt.send_keys(text)
        driver.find_element(By.ID, "send").click()
        wait(lambda: driver.execute_script("return window.__ferrite.busy") is False
             and len(driver.find_elements(By.CSS_SELECTOR, ".msg.assistant .stats")) > 0, 120, "the reply finished")

    ask("What is the capital of France?")
    replies = driver.find_elements(By.CSS_SELECTOR, ".msg.assistant")
    check(len(replies) == 1 and replies[0].find_element(By.CLASS_NAME, "text").text.strip(), "a reply streamed in")
    stats = replies[0].find_element(By.CLASS_NAME, "stats").text
    check("TTFT" in stats and "tok/s" in stats and "output tokens" in stats and "finish:" in stats,
          f"per-message TTFT, speed, tokens and finish reason: {stats!r}")

    ask("And of Italy?")
    body = driver.execute_script("return window.__ferrite.lastRequest")
    roles = [m["role"] for m in body["messages"]]
    check(roles == ["user", "assistant", "user"] and "France" in body["messages"][0]["content"],
          f"the second turn sends the first: {roles}")
    check(json.loads(driver.execute_script("return localStorage.getItem('ferrite.history')")).__len__() == 4,
          "the conversation is kept in localStorage")
    wait(lambda: driver.find_element(By.ID, "op-done").text == "2 / 0", 10,
         "the operations panel counts both replies finished")
    driver.save_screenshot(os.path.join(out, "chat.png"))

    # A long generation, stopped: the server aborts it and frees its KV blocks.
    aborts = metric('ferrite_request_success_total{model_name="smollm2",finished_reason="abort"}')
    driver.execute_script("window.__ferrite.extraBody = {ignore_eos: true, max_tokens: 4000}")
    prompt.send_keys("Count to one thousand.")
    driver.find_element(By.ID, "send").click()
    wait(lambda: len(driver.find_elements(By.CSS_SELECTOR, ".msg.assistant")) == 3
         and driver.find_elements(By.CSS_SELECTOR, ".msg.assistant")[-1].find_element(By.CLASS_NAME, "text").text,
         60, "the long reply started")
    time.sleep(0.5)
    driver.find_element(By.ID, "stop").click()
    wait(lambda: driver.execute_script("return window.__ferrite.busy") is False, 10, "stop ends the request")
    check("finish: stopped" in driver.find_elements(By.CSS_SELECTOR, ".msg.assistant")[-1].text, "marked stopped")
    wait(lambda: metric('ferrite_request_success_total{model_name="smollm2",finished_reason="abort"}') > aborts,
         10, "/metrics counts the abort")
    wait(lambda: metric("ferrite_kv_cache_usage_perc") == 0 and metric("ferrite_num_requests_running") == 0,
         10, "no KV block is held after the stop")

    # The operations panel saw the tokens of the last minute.
    wait(lambda: float(driver.find_element(By.ID, "op-tps-min").text or 0) > 0, 10,
         "the operations panel shows the last minute's output tok/s")
    ttft = driver.find_element(By.ID, "op-ttft50").text
    check(ttft.endswith("ms"), f"TTFT p50 over the last minute: {ttft!r}")
    driver.find_element(By.ID, "ops").screenshot(os.path.join(out, "operations.png"))
    driver.save_screenshot(os.path.join(out, "page.png"))

    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    check(not errors, f"no console errors: {errors}")
finally:
    driver.quit()
