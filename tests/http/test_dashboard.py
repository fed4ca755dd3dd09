"""The dashboard in a real headless Chromium (Debian's package) driven by Playwright: it loads
without console errors, shows a queue and a topic created through the API, and its rate chart
updates without a reload while messages are published."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from helpers.broker_process import WharfProcess

CHROMIUM = os.environ.get("WHARF_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} missing: run .ci/system-deps"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[tuple[Page, list[str]]]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(60_000)  # generous: CI machines may be loaded
    page = context.new_page()
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            problems.append(f"console {message.type}: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("requestfailed", lambda req: problems.append(f"request failed: {req.url}"))
    try:
        yield page, problems
    finally:
        context.close()


@pytest.mark.slow
def test_dashboard_shows_objects_and_live_chart(
    page: tuple[Page, list[str]], api: httpx.Client, http_server: WharfProcess, unique: str
) -> None:
    tab, problems = page
    topic, queue = f"{unique}-topic", f"{unique}-queue"
    assert api.post("/api/topics", json={"name": topic, "partitions": 2}).status_code == 201
    assert api.put(f"/api/queues/{queue}", json={}).status_code == 200
    requested: list[str] = []
    tab.on("request", lambda req: requested.append(req.url))

    tab.goto(http_server.http_url + "/")
    tab.wait_for_selector("#cards .card")
    chart = tab.locator("#rate-chart")

    # publish steadily until the rate chart has drawn a non-zero point
    deadline = time.monotonic() + 60
    sent = 0
    while float(chart.get_attribute("data-max") or 0) <= 0:
        assert time.monotonic() < deadline, "the rate chart never showed the publishes"
        for _ in range(10):
            api.post(f"/api/topics/{topic}/messages", json={"value": f"m{sent}"})
            sent += 1
        tab.wait_for_timeout(300)
    points = int(chart.get_attribute("data-points") or 0)
    tab.wait_for_function(
        f"Number(document.querySelector('#rate-chart').dataset.points) > {points}",
        timeout=30_000,
    )

    tab.click("nav a[data-page=queues]")
    tab.wait_for_selector(f"#queues td >> text={queue}")
    tab.click("nav a[data-page=topics]")
    tab.wait_for_selector(f"#topics td >> text={topic}")
    row = tab.locator("#topics tr", has_text=topic)
    assert row.locator("td").nth(1).inner_text() == "2"
    assert int(row.locator("td").nth(2).inner_text().replace(",", "")) == sent

    # the message browser reads the topic through the API
    tab.goto(f"{http_server.http_url}/#/browser?kind=topic&name={topic}&partition=0&offset=0")
    tab.wait_for_selector("#messages table")
    assert tab.locator("#messages pre.payload").count() > 0

    # every other page renders its tables from the API
    for page_name, shown in (
        ("groups", "#groups table"),
        ("exchanges", "#exchanges td >> text=amq.topic"),
        ("connections", "#connections table"),
    ):
        tab.click(f"nav a[data-page={page_name}]")
        tab.wait_for_selector(shown)

    assert problems == []
    assert all(url.startswith(http_server.http_url) for url in requested), requested


@pytest.mark.slow
def test_dashboard_forms_create_purge_and_delete(
    page: tuple[Page, list[str]], api: httpx.Client, http_server: WharfProcess, unique: str
) -> None:
    tab, problems = page
    tab.on("dialog", lambda dialog: dialog.accept())
    tab.goto(http_server.http_url + "/#/queues")
    tab.fill("#declare-queue input[name=name]", unique)
    tab.click("#declare-queue button")
    tab.wait_for_selector(f"#queues td >> text={unique}")
    for i in range(3):
        api.post(f"/api/queues/{unique}/messages", json={"value": str(i)})
    tab.click(f"button[data-purge-queue='{unique}']")
    deadline = time.monotonic() + 20
    while api.get(f"/api/queues/{unique}").json()["messages"] != 0:
        assert time.monotonic() < deadline, "purge did not happen"
        time.sleep(0.1)
    tab.wait_for_selector(f"button[data-delete-queue='{unique}']")
    tab.click(f"button[data-delete-queue='{unique}']")
    deadline = time.monotonic() + 20
    while api.get(f"/api/queues/{unique}").status_code != 404:
        assert time.monotonic() < deadline, "delete did not happen"
        time.sleep(0.1)

    tab.goto(http_server.http_url + "/#/topics")
    tab.fill("#create-topic input[name=name]", unique)
    tab.fill("#create-topic input[name=partitions]", "3")
    tab.click("#create-topic button")
    tab.wait_for_selector(f"#topics td >> text={unique}")
    assert api.get(f"/api/topics/{unique}").json()["partition_count"] == 3
    assert problems == []
