"""The viewer over the demo's own data, in headless Chromium (Debian's package, driven by Playwright), under
a strict Content-Security-Policy (no 'unsafe-inline'): the timeline (bars add up to the total; a drag
selects a time range that becomes the filter), the filters, sort and open event in the URL (a shared link
reopens the same view; the back button undoes each step), the "Triggers and webhooks" view, and the
before/after table of an event's changes.

The data is what ``make demo`` stores: the demo scenario's history and token work, and live calls made
to the simulated platform through the ASGI middleware, each enriched by the real enricher rules.
Screenshots go to test-artifacts/; with AUDITPIPE_UPDATE_DOCS_IMAGES=1 the first one also replaces
docs/images/viewer.png (the README's).
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import shutil
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from schemas.events_v1 import EnrichedEvent, RawEvent
from services.common.settings import EnricherSettings
from services.demo import scenario
from services.demo.platform import platform_app
from services.enricher.rules.enrich import Enricher
from tests.query_api.conftest import NOW, TOKENS
from tests.query_api.server import ROOT, serve
from tests.query_api.test_viewer_browser import CHROMIUM_ARGS

pytestmark = [pytest.mark.browser, pytest.mark.clickhouse]

ARTIFACTS = ROOT / "test-artifacts"
DOCS_IMAGE = ROOT / "docs" / "images" / "viewer.png"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


class Recorder:
    def __init__(self) -> None:
        self.events: list[RawEvent] = []

    def prepare(self, ev: RawEvent) -> RawEvent:
        return ev

    async def emit_prepared(self, ev: RawEvent) -> None:
        self.events.append(ev)


def demo_events() -> list[EnrichedEvent]:
    """The demo's events, enriched as the pipeline enriches them."""
    rng = random.Random(7)
    raws: list[Any] = [RawEvent.model_validate(d) for d in scenario.history(NOW, rng, "browser")]
    raws += [RawEvent.model_validate(d) for d in scenario.token_activity(NOW, rng, "browser")]
    rec = Recorder()
    app = platform_app("", "", client=rec)

    async def live() -> None:
        transport = httpx.ASGITransport(app=app, client=(scenario.PROXY_CHAIN[-1], 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://platform") as http:
            for c in scenario.live_calls(rng, 30, failing=True):
                await http.request(c["method"], c["path"], json=c["json"], headers=c["headers"])

    asyncio.run(live())
    raws += rec.events
    enricher = Enricher.from_settings(EnricherSettings(trusted_proxies=["10.0.0.0/8"]))
    out = []
    for i, raw in enumerate(raws):
        # the Kafka timestamp is the enriched_at of an event (and its received_at when it has none)
        ts = int((raw.occurred_at + timedelta(milliseconds=40)).timestamp() * 1000)
        (enriched,) = enricher.process(
            raw.model_dump_json(exclude_none=True).encode(),
            topic="raw",
            partition=0,
            offset=i,
            timestamp_ms=ts,
        )
        out.append(EnrichedEvent.model_validate_json(enriched.value))
    return out


def rows(page: Page):  # noqa: ANN201
    return page.locator("#events tbody tr.ev")


def url_params(page: Page) -> dict[str, list[str]]:
    return parse_qs(urlparse(page.url).query)


def login(page: Page, url: str) -> None:
    page.goto(url)
    page.fill("#token", TOKENS["manager"][0])
    page.click("#token-form button[type=submit]")
    expect(page.locator("#who")).to_contain_text("manager")


def shown_times(page: Page) -> list[datetime]:
    titles = page.locator("#events tbody td.time").evaluate_all("els => els.map(e => e.title)")
    return [datetime.fromisoformat(t.replace(" (UTC)", "").replace("Z", "+00:00")) for t in titles]


def test_viewer_timeline_url_state_triggers_and_changes(api_settings, insert) -> None:  # noqa: ANN001
    evs = demo_events()
    insert(evs)
    refused = sorted(e.status for e in evs if e.status and e.status >= 400)
    assert refused == [403, 409]
    triggers = [e for e in evs if e.actor.type == "system" or e.source == "webhook"]
    ARTIFACTS.mkdir(exist_ok=True)
    with serve(api_settings) as (base, _proc), sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            ctx = browser.new_context(
                viewport={"width": 1400, "height": 900}, timezone_id="UTC", locale="en-GB"
            )
            ctx.route(lambda u: urlparse(u).path == "/", _with_csp)
            page = ctx.new_page()
            problems: list[str] = []
            page.on(
                "console", lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None
            )
            page.on("pageerror", lambda e: problems.append(str(e)))

            login(page, base + "/")
            expect(rows(page)).to_have_count(50)
            # -- the timeline: one bar per bucket, adding up to every event
            bars = page.locator("#tl-svg rect.tl-bar")
            expect(page.locator("#tl-label")).to_contain_text(f"{len(evs)} events")
            counts = bars.evaluate_all("els => els.map(e => Number(e.dataset.count))")
            assert sum(counts) == len(evs) and len(counts) >= 12 and sum(1 for c in counts if c) > 5
            acts = page.locator("#events tbody td.act").evaluate_all(
                "els => els.map(e => e.firstChild.textContent)"
            )
            assert all(re.fullmatch(r"[a-z_]+:[a-z_]+", a) for a in acts), acts
            page.screenshot(path=str(ARTIFACTS / "viewer-timeline.png"))
            if os.environ.get("AUDITPIPE_UPDATE_DOCS_IMAGES") == "1":
                DOCS_IMAGE.parent.mkdir(exist_ok=True)
                shutil.copy(ARTIFACTS / "viewer-timeline.png", DOCS_IMAGE)

            # -- status filter in the URL; back and forward
            page.fill("#status", "403, 409")
            page.press("#status", "Enter")
            expect(rows(page)).to_have_count(2)
            assert url_params(page)["status"] == ["403", "409"]
            assert sorted(page.locator("#events tbody td.status").all_inner_texts()) == ["403", "409"]
            page.go_back()
            expect(page.locator("#status")).to_have_value("")
            expect(rows(page)).to_have_count(50)
            page.go_forward()
            expect(page.locator("#status")).to_have_value("403, 409")
            expect(rows(page)).to_have_count(2)
            page.go_back()
            expect(rows(page)).to_have_count(50)

            # -- drag across the timeline: the range becomes the time filter
            box = page.locator("#tl-svg").bounding_box()
            y = box["y"] + box["height"] / 2
            page.mouse.move(box["x"] + box["width"] * 0.30, y)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] * 0.45, y, steps=5)
            page.mouse.move(box["x"] + box["width"] * 0.60, y, steps=5)
            page.mouse.up()
            expect(page.locator("#since")).not_to_have_value("")
            expect(page.locator("#until")).not_to_have_value("")
            q = url_params(page)
            since = datetime.fromisoformat(q["since"][0].replace("Z", "+00:00"))
            until = datetime.fromisoformat(q["until"][0].replace("Z", "+00:00"))
            inside = [e for e in evs if since <= e.occurred_at < until]
            assert 0 < len(inside) < len(evs)
            expect(page.locator("#tl-label")).to_contain_text(f"{len(inside)} events")
            expect(rows(page)).to_have_count(min(50, len(inside)))
            assert all(since <= t < until for t in shown_times(page))
            expect(page.locator("#tl-clear")).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "viewer-range.png"))
            page.go_back()  # the range is gone again
            expect(page.locator("#since")).to_have_value("")
            expect(page.locator("#tl-label")).to_contain_text(f"{len(evs)} events")

            # -- triggers and webhooks
            page.click("#view-triggers")
            expect(page.locator("#view-triggers")).to_have_attribute("aria-selected", "true")
            assert url_params(page)["view"] == ["triggers"]
            expect(rows(page)).to_have_count(min(50, len(triggers)))
            for actor, source in zip(
                page.locator("#events tbody td.actor").evaluate_all(
                    "els => els.map(e => e.firstChild.textContent)"
                ),
                page.locator("#events tbody td.source").all_inner_texts(),
                strict=True,
            ):
                assert actor == "system" or source == "webhook", (actor, source)
            expect(page.locator("#tl-label")).to_contain_text(f"{len(triggers)} events")
            page.screenshot(path=str(ARTIFACTS / "viewer-triggers.png"))

            # -- an event's changes as a before/after table; the open event is in the URL
            page.fill("#action", "environment:stop")
            page.press("#action", "Enter")
            expect(rows(page).first).to_be_visible()
            first = rows(page).first
            eid = first.get_attribute("data-id")
            first.click()
            table = page.locator("#events tbody tr.detail table.changes")
            expect(table.locator("tbody tr")).to_have_count(1)
            expect(table.locator("td.field")).to_have_text("state")
            expect(table.locator("td.before")).to_have_text("Running")
            expect(table.locator("td.after")).to_have_text("Stopped")
            assert url_params(page)["event"] == [eid]
            page.screenshot(path=str(ARTIFACTS / "viewer-changes.png"))
            shared = page.url
            page.reload()  # the same view comes back: filters, view, open event
            expect(page.locator("#events tbody tr.detail table.changes td.after")).to_have_text("Stopped")
            expect(page.locator("#action")).to_have_value("environment:stop")
            page.go_back()  # closes the event, keeps the filter
            expect(page.locator("#events tbody tr.detail")).to_have_count(0)
            expect(page.locator("#action")).to_have_value("environment:stop")

            # -- the shared link in another tab (its own sign-in: the token is never in the URL)
            assert TOKENS["manager"][0] not in shared
            other = ctx.new_page()
            login(other, shared)
            expect(other.locator("#view-triggers")).to_have_attribute("aria-selected", "true")
            expect(other.locator("#events tbody tr.detail table.changes td.before")).to_have_text("Running")

            # -- a secret's change: both values hidden, shown as indicators
            page.click("#view-all")
            page.fill("#action", "variable:update")
            page.fill("#q", "API_TOKEN")
            page.click("#apply")
            expect(rows(page).first).to_be_visible()
            rows(page).first.click()
            cells = page.locator("#events tbody tr.detail table.changes td.sensitive")
            expect(cells.first).to_be_visible()
            for text in cells.all_inner_texts():
                assert text.startswith("[sensitive:")
            assert not any(s in page.content() for s in scenario.SECRET_VALUES)
            assert problems == [], problems  # nothing the CSP refused, no script error
        finally:
            browser.close()


def _with_csp(route) -> None:  # noqa: ANN001
    """The viewer's page as served, with a strict CSP added (the server's own headers may add more)."""
    resp = route.fetch()
    route.fulfill(response=resp, headers={**resp.headers, "content-security-policy": CSP})


def test_viewer_markup_has_no_inline_script_or_handler() -> None:
    html = (ROOT / "services" / "query_api" / "static" / "index.html").read_text()
    for tag in re.findall(r"<script\b[^>]*>", html):
        assert "src=" in tag, tag
    assert re.search(r"<script\b[^>]*>\s*[^<\s]", html) is None  # no inline body
    assert re.search(r"\son[a-z]+\s*=", html, re.I) is None  # no onclick= …
    assert re.search(r"\sstyle\s*=", html, re.I) is None
    js = (ROOT / "services" / "query_api" / "static" / "app.js").read_text()
    assert "innerHTML" not in js and ".style" not in js and "eval(" not in js
