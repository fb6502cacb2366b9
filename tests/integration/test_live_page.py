"""The live page (``GET /``) in a real browser: headless Chromium from Debian (deploy/browser.sh)
driven by selenium, against a live worker with a bearer token. Pick the most active user, press
"buy" on an item: the event goes through POST /events into Kafka, and the page's list changes
(the bought item leaves it) through the server-sent-event stream. Never skipped: without
Chromium the test fails and says how to install it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from worker_harness import ROOT, Worker, wait_for

TOKEN = "live-page-token-for-tests"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOT = ROOT / "docs" / "live-page.png"
TITLES = [
    ("Trail running shoes", "running"),
    ("Waterproof shell jacket", "outdoor"),
    ("Merino base layer", "outdoor"),
    ("Carbon trekking poles", "hiking"),
    ("Ultralight tent, two person", "camping"),
    ("Down sleeping bag", "camping"),
    ("Headlamp, 400 lumen", "hiking"),
    ("Hydration vest", "running"),
    ("GPS sports watch", "running"),
    ("Insulated bottle", "hiking"),
    ("Camp stove", "camping"),
    ("Rain trousers", "outdoor"),
]


def http(w: Worker, path: str, token: str | None = TOKEN) -> tuple[int, bytes, Any]:
    req = urllib.request.Request(f"http://127.0.0.1:{w.port}{path}")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read(1 << 16), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} missing: run 'make stack' (deploy/browser.sh install: "
            "apt-get install chromium chromium-driver)",
            pytrace=False,
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        "--window-size=1280,860",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    # The driver's path given: selenium never looks for (or downloads) a browser of its own.
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def rows(driver: Any) -> list[str]:
    from selenium.webdriver.common.by import By

    return [
        tr.get_attribute("data-item")
        for tr in driver.find_elements(By.CSS_SELECTOR, "#recs tbody tr")
    ]


def test_live_page_shows_a_users_list_and_a_click_changes_it(
    make_worker: Any, browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    token_file = tmp_path / "web.token"
    token_file.write_text(TOKEN)
    w: Worker = make_worker(RECSTREAM_WEB_TOKEN_FILE=str(token_file)).start()

    def ready() -> bool:
        assert w.proc is not None and w.proc.poll() is None, w.log_tail()
        try:
            return json.loads(http(w, "/healthz")[1]).get("ready") is True
        except OSError:  # not listening yet
            return False

    wait_for(ready, 120, "the worker to be ready")
    items = [
        (f"i{n}".encode(), json.dumps({"item_id": f"i{n}", "title": t, "categories": [c]}).encode())
        for n, (t, c) in enumerate(TITLES)
    ]
    w.send("items", items)
    # u1 is the most active user; u2 and u3 less so. Enough co-visitation for reasons.
    events = [("u1", n % 6, "view") for n in range(12)] + [("u2", n, "click") for n in range(4)]
    events += [("u3", 7, "view")]
    w.send(
        "events",
        [
            # Explicit ids: an event without one is identified by its content, and u1's repeated
            # views would be deduplicated.
            (
                u.encode(),
                json.dumps(
                    {"event_id": f"e{n}", "user_id": u, "item_id": f"i{i}", "type": t}
                ).encode(),
            )
            for n, (u, i, t) in enumerate(events)
        ],
    )
    wait_for(
        lambda: json.loads(http(w, "/healthz")[1]).get("events_processed", 0) >= len(events),
        60,
        "the events learned",
    )

    # The page's JSON and the token rules: the files are public, the data is not, and only the
    # stream takes ?token=.
    status, body, headers = http(w, "/", token=None)
    assert status == 200 and b"/static/live.js" in body
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert http(w, "/static/live.js", token=None)[0] == 200
    assert http(w, "/static/../app.py", token=None)[0] in (401, 404)
    assert http(w, "/users/top?n=5", token=None)[0] == 401
    assert http(w, f"/healthz?token={TOKEN}", token=None)[0] == 401
    assert http(w, "/stream/recommendations?user=u1&token=wrong", token=None)[0] == 401
    top = json.loads(http(w, "/users/top?n=2")[1])["users"]
    assert top == [{"user_id": "u1", "events": 12}, {"user_id": "u2", "events": 4}]

    # The token once in the URL, then kept in sessionStorage and taken out of the address bar.
    browser.get(f"http://127.0.0.1:{w.port}/?token={TOKEN}")
    wait_for(lambda: "token" not in browser.current_url, 10, "the token out of the URL")
    pick = wait_for(
        lambda: browser.find_elements(By.CSS_SELECTOR, '#users button[data-user="u1"]'),
        20,
        "u1 in the picker",
    )
    pick[0].click()
    before = wait_for(lambda: rows(browser), 20, "u1's list on the page")
    page_text = browser.find_element(By.ID, "recs").text
    assert any(title in page_text for title, _ in TITLES), page_text  # titles, not only ids
    # The strip fills from /stats (polled every 2 s).
    wait_for(
        lambda: browser.find_element(By.ID, "s-events").text == str(len(events)),
        10,
        "the strip's event count",
    )

    # Buy the first item: it leaves the list (purchased items are excluded by default).
    bought = before[0]
    updates = int(browser.find_element(By.ID, "updates").get_attribute("data-count"))
    t0 = time.monotonic()
    browser.find_element(
        By.CSS_SELECTOR, f'#recs tr[data-item="{bought}"] button[data-type="purchase"]'
    ).click()
    wait_for(
        lambda: (
            browser.find_element(By.ID, "recs").get_attribute("data-trigger") or ""
        ).startswith("live-"),
        10,
        "the list published after the click",
        interval=0.05,
    )
    seconds = time.monotonic() - t0
    after = rows(browser)
    assert bought not in after and after != before, (before, after)
    assert int(browser.find_element(By.ID, "updates").get_attribute("data-count")) > updates
    measured = wait_for(
        lambda: (t := browser.find_element(By.ID, "measured").text) != "–" and t, 5, "timing"
    )
    assert measured.endswith(" ms")
    assert seconds < 5, f"the list changed {seconds:.1f} s after the click"

    # The click was a real event on the events topic, keyed by the user.
    trigger = browser.find_element(By.ID, "recs").get_attribute("data-trigger")
    sent = [r for r in w.read("events") if json.loads(r.value).get("event_id") == trigger]
    assert len(sent) == 1 and sent[0].key == b"u1"
    assert json.loads(sent[0].value) | {"ts": None} == {
        "event_id": trigger,
        "user_id": "u1",
        "item_id": bought,
        "type": "purchase",
        "context": {"session_id": "live-page"},
        "ts": None,
    }

    # The strip follows: the purchase counted, a throughput from two readings, and the
    # purchase evaluated against the list shown before it (online hr@10).
    wait_for(
        lambda: (
            browser.find_element(By.ID, "s-events").text == str(len(events) + 1)
            and browser.find_element(By.ID, "s-rate").text.endswith("ev/s")
            and browser.find_element(By.ID, "s-hr").text != "–"
        ),
        10,
        "the strip to show the purchase",
    )
    shot = tmp_path / "live-page.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    if os.environ.get("RECSTREAM_UPDATE_SCREENSHOT") == "1":  # the README's picture, on request
        shutil.copyfile(shot, SCREENSHOT)
    assert TOKEN not in w.log_path.read_text(errors="replace")
    assert not browser.find_element(By.ID, "error").is_displayed()
