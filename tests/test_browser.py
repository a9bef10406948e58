"""The HTML leaderboard in a real browser: headless Chromium, driven over the DevTools protocol
on a pipe (no extra package). Tables and plots (the critical-difference diagram among them)
render, intervals and the "vs best" column show, a header click sorts, a method named like a
script is shown as text and runs nothing. Skipped where no Chromium is installed."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_report import EVIL, write_synthetic

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "/usr/bin/chromium")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-pipe",
)
TIMEOUT_S = 20.0
WIDTH = 1400


def find_browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def above_4(fd: int) -> int:
    """The same file on a close-on-exec descriptor that ``dup2(fd, 3 or 4)`` cannot hit."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


class DevTools:
    """A minimal Chrome DevTools Protocol client over ``--remote-debugging-pipe``: the browser
    reads NUL-terminated JSON messages on its fd 3 and writes them on its fd 4."""

    def __init__(self, binary: str, profile: Path) -> None:
        to_browser, self._out = map(above_4, os.pipe())
        self._in, from_browser = map(above_4, os.pipe())

        def pipes_on_3_and_4() -> None:  # in the child, before the browser starts
            os.dup2(to_browser, 3)
            os.dup2(from_browser, 4)

        self.process = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            preexec_fn=pipes_on_3_and_4,
            close_fds=False,  # keeps 3 and 4; everything else is close-on-exec (PEP 446)
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser)
        os.close(from_browser)
        self._buffer = bytearray()
        self._next_id = 0
        self.events: list[dict] = []

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (OSError, EOFError, TimeoutError):
            pass  # closed (or gone) before it answered
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._in)
        os.close(self._out)

    def _receive(self, deadline: float) -> dict:
        while (end := self._buffer.find(b"\0")) < 0:
            ready, _, _ = select.select([self._in], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError("no answer from the browser")
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise EOFError("the browser closed its DevTools pipe")
            self._buffer += chunk
        message = json.loads(self._buffer[:end])
        del self._buffer[: end + 1]
        return message

    def send(self, method: str, session: str | None = None, **params) -> dict:
        """Send one command and return its result; events that arrive meanwhile are kept."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, *events: str) -> dict:
        """The first of ``events`` to arrive (taken off the kept events)."""
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            for index, message in enumerate(self.events):
                if message.get("method") in events:
                    return self.events.pop(index)
            self.events.append(self._receive(deadline))


class Page:
    """One tab, attached in flat mode."""

    def __init__(self, browser: DevTools) -> None:
        self.browser = browser
        target = browser.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = browser.send("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Network"):
            self.send(f"{domain}.enable")
        self.viewport(900)

    def send(self, method: str, **params) -> dict:
        return self.browser.send(method, self.session, **params)

    def viewport(self, height: int) -> None:
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=WIDTH,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    def open(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        event = self.browser.wait_for("Page.loadEventFired", "Page.javascriptDialogOpening")
        assert event["method"] == "Page.loadEventFired", f"the page opened a dialog: {event}"

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def click(self, selector: str) -> None:
        """A real mouse click (press and release) at the centre of the element."""
        box = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.send(
                "Input.dispatchMouseEvent",
                type=kind,
                x=box[0],
                y=box[1],
                button="left",
                clickCount=1,
            )

    def screenshot(self, path: Path) -> None:
        """The whole page as a PNG."""
        height = self.evaluate("document.documentElement.scrollHeight")
        self.viewport(height)
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Iterator[Page]:
    binary = find_browser()
    if binary is None:
        pytest.skip("no Chromium found (apt-get install chromium)")
    folder = tmp_path_factory.mktemp("browser")
    html = write_synthetic(folder, predictions=True)["html"]
    browser = DevTools(binary, folder / "profile")
    try:
        tab = Page(browser)
        tab.open(html.as_uri())
        yield tab
    finally:
        browser.close()


def column(page: Page, table: str, index: int, attribute: str = "textContent") -> list:
    return page.evaluate(
        f"Array.from(document.querySelectorAll('#{table} tbody tr'))"
        f".map(r => r.cells[{index}].{attribute})"
    )


def test_tables_and_plots_render(page):
    assert page.evaluate("document.querySelectorAll('table.sortable').length") == 4
    assert page.evaluate("document.querySelectorAll('#overall-table tbody tr').length") == 12
    images = page.evaluate(
        "Array.from(document.querySelectorAll('.plots img'))"
        ".map(i => [i.complete, i.naturalWidth, i.getBoundingClientRect().width])"
    )
    assert len(images) == 5
    assert all(complete and natural > 100 and shown > 100 for complete, natural, shown in images)


def test_critical_difference_diagram_and_ranking_render(page):
    shown = page.evaluate(
        "(() => { const i = document.querySelector('#plot-cd-diagram img');"
        " return [i.complete, i.naturalWidth, i.naturalHeight]; })()"
    )
    assert shown[0] and shown[1] > 100 and shown[2] > 50
    assert len(column(page, "ranking-table", 0)) == 4  # one row per method


def test_intervals_and_vs_best_show_in_the_task_tables(page):
    headers = page.evaluate(
        "Array.from(document.querySelectorAll('#task-0-table th')).map(h => h.textContent)"
    )
    scores = column(page, "task-0-table", headers.index("accuracy"))
    versus = column(page, "task-0-table", headers.index("vs best"))
    assert all("[" in text and "]" in text for text in scores if text[0].isdigit())
    assert versus[0] == "best" and any(text.startswith(("yes (p=", "no (p=")) for text in versus)


def test_page_loads_nothing_from_elsewhere(page):
    requested = [
        e["params"]["request"]["url"]
        for e in page.browser.events
        if e.get("method") == "Network.requestWillBeSent"
    ]
    assert requested and all(url.startswith(("file:", "data:")) for url in requested)


def test_script_named_method_is_text_and_runs_nothing(page):
    assert not [e for e in page.browser.events if e.get("method") == "Page.javascriptDialogOpening"]
    assert page.evaluate("document.querySelectorAll('script').length") == 1
    assert EVIL in column(page, "overall-table", 1)
    assert EVIL in page.evaluate("document.body.innerText")


def test_unfinished_runs_are_shown_as_text(page):
    texts = page.evaluate(
        "Array.from(document.querySelectorAll('td.unfinished')).map(c => c.textContent)"
    )
    assert texts and all(any(c.isalpha() for c in text) for text in texts)
    assert {"unsupported", "2/4 unsupported"} <= set(texts)


def test_clicking_a_header_sorts_its_table(page):
    page.click("#overall-table th:nth-child(2)")  # method: text, ascending first
    methods = column(page, "overall-table", 1)
    assert page.evaluate(
        f"(v => v.every((x, i) => !i || v[i - 1].localeCompare(x) <= 0))({json.dumps(methods)})"
    )
    assert methods[0] == EVIL  # "<" sorts before letters
    header = "#overall-table th:nth-child(5)"  # score (normalised): numeric, descending first
    for order in ("descending", "ascending"):
        page.click(header)
        assert page.evaluate(f"document.querySelector('{header}').getAttribute('aria-sort')") == (
            order
        )
        keys = column(page, "overall-table", 4, "dataset.sort")
        numbers = [float(k) for k in keys if k is not None]
        assert numbers == sorted(numbers, reverse=order == "descending")
        assert keys[len(numbers) :] == [None] * (len(keys) - len(numbers))  # unfinished last
        assert len(numbers) == 11


def test_screenshot(page, tmp_path):
    page.send("Page.reload")
    page.browser.wait_for("Page.loadEventFired")
    path = tmp_path / "leaderboard.png"
    page.screenshot(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 50_000
