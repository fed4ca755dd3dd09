"""The dashboard in a real headless Chromium (Debian's package) driven by Playwright: it loads
without console errors, shows a queue and a topic created through the API, and its rate chart
updates without a reload while messages are published; the chart's scale and axis, the message
browser's labels and a queue's page with a real AMQP consumer."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import httpx
import pika
import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Dialog,
    Locator,
    Page,
    expect,
    sync_playwright,
)

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


# Draws one WharfChart with the given (time ms, value) samples on a fresh 600x220 canvas and
# records what reached the canvas: the y-axis labels (text and the y they were written at) and
# every path point with the stroke colour it was drawn in (the series' line is #123456, the
# grid lines are the rest).
_DRAW_CHART = """([samples, options]) => {
  const canvas = document.createElement("canvas");
  canvas.style.cssText = "width: 600px; height: 220px; display: block";
  document.body.append(canvas);
  const g = canvas.getContext("2d");
  const labels = [], points = [];
  const { fillText, moveTo, lineTo } = g;
  g.fillText = function (text, x, y) {
    if (/^[0-9.]+[kMG]?$/.test(text)) labels.push([text, y]);
    return fillText.apply(this, arguments);
  };
  for (const [name, real] of [["moveTo", moveTo], ["lineTo", lineTo]]) {
    g[name] = function (x, y) {
      points.push([this.strokeStyle, y]);
      return real.apply(this, arguments);
    };
  }
  const chart = new WharfChart(canvas, [{ name: "rate", color: "#123456" }], options);
  for (const [t, v] of samples) chart.push(t, [v]);
  chart.draw();
  canvas.remove();
  return { labels, points };
}"""

_SUFFIX = {"k": 1e3, "M": 1e6, "G": 1e9}


def _draw_chart(
    tab: Page, samples: list[tuple[int, float]], options: dict[str, object] | None = None
) -> tuple[tuple[float, float, float], list[float]]:
    """``(top value, y of the 0 grid line, y of the top grid line)`` and the y of every point
    of the series' line. Checks on the way that the labels, bottom up, name the horizontal grid
    lines they stand beside and that each names the height its line has on the axis (linear
    from 0 to the top), so an axis whose labels are rounded off their lines fails."""
    drawn = tab.evaluate(_DRAW_CHART, [[list(s) for s in samples], options or {}])
    line = [float(y) for colour, y in drawn["points"] if colour == "#123456"]
    grid = sorted({float(y) for colour, y in drawn["points"] if colour != "#123456"}, reverse=True)
    labels = sorted(((float(y), text) for text, y in drawn["labels"]), reverse=True)
    values = [float(text.rstrip("kMG")) * _SUFFIX.get(text[-1], 1.0) for _, text in labels]
    assert len(labels) == len(grid) >= 2, (labels, grid)
    for (label_y, _), grid_y in zip(labels, grid, strict=True):
        assert abs(label_y - grid_y) <= 6, (labels, grid)
    assert values[0] == 0 and values == sorted(values), values
    top, zero_y, top_y = values[-1], grid[0], grid[-1]
    for value, y in zip(values, grid, strict=True):
        assert value / top == pytest.approx((zero_y - y) / (zero_y - top_y), abs=1e-9), labels
    return (top, zero_y, top_y), line


@pytest.mark.slow
def test_chart_scale_follows_the_visible_window(
    page: tuple[Page, list[str]], http_server: WharfProcess
) -> None:
    tab, problems = page
    tab.goto(http_server.http_url + "/#/connections")
    tab.wait_for_function("typeof window.WharfChart === 'function'")
    start = 1_700_000_000_000
    spike = [(start, 50_000.0)]

    # the spike has scrolled out of the two-minute window: 10/s is drawn at the top of the scale
    steady = [(start + i * 1000, 10.0) for i in range(1, 201)]
    (top, zero_y, top_y), line = _draw_chart(tab, spike + steady)
    assert top == 10
    assert line and all(y == pytest.approx(top_y) for y in line)

    # while the spike is on screen it sets the scale and 10/s lies near the zero line
    (top, zero_y, top_y), line = _draw_chart(tab, spike + steady[:60])
    assert 50_000 <= top < 100_000
    assert max(line) == pytest.approx(zero_y, abs=0.01 * (zero_y - top_y))
    assert min(line) == pytest.approx(top_y + (1 - 50_000 / top) * (zero_y - top_y))

    # a spike before a gap in the samples (a broker restarted, a laptop asleep) is out of the
    # window as soon as the newest sample is two minutes younger, however few samples follow
    after_gap = [(start + 180_000 + i * 1000, 10.0) for i in range(30)]
    (top, zero_y, top_y), line = _draw_chart(tab, spike + after_gap)
    assert top == 10
    assert len(line) == 30 and all(y == pytest.approx(top_y) for y in line)
    assert problems == []


@pytest.mark.slow
def test_chart_axis_labels_mark_their_grid_lines(
    page: tuple[Page, list[str]], http_server: WharfProcess
) -> None:
    tab, problems = page
    tab.goto(http_server.http_url + "/#/connections")
    tab.wait_for_function("typeof window.WharfChart === 'function'")
    start = 1_700_000_000_000
    for level in (0.0, 0.8, 3.0, 10.1, 1234.0, 50_000.0, 7_300_000.0):
        samples = [(start + i * 1000, level) for i in range(20)]
        (top, zero_y, top_y), line = _draw_chart(tab, samples)
        # the top covers the data without wasting more than half the height; an all-zero
        # window still gets a scale (nothing divided by zero: the line lies on the zero label)
        if level:
            assert level <= top < 2 * level, (level, top)
        else:
            assert top == 1
        expected_y = zero_y - level / top * (zero_y - top_y)
        assert line and all(y == pytest.approx(expected_y) for y in line), (level, top, line)

    # a chart of counts (the consumer lag) steps in whole numbers only
    for level in (0.0, 1.0, 3.0, 7.0):
        samples = [(start + i * 1000, level) for i in range(20)]
        drawn = tab.evaluate(_DRAW_CHART, [[list(s) for s in samples], {"integer": True}])
        labels = [text for text, _ in drawn["labels"]]
        assert all(text.isdigit() for text in labels), (level, labels)
        (top, _, _), _ = _draw_chart(tab, samples, {"integer": True})
        assert max(level, 1) <= top < 2 * max(level, 1), (level, top)
    assert problems == []


@pytest.mark.slow
def test_message_browser_inputs_are_labelled(
    page: tuple[Page, list[str]], api: httpx.Client, http_server: WharfProcess, unique: str
) -> None:
    tab, problems = page
    topic, vhost, queue = f"{unique}-topic", f"{unique}-vhost", f"{unique}-queue"
    assert api.post("/api/topics", json={"name": topic, "partitions": 2}).status_code == 201
    for i in range(3):
        api.post(f"/api/topics/{topic}/messages", json={"value": f"t{i}", "partition": 1})
    assert api.put(f"/api/vhosts/{vhost}").status_code == 201
    assert api.put(f"/api/queues/{queue}", params={"vhost": vhost}, json={}).status_code == 200
    api.post(f"/api/queues/{queue}/messages", params={"vhost": vhost}, json={"value": "in it"})

    # every input is found by its visible label, as a screen reader names it
    tab.goto(http_server.http_url + "/#/browser")
    tab.get_by_label("Source").select_option("topic")
    tab.get_by_label("Name").fill(topic)
    tab.get_by_label("Partition").fill("1")
    tab.get_by_label("From offset").fill("1")
    tab.get_by_label("How many").fill("5")
    assert tab.get_by_text("Virtual host", exact=True).is_hidden()  # a queue's field only
    tab.get_by_role("button", name="Peek").click()
    tab.wait_for_selector("#messages pre.payload")
    assert tab.locator("#messages pre.payload").all_inner_texts() == ["t1", "t2"]

    tab.get_by_label("Source").select_option("queue")
    assert tab.get_by_text("Partition", exact=True).is_hidden()
    tab.get_by_label("Name").fill(queue)
    tab.get_by_label("Virtual host").fill(vhost)
    tab.get_by_role("button", name="Peek").click()
    tab.wait_for_selector("#messages pre.payload >> text=in it")
    assert api.get(f"/api/queues/{queue}", params={"vhost": vhost}).json()["messages"] == 1
    assert problems == []


def _card(tab: Page, label: str) -> Locator:
    """The value of the card labelled ``label`` on a queue's page."""
    card = tab.locator("#queue-cards .card").filter(has=tab.get_by_text(label, exact=True))
    return card.locator(".value")


@pytest.mark.slow
def test_queue_page_from_the_list_with_counts_bindings_consumers_and_purge(
    page: tuple[Page, list[str]], api: httpx.Client, http_server: WharfProcess, unique: str
) -> None:
    tab, problems = page
    vhost, queue, exchange = f"{unique}-vhost", f"{unique}-queue", f"{unique}-x"
    in_vhost = {"vhost": vhost}
    assert api.put(f"/api/vhosts/{vhost}").status_code == 201
    assert api.put("/api/users/guest/permissions", params=in_vhost, json={}).status_code == 200
    params = pika.ConnectionParameters("127.0.0.1", http_server.amqp_port, vhost)
    connection = pika.BlockingConnection(params)
    channel = connection.channel()
    channel.queue_declare(queue, durable=True, arguments={"x-max-priority": 5})
    api.put(f"/api/exchanges/{exchange}", params=in_vhost, json={"type": "topic"})
    bound = api.post(
        "/api/bindings",
        params=in_vhost,
        json={"source": exchange, "destination": queue, "routing_key": "job.*"},
    )
    assert bound.status_code == 204, bound.text
    dialogs: list[str] = []

    def accept(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    tab.on("dialog", accept)

    try:
        tab.goto(http_server.http_url + "/#/queues")
        tab.locator("#queues").get_by_role("link", name=queue, exact=True).click()
        tab.wait_for_selector(f"h2 >> text=Queue {queue}")
        properties = tab.locator("#queue-properties")
        expect(properties.locator("tr", has_text="Virtual host")).to_contain_text(vhost)
        expect(properties.locator("tr", has_text="Type")).to_contain_text("classic")
        expect(properties.locator("tr", has_text="Arguments")).to_contain_text("x-max-priority=5")
        binding = tab.locator("#queue-bindings tbody tr")
        expect(binding).to_have_count(1)
        expect(binding.locator("td")).to_have_text([exchange, "job.*", ""])

        # publish through the binding while the page is open, until its chart draws the rate
        chart = tab.locator("#queue-chart")
        sent = 0
        deadline = time.monotonic() + 60
        while float(chart.get_attribute("data-max") or 0) <= 0:
            assert time.monotonic() < deadline, "the queue's chart never showed the publishes"
            for _ in range(5):
                routed = api.post(
                    f"/api/exchanges/{exchange}/messages",
                    params=in_vhost,
                    json={"value": f"job {sent}", "routing_key": "job.a"},
                )
                assert routed.json()["routed"] is True
                sent += 1
            tab.wait_for_timeout(300)
        expect(_card(tab, "Ready")).to_have_text(f"{sent:,}", timeout=30_000)
        expect(_card(tab, "Published")).to_have_text(f"{sent:,}")

        # a consumer with a prefetch of one holds one message unacknowledged
        channel.basic_qos(prefetch_count=1)
        tag = channel.basic_consume(queue, lambda *_: None, consumer_tag=f"{unique}-consumer")
        expect(_card(tab, "Consumers")).to_have_text("1", timeout=30_000)
        expect(_card(tab, "Unacked")).to_have_text("1", timeout=30_000)
        expect(_card(tab, "Ready")).to_have_text(f"{sent - 1:,}", timeout=30_000)
        consumer = tab.locator("#queue-consumers tbody tr")
        expect(consumer.locator("td")).to_have_text([tag, "yes", "no", "yes"])
    finally:
        connection.close()
    expect(_card(tab, "Consumers")).to_have_text("0", timeout=30_000)
    expect(_card(tab, "Ready")).to_have_text(f"{sent:,}", timeout=30_000)  # returned on close

    # its messages, in its virtual host, one click away
    tab.get_by_role("link", name="Browse messages").click()
    expect(tab.get_by_label("Virtual host")).to_have_value(vhost)
    expect(tab.locator("#messages pre.payload").first).to_have_text("job 0")
    tab.go_back()
    expect(_card(tab, "Ready")).to_have_text(f"{sent:,}")

    tab.get_by_role("button", name="Purge").click()
    expect(_card(tab, "Ready")).to_have_text("0", timeout=30_000)
    assert api.get(f"/api/queues/{queue}", params=in_vhost).json()["messages"] == 0

    tab.get_by_role("button", name="Delete queue").click()
    tab.wait_for_function("location.hash === '#/queues'")
    assert api.get(f"/api/queues/{queue}", params=in_vhost).status_code == 404
    assert dialogs == [
        f"Purge every ready message from queue {queue}?",
        f"Delete queue {queue}?",
    ]
    assert problems == []
