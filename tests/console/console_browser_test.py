#!/usr/bin/python3
"""The web console in a real headless Chromium (Debian's chromium, chromium-driver and
python3-selenium) against a real witmqd on 127.0.0.1 with an ephemeral port and a temporary data
directory.

    /usr/bin/python3 tests/console/console_browser_test.py --witmqd build/src/daemon/witmqd \
        --witmq build/src/cli/witmq --screenshots build/console-screenshots

Each check saves a screenshot in --screenshots. Prints "N passed, N failed" and exits 1 when a
check failed.
"""

import argparse
import hashlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

MANAGE_TOKEN = "witmq_console-browser-manage-0123456789abcdefghijklmn"
VIEWER_TOKEN = "witmq_console-browser-viewer-0123456789abcdefghijklmn"
# Message data and metadata that would run script if the page wrote them as markup.
HOSTILE = ('<script>window.__witmq_xss = "script";</script>'
           '<img src=x onerror="window.__witmq_xss = \'img\'">')
WAIT_S = 20


class Daemon:
    def __init__(self, binary, tmpdir):
        config = os.path.join(tmpdir, "witmqd.json")
        digest = lambda t: hashlib.sha256(t.encode()).hexdigest()
        with open(config, "w") as f:
            json.dump({
                "anonymous": {"enabled": False},
                "identities": [
                    {"name": "ops", "token-sha256": digest(MANAGE_TOKEN), "manage": ["*"],
                     "send": ["*"], "receive": ["*"], "monitor": True},
                    {"name": "viewer", "token-sha256": digest(VIEWER_TOKEN), "receive": ["*"],
                     "monitor": True},
                ],
            }, f)
        self.stderr = open(os.path.join(tmpdir, "witmqd.stderr"), "wb")
        self.proc = subprocess.Popen(
            [binary, "--config", config, "--listen", "127.0.0.1:0", "--http-listen",
             "127.0.0.1:0", "--data-dir", os.path.join(tmpdir, "data")],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.stderr)
        lines = queue.Queue()

        def read():
            for line in self.proc.stdout:
                lines.put(line.decode("utf-8", "replace").strip())
            lines.put(None)

        threading.Thread(target=read, daemon=True).start()
        self.port = self.http_port = None
        deadline = time.monotonic() + 30
        while self.http_port is None:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if line is None:
                raise RuntimeError("witmqd exited before listening")
            if line.startswith("listening on "):
                self.port = int(line.rsplit(":", 1)[1])
            elif line.startswith("http listening on "):
                self.http_port = int(line.rsplit(":", 1)[1])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()


class Api:
    def __init__(self, port):
        self.base = "http://127.0.0.1:%d" % port

    def call(self, method, path, body=None, token=MANAGE_TOKEN, headers=None, raw=None):
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", "Bearer " + token)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=10) as res:
                return res.status, json.loads(res.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")


def browser(screenshots):
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--no-first-run", "--disable-extensions",
                "--user-data-dir=" + os.path.join(screenshots, ".profile")):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver")
    return webdriver.Chrome(service=service, options=options)


class Checks:
    def __init__(self, driver, api, screenshots):
        self.driver, self.api, self.screenshots = driver, api, screenshots
        self.url = api.base + "/console/"
        self.wait = WebDriverWait(driver, WAIT_S)

    def shot(self, name):
        path = os.path.join(self.screenshots, name + ".png")
        self.driver.save_screenshot(path)
        return path

    def sign_in(self, token):
        d = self.driver
        d.get(self.url)
        d.execute_script("sessionStorage.clear()")
        d.get(self.url + "#/")
        d.refresh()
        self.wait.until(lambda d: d.find_element(By.ID, "sign-in").is_displayed())
        d.find_element(By.ID, "token").send_keys(token)
        d.find_element(By.ID, "sign-in-button").click()
        self.wait.until(lambda d: "signed in as" in d.find_element(By.ID, "who").text)

    def go(self, fragment):
        self.driver.get(self.url + fragment)

    def text_of(self, css):
        return self.driver.find_element(By.CSS_SELECTOR, css).text

    # ---- the checks ----

    def overview_lists_a_channel_with_its_depth(self):
        api = self.api
        assert api.call("PUT", "/v1/channels/console.orders", {"durability": "sync"})[0] == 201
        for i in range(3):
            status, _ = api.call("POST", "/v1/channels/console.orders/messages",
                                 raw=("order %d" % i).encode())
            assert status == 201, status
        self.sign_in(MANAGE_TOKEN)
        row = 'tr[data-channel="console.orders"]'
        self.wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, row))
        self.wait.until(lambda d: self.text_of(row + " td.depth") == "3")
        cells = [c.text for c in self.driver.find_elements(By.CSS_SELECTOR, row + " td")]
        assert cells[1] == "point-to-point" and cells[2] == "sync", cells
        # Rates come from the counters between two polls: more sends show a rate above zero.
        for i in range(20):
            api.call("POST", "/v1/channels/console.orders/messages", raw=b"more")
        self.wait.until(lambda d: self.text_of(row + " td.depth") == "23")
        self.wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, row + " td")[6].text
                        not in ("–", "0.0/s"))
        # The token lives in sessionStorage and never in an address.
        stored = self.driver.execute_script("return sessionStorage.getItem('witmq-token')")
        assert stored == MANAGE_TOKEN
        assert MANAGE_TOKEN not in self.driver.current_url
        self.shot("overview")

    def hostile_data_is_shown_as_text(self):
        api = self.api
        name = "console.hostile"
        status, _ = api.call("POST", "/v1/channels/%s/messages" % name, raw=HOSTILE.encode(),
                             headers={"Content-Type": HOSTILE})
        assert status == 201, status
        # A CloudEvent whose attributes carry markup, and JSON and binary data.
        status, _ = api.call("POST", "/v1/channels/%s/messages" % name, raw=json.dumps(
            {"html": HOSTILE, "n": [1, 2]}).encode(), headers={
                "ce-specversion": "1.0", "ce-id": "<b>id</b>", "ce-type": HOSTILE,
                "ce-source": "/x", "Content-Type": "application/json"})
        assert status == 201, status
        status, _ = api.call("POST", "/v1/channels/%s/messages" % name,
                             raw=bytes([0, 1, 2, 0xff, 0xfe, 0x3c]) + b"<script>")
        assert status == 201, status
        self.go("#/channel/" + name)
        self.wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#messages pre.data")) == 3)
        blocks = self.driver.find_elements(By.CSS_SELECTOR, "#messages pre.data")
        kinds = [b.get_attribute("data-kind") for b in blocks]
        assert kinds == ["text", "json", "hex"], kinds
        assert blocks[0].text == HOSTILE, blocks[0].text
        assert '"html": "<script>' in blocks[1].text, blocks[1].text
        assert blocks[2].text.startswith("00000000  00 01 02 ff fe 3c 3c 73"), blocks[2].text
        page = self.text_of("#messages")
        assert "content-type: " + HOSTILE in page, page
        assert "type: " + HOSTILE in page, page
        # Nothing ran and nothing became markup: the page's only script is its own.
        d = self.driver
        assert d.execute_script("return window.__witmq_xss") is None
        assert d.execute_script("return document.scripts.length") == 1
        assert not d.find_elements(By.CSS_SELECTOR, "#main img, #main script, #main b")
        self.shot("hostile-data")

    def replaying_a_dead_letter_moves_it_back(self, witmq, tcp_port):
        api = self.api
        name = "console.payments"
        assert api.call("PUT", "/v1/channels/" + name,
                        {"max-deliveries": 1, "abandon-policy": "dead-letter"})[0] == 201
        assert api.call("POST", "/v1/channels/%s/messages" % name, raw=b"poison")[0] == 201
        out = subprocess.run(
            [witmq, "--server", "127.0.0.1:%d" % tcp_port, "--token", MANAGE_TOKEN, "receive",
             name, "--max", "1", "--abandon"], capture_output=True, timeout=30)
        assert out.returncode == 0, out.stderr
        status, dead = api.call("GET", "/v1/channels/%s/dead-letters" % name)
        assert status == 200 and len(dead["messages"]) == 1, dead
        reason = dead["messages"][0]["metadata"]["witmq-dlq-reason"]
        self.go("#/channel/" + name)
        self.wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#dead-letters td.reason"))
        assert self.text_of("#dead-letters td.reason") == reason, reason
        assert self.text_of("#dead-letters td.origin") == name + " #0"
        # The original is settled (dead-lettered): the page starts after it.
        assert self.text_of("#messages").startswith("No messages"), self.text_of("#messages")
        self.driver.find_element(By.ID, "btn-replay").click()
        self.wait.until(lambda d: d.find_elements(By.ID, "confirm-yes"))
        self.shot("replay-confirm")
        # Nothing moved before the confirmation.
        assert len(api.call("GET", "/v1/channels/%s/dead-letters" % name)[1]["messages"]) == 1
        self.driver.find_element(By.ID, "confirm-yes").click()
        self.wait.until(lambda d: "Moved 1" in self.text_of("#confirm"))
        status, stats = api.call("GET", "/v1/channels/" + name)
        assert stats["depth"] == 1, stats
        status, stats = api.call("GET", "/v1/channels/%s.dlq" % name)
        assert stats["depth"] == 0, stats
        # The page reloads its lists: the message is back in the channel, the dead letters empty.
        back = '#messages tr[data-sequence="1"] pre.data'
        self.wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, back))
        assert self.text_of(back) == "poison"
        self.wait.until(lambda d: self.text_of("#dead-letters").startswith("No dead letters"))
        self.shot("replayed")

    def a_token_without_manage_sees_no_replay_button(self):
        api = self.api
        name = "console.payments"
        self.sign_in(VIEWER_TOKEN)
        self.go("#/channel/" + name)
        self.wait.until(lambda d: "Read only" in self.text_of("#actions"))
        for button in ("btn-replay", "btn-purge", "btn-delete"):
            assert not self.driver.find_elements(By.ID, button), button
        # It still sees: the messages are browsable.
        self.wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#messages pre.data"))
        # And the API refuses what the page hides.
        for method, path in (("POST", "/dead-letters/replay"), ("POST", "/purge"), ("DELETE", "")):
            status, body = api.call(method, "/v1/channels/" + name + path, token=VIEWER_TOKEN)
            assert status == 403 and body["error"]["code"] == "permission-denied", (path, body)
        self.shot("viewer")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--witmqd", required=True)
    parser.add_argument("--witmq", required=True)
    parser.add_argument("--screenshots", required=True)
    args = parser.parse_args()
    os.makedirs(args.screenshots, exist_ok=True)
    tmpdir = tempfile.mkdtemp(prefix="witmq-console-")
    daemon = driver = None
    passed = failed = 0
    try:
        daemon = Daemon(args.witmqd, tmpdir)
        driver = browser(tmpdir)
        checks = Checks(driver, Api(daemon.http_port), args.screenshots)
        for name, run in (
                ("overview lists a channel with its depth",
                 checks.overview_lists_a_channel_with_its_depth),
                ("hostile data is shown as text", checks.hostile_data_is_shown_as_text),
                ("replaying a dead letter moves it back",
                 lambda: checks.replaying_a_dead_letter_moves_it_back(args.witmq, daemon.port)),
                ("a token without manage sees no replay button",
                 checks.a_token_without_manage_sees_no_replay_button)):
            try:
                run()
                passed += 1
                print("PASS: " + name, flush=True)
            except Exception:
                failed += 1
                print("FAIL: " + name, flush=True)
                traceback.print_exc()
                try:
                    checks.shot("failed-" + name.replace(" ", "-"))
                    for entry in driver.get_log("browser"):
                        print("  browser: %s" % entry.get("message"), flush=True)
                except Exception:
                    pass
    finally:
        if driver is not None:
            driver.quit()
        if daemon is not None:
            daemon.stop()
        shutil.rmtree(tmpdir, ignore_errors=True)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())
