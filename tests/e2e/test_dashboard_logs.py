"""The Logs page in a real Chromium against `mesh up`: the export buttons download exactly the requests the page
lists (the JSON API's export, by one piece of code), the Newer and Older pages walk every request exactly once
while new ones arrive, and a request's page shows its bodies readably, or says why there are none."""

from __future__ import annotations

import csv
import html
import io
import json
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests import http_calls
from tests.e2e.conftest import SHARED_ADDRESS_LIMITS, own_mesh
from tests.e2e.test_dashboard import MODEL, PASSWORD, TIMEOUT_MS, browser, dashboard_mesh, shot  # noqa: F401 (fixtures)

NARROW = {"width": 375, "height": 800}


@pytest.fixture(scope="module")
def bodies_mesh(tmp_path_factory, mesh_config):
    """A Mesh that keeps prompts and answers (MESH_LOG_BODIES=on)."""
    with own_mesh(
        tmp_path_factory, mesh_config, "logs-bodies", {"MESH_LOG_BODIES": "on", **SHARED_ADDRESS_LIMITS}
    ) as mesh:
        yield mesh


class Account:
    """A new account, signed up through the API and granted `usd` by the operator."""

    def __init__(self, mesh, usd: str = "1"):
        signed_up = http_calls.post(
            mesh.url + "/api/signup",
            json={"email": f"{uuid.uuid4().hex[:8]}@example.com", "password": PASSWORD},
            timeout=30,
        )
        assert signed_up.status_code == 201, signed_up.text
        self.mesh, self.id, self.token = mesh, signed_up.json()["account_id"], signed_up.json()["management_token"]
        granted = http_calls.post(
            f"{mesh.url}/admin/accounts/{self.id}/credits",
            headers={"authorization": f"Bearer {mesh.operator_token}"},
            json={"amount_usd": usd, "reason": "test"},
            timeout=30,
        )
        assert granted.status_code == 201, granted.text

    def get(self, path: str, **params) -> httpx.Response:
        return http_calls.get(self.mesh.url + path, params=params, headers={"authorization": f"Bearer {self.token}"})

    def key(self, label: str) -> tuple[str, str]:
        """A new key's (id, secret)."""
        created = http_calls.post(
            self.mesh.url + "/api/keys",
            headers={"authorization": f"Bearer {self.token}"},
            json={"label": label, "default_model": MODEL},
        )
        assert created.status_code == 201, created.text
        return created.json()["id"], created.json()["key"]

    def call(self, secret: str, content: str = "hello logs") -> str:
        """A chat completion with the key; its trace id."""
        r = http_calls.post(
            self.mesh.url + "/v1/chat/completions",
            headers={"authorization": f"Bearer {secret}"},
            json={"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 16},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        return r.headers["x-mesh-trace-id"]

    def logged(self, n: int) -> None:
        """Waits until the logs read model has the account's `n` requests (the pages are drawn from it)."""
        deadline = time.monotonic() + 30
        while len(self.get("/api/logs", limit=500).json()["data"]) < n:
            assert time.monotonic() < deadline, "the logs did not catch up"
            time.sleep(0.2)

    @contextmanager
    def page(self, browser, **context_options):
        """A browser page signed in as this account (its token is the session cookie)."""
        context = browser.new_context(base_url=self.mesh.url, accept_downloads=True, **context_options)
        context.set_default_timeout(TIMEOUT_MS)
        context.add_cookies([{"name": "mesh_session", "value": self.token, "url": self.mesh.url}])
        try:
            yield context.new_page()
        finally:
            context.close()


def traces_shown(page) -> list[str]:
    """The trace ids of the table's rows, top to bottom (each row links to its request)."""
    hrefs = page.locator("tbody tr td:nth-child(2) a").evaluate_all("links => links.map(a => a.getAttribute('href'))")
    return [href.removeprefix("/logs/") for href in hrefs]


def narrow(page, name: str) -> None:
    """At 375 px wide: nothing wider than the screen."""
    page.set_viewport_size(NARROW)
    assert page.evaluate("document.documentElement.scrollWidth") <= NARROW["width"], name
    shot(page, name)
    page.set_viewport_size({"width": 1280, "height": 900})


def test_the_export_buttons_download_the_requests_the_page_lists(browser, dashboard_mesh):
    from playwright.sync_api import expect

    account = Account(dashboard_mesh)
    (a_id, a), (_, b) = account.key("export-a"), account.key("export-b")
    mine = [account.call(a) for _ in range(3)]
    others = [account.call(b) for _ in range(2)]
    account.logged(len(mine) + len(others))
    api_csv = account.get("/api/logs/export", format="csv", key_id=a_id)
    with account.page(browser, viewport={"width": 1280, "height": 900}) as page:
        page.goto("/logs")
        page.get_by_role("navigation", name="Time range").get_by_role("link", name="1h").click()
        page.get_by_label("Key").select_option(a_id)
        page.get_by_role("button", name="Filter").click()
        expect(page.get_by_label("Active filters")).to_contain_text("key id export-a")
        shown = traces_shown(page)
        assert shown == mine[::-1]  # newest first, only the key's

        link = page.get_by_role("link", name="Export CSV")
        query = parse_qs(urlsplit(link.get_attribute("href")).query)
        assert query == {"key_id": [a_id], "range": ["1h"], "format": ["csv"]}
        with page.expect_download() as downloading:
            link.click()
        download = downloading.value
        assert download.suggested_filename == "mesh-logs.csv"
        body = open(download.path(), "rb").read()
        rows = list(csv.DictReader(io.StringIO(body.decode())))
        assert [r["trace_id"] for r in rows] == shown
        assert {(r["key_label"], r["model"], r["status"]) for r in rows} == {("export-a", MODEL, "success")}
        assert body == api_csv.content  # the JSON API's export of the same key, byte for byte
        for row in rows:  # the cost on the page, to the cent, and exactly on hover, is the export's
            cell = page.locator("tbody tr", has=page.locator(f'a[href="/logs/{row["trace_id"]}"]')).locator("td")
            assert cell.nth(6).get_attribute("title") == f"${row['cost_usd']}"

        with page.expect_download() as downloading:
            page.get_by_role("link", name="Export JSONL").click()
        lines = [json.loads(line) for line in open(downloading.value.path(), "rb").read().splitlines()]
        assert [e["trace_id"] for e in lines] == shown and {e["key_id"] for e in lines} == {a_id}
        shot(page, "logs-export")
        narrow(page, "logs-export-375")

        # the download carries the range: days that hold none of the requests export none of them
        yesterday = (datetime.now(timezone.utc) - timedelta(days=1)).date().isoformat()
        session = {"mesh_session": account.token}
        empty = http_calls.get(
            dashboard_mesh.url + "/logs/export",
            params={"format": "csv", "key_id": a_id, "from": yesterday, "to": yesterday},
            cookies=session,
        )
        assert empty.status_code == 200 and empty.text.splitlines() == [",".join(rows[0].keys())]
        assert empty.headers["cache-control"] == "no-store"
        bad = http_calls.get(dashboard_mesh.url + "/logs/export", params={"format": "xml"}, cookies=session)
        assert bad.status_code == 400 and "format is csv or jsonl" in html.unescape(bad.text)


def test_newer_and_older_pages_show_every_request_once_while_more_arrive(browser, dashboard_mesh):
    from playwright.sync_api import expect

    account = Account(dashboard_mesh)
    (key_id, key), (_, other) = account.key("paged"), account.key("not-paged")
    first = [account.call(key) for _ in range(60)]
    account.call(other)  # another key's: never on the filtered pages
    account.logged(61)
    with account.page(browser, viewport={"width": 1280, "height": 900}) as page:
        page.goto(f"/logs?key_id={key_id}&range=24h")
        newest = traces_shown(page)
        assert newest == first[::-1][:50]
        pager = page.get_by_role("navigation", name="Pages of requests")
        expect(pager.get_by_role("link")).to_have_text(["Older requests →"])

        pager.get_by_role("link", name="Older requests").click()
        oldest = traces_shown(page)
        assert oldest == first[::-1][50:]
        expect(pager.get_by_role("link")).to_have_text(["« Newest", "← Newer requests"])
        assert parse_qs(urlsplit(page.url).query)["key_id"] == [key_id]
        shot(page, "logs-older")
        # while the visitor reads an older page (only the newest follows new requests live): would shift an offset
        later = [account.call(key) for _ in range(3)]
        account.logged(64)

        pager.get_by_role("link", name="Newer requests").click()
        assert traces_shown(page) == newest  # the page before, exactly: the 3 new ones come after it
        expect(pager.get_by_role("link")).to_have_text(["« Newest", "← Newer requests", "Older requests →"])
        pager.get_by_role("link", name="Newer requests").click()
        newer = traces_shown(page)
        assert newer == later[::-1]
        expect(pager.get_by_role("link")).to_have_text(["« Newest", "Older requests →"])
        walked = oldest + newest + newer
        assert sorted(walked) == sorted(first + later) and len(set(walked)) == len(walked)  # each exactly once
        assert parse_qs(urlsplit(page.url).query)["range"] == ["24h"]
        narrow(page, "logs-newer-375")

        pager.get_by_role("link", name="Newest").click()
        assert traces_shown(page) == (first + later)[::-1][:50]

        # a link whose position is damaged (or that names two) is a page saying so
        for query in ("cursor=not-a-cursor", "before=bm90IGpzb24", "before=" + "A" * 500):
            shown = page.goto(f"/logs?key_id={key_id}&{query}")
            assert shown.status == 400, query
            expect(page.get_by_role("alert")).to_contain_text("this link to the")
            expect(page.get_by_role("alert")).to_contain_text("is damaged")
        page.goto(f"/logs?key_id={key_id}")
        older = pager.get_by_role("link", name="Older requests").get_attribute("href")
        position = parse_qs(urlsplit(older).query)["cursor"][0]
        both = page.goto(f"/logs?cursor={position}&before={position}")
        assert both.status == 400
        expect(page.get_by_role("alert")).to_contain_text("not both")


def test_a_request_page_says_bodies_are_not_kept_and_how_to_keep_them(browser, dashboard_mesh):
    from playwright.sync_api import expect

    account = Account(dashboard_mesh)
    _, key = account.key("no-bodies")
    trace = account.call(key, "a prompt this server forgets")
    account.logged(1)
    with account.page(browser, viewport={"width": 1280, "height": 900}) as page:
        page.goto(f"/logs/{trace}")
        note = page.locator("#no-bodies")
        expect(note).to_contain_text("Prompts and answers are not kept on this server")
        expect(note).to_contain_text("MESH_LOG_BODIES=on")
        expect(page.locator("pre.body")).to_have_count(0)
        assert "a prompt this server forgets" not in page.content()
        shot(page, "logs-entry-no-bodies")
        narrow(page, "logs-entry-no-bodies-375")


def test_a_request_page_shows_its_bodies_readably_when_kept(browser, bodies_mesh):
    from playwright.sync_api import expect

    account = Account(bodies_mesh, usd="20")  # the prompt's worst case (a token a character) is reserved
    _, key = account.key("bodies")
    long_prompt = "remember " + " ".join(f"word{n}" for n in range(800))  # longer than the box: it scrolls
    trace = account.call(key, long_prompt)
    embedded = http_calls.post(
        bodies_mesh.url + "/v1/embeddings",
        headers={"authorization": f"Bearer {key}"},
        json={"model": MODEL, "input": "no bodies for me"},
        timeout=30,
    )
    assert embedded.status_code == 200, embedded.text
    account.logged(2)
    with account.page(browser, viewport={"width": 1280, "height": 900}) as page:
        page.goto(f"/logs/{trace}")
        request_body = page.get_by_role("region", name="Prompt and answer").locator("pre.body").first
        for _ in range(75):  # bodies land a moment after the request, on a stream of their own
            if request_body.count():
                break
            time.sleep(0.2)
            page.reload()
        expect(page.get_by_label("Request body")).to_be_visible()
        shown = page.get_by_label("Request body").inner_text()
        assert json.loads(shown)["messages"] == [{"role": "user", "content": long_prompt}]
        assert '\n  "messages": [\n' in shown  # indented, a member a line
        answer = page.get_by_label("Response body").inner_text()
        assert json.loads(answer)["choices"][0]["message"]["content"] and '\n  "choices": [' in answer
        style = page.get_by_label("Request body").evaluate(
            "e => [getComputedStyle(e).whiteSpace, e.scrollHeight > e.clientHeight, e.clientHeight, e.tabIndex]"
        )
        assert style[0] == "pre-wrap" and style[1] and style[2] < 900 and style[3] == 0  # wraps; scrolls; by keys
        expect(page.locator("#no-bodies")).to_have_count(0)
        shot(page, "logs-entry-bodies")
        page.set_viewport_size(NARROW)
        assert page.evaluate("document.documentElement.scrollWidth") <= NARROW["width"]
        assert page.get_by_label("Request body").evaluate("e => e.scrollWidth <= e.clientWidth")  # wrapped
        shot(page, "logs-entry-bodies-375")

        # an entry of this server that has none (embeddings keep no bodies) says so
        page.goto(f"/logs/{embedded.headers['x-mesh-trace-id']}")
        expect(page.locator("#no-bodies")).to_contain_text("No prompt or answer was kept for this request")
        expect(page.locator("#no-bodies")).not_to_contain_text("MESH_LOG_BODIES=on")
