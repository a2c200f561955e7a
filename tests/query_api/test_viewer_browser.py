"""The web viewer in headless Chromium (Debian's package, driven by Playwright): load, filter by action and
actor, search, sort, expand a row and see its payload, download the CSV; a screenshot goes to
test-artifacts/."""

from __future__ import annotations

import csv
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from tests.query_api.conftest import NOW, TOKENS, make_event
from tests.query_api.server import ROOT, serve

pytestmark = [pytest.mark.browser, pytest.mark.clickhouse]

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


def _events() -> list:
    people = [
        {"type": "user", "id": "u-42", "name": "Ada Lovelace", "email": "ada@acme.test"},
        {"type": "user", "id": "u-7", "name": "Grace Hopper", "email": "grace@acme.test"},
        {"type": "system"},
    ]
    acts = [("deployment:create", "deployment", "console"), ("variable:update", "variable", "terraform"),
            ("environment:update", "environment", "api")]  # fmt: skip
    out = []
    for i in range(60):
        action, ttype, source = acts[i % 3]
        out.append(
            make_event(
                i,
                occurred_at=NOW - timedelta(minutes=7 * i),
                actor=people[i % 3 if i % 4 else 1],
                action=action,
                target={"type": ttype, "id": f"{ttype}-{i % 6}", "name": f"{ttype} checkout-{i % 6}"},
                source=source,
                status=[200, 201, 403][i % 3],
                request={
                    "method": "POST",
                    "path": f"/api/{ttype}s",
                    "payload": {"replicas": i, "marker": f"PAYLOAD-{i}"},
                },
            )
        )
    return out


def test_viewer_end_to_end(api_settings, insert, tmp_path: Path) -> None:  # noqa: ANN001
    evs = _events()
    insert(evs)
    ARTIFACTS.mkdir(exist_ok=True)
    with serve(api_settings) as (base, _proc), sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900}, accept_downloads=True)
            # the viewer runs under the API's Content-Security-Policy: nothing it does may be refused
            refused: list[str] = []
            page.on(
                "console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None
            )
            page.goto(base + "/")
            page.fill("#token", TOKENS["manager"][0])
            page.click("#token-form button[type=submit]")
            rows = page.locator("#events tbody tr.ev")
            expect(rows).to_have_count(50)  # first page
            expect(page.locator("#who")).to_contain_text("manager")
            expect(page.locator("#show-archives")).to_be_visible()  # Manager panel
            # time cell: browser time zone, UTC on hover
            assert page.locator("td.time").first.get_attribute("title").endswith("(UTC)")
            page.locator("#sentinel").scroll_into_view_if_needed()  # infinite scroll: the rest arrives
            expect(rows).to_have_count(60)

            # filter by action, then by actor
            page.fill("#action", "variable:update")
            page.press("#action", "Enter")
            expect(rows).to_have_count(20)
            expect(page.locator("#events tbody td.act").first).to_contain_text("variable:update")
            page.fill("#actor", "Grace Hopper")
            page.press("#actor", "Enter")
            n_grace = sum(
                1
                for i, e in enumerate(evs)
                if e.action == "variable:update" and e.actor.name == "Grace Hopper"
            )
            expect(rows).to_have_count(n_grace)
            for t in page.locator("#events tbody td.actor").all_inner_texts():
                assert "Grace Hopper" in t

            # search box (free text, any case) instead
            page.click("#reset")
            expect(rows).to_have_count(50)
            page.fill("#q", "CHECKOUT-5")
            page.click("#apply")
            expect(rows).to_have_count(10)

            # sort by action: a first click sorts ascending, a second descending
            page.click("#reset")
            expect(rows).to_have_count(50)
            acts_js = "els => els.map(e => e.firstChild.textContent)"
            page.click("th[data-sort=action]")
            expect(page.locator("th[data-sort=action]")).to_have_class("sortable sorted asc")
            expect(rows).to_have_count(50)
            acts = page.locator("#events tbody td.act").evaluate_all(acts_js)
            assert acts == sorted(acts) and len(set(acts)) > 1
            page.click("th[data-sort=action]")
            expect(page.locator("th[data-sort=action]")).to_have_class("sortable sorted")
            expect(rows).to_have_count(50)
            acts = page.locator("#events tbody td.act").evaluate_all(acts_js)
            assert acts == sorted(acts, reverse=True)

            # expand a row: pretty JSON with payload and request
            first = rows.first
            eid = first.get_attribute("data-id")
            first.click()
            detail = page.locator("#events tbody tr.detail pre.json")
            expect(detail).to_contain_text('"payload"')
            expect(detail).to_contain_text('"marker": "PAYLOAD-')
            expect(detail).to_contain_text(f'"event_id": "{eid}"')

            page.screenshot(path=str(ARTIFACTS / "query_viewer.png"), full_page=False)

            # see events for this target from a row
            page.locator("#events tbody tr.ev .see-target").first.click()
            expect(page.locator("#target_id")).not_to_have_value("")
            target = page.locator("#target_id").input_value()
            expect(rows).to_have_count(10)
            for t in page.locator("#events tbody td.target").all_inner_texts():
                assert target in t

            # download the CSV of the current filters
            with page.expect_download() as dl:
                page.click("#dl-csv")
            path = tmp_path / "events.csv"
            dl.value.save_as(path)
            lines = path.read_text().splitlines()
            assert next(csv.reader([lines[0]]))[:2] == ["event_id", "occurred_at"]
            assert len(lines) == 11 and all(target in x for x in lines[1:])
            assert dl.value.suggested_filename.endswith(".csv")
            assert refused == [], refused
        finally:
            browser.close()
