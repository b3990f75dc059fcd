"""The Templates editor in a real Chromium against `mesh up`: labels set, moved and removed from a template's page,
the description, messages added, removed and reordered (with and without JavaScript), the Test's answer wrapped while
a request shows that it runs, a blank variable caught before anything is sent, and line breaks kept as `\\n`."""

from __future__ import annotations

import re
import time
from contextlib import contextmanager

import httpx

from domain.template_content import MAX_DESCRIPTION_LENGTH, MAX_MESSAGES
from tests.e2e.test_dashboard import FREE_MODEL, browser, dashboard_mesh, shot, signed_up  # noqa: F401 (fixtures)


@contextmanager
def account_api(page, mesh):
    """The signed-up page's account through /api, with the session's token."""
    token = next(c["value"] for c in page.context.cookies() if c["name"] == "mesh_session")
    with httpx.Client(base_url=mesh.url, headers={"authorization": f"Bearer {token}"}, timeout=30) as api:
        yield api


def made(api, messages, name="t", **fields) -> str:
    created = api.post("/api/templates", json={"name": name, "messages": messages, **fields})
    assert created.status_code == 201, created.text
    return created.json()["id"]


def key_of(api) -> str:
    created = api.post("/api/keys", json={"label": "tester", "default_model": FREE_MODEL})
    assert created.status_code == 201, created.text
    return created.json()["key"]


def narrow(page, name: str) -> None:
    """At 375 px wide: nothing wider than the screen."""
    page.set_viewport_size({"width": 375, "height": 800})
    assert page.evaluate("document.documentElement.scrollWidth") <= 375, name
    shot(page, name)
    page.set_viewport_size({"width": 1280, "height": 900})


def test_a_label_is_set_from_the_page_then_moved_and_removed(browser, dashboard_mesh):
    from playwright.sync_api import expect

    with (
        signed_up(browser, dashboard_mesh, viewport={"width": 1280, "height": 900}) as page,
        account_api(page, dashboard_mesh) as api,
    ):
        template_id = made(api, [{"role": "user", "content": "one"}], name="labelled")
        assert (
            api.put(
                f"/api/templates/{template_id}",
                json={"name": "labelled", "messages": [{"role": "user", "content": "two"}]},
            ).status_code
            == 200
        )
        page.goto(f"/templates/{template_id}")
        form = page.locator("#labels-form")

        form.get_by_label("Label", exact=True).fill("production")
        form.get_by_label("Version").select_option("1")
        form.get_by_role("button", name="Set label").click()
        expect(page).to_have_url(re.compile(rf"/templates/{template_id}(#labels)?$"))
        assert api.get(f"/api/templates/{template_id}").json()["labels"] == {"production": 1}
        expect(page.locator("#version-1")).to_contain_text("production")
        expect(page.locator("#version-2")).not_to_contain_text("production")

        form.get_by_label("Label", exact=True).fill("production")  # the same label on version 2: moved there
        form.get_by_label("Version").select_option("2")
        form.get_by_role("button", name="Set label").click()
        expect(page.locator("#version-2")).to_contain_text("production")
        expect(page.locator("#version-1")).not_to_contain_text("production")
        assert api.get(f"/api/templates/{template_id}").json()["labels"] == {"production": 2}
        shot(page, "templates-labels")
        narrow(page, "templates-labels-375px")
        page.goto("/templates")
        expect(page.get_by_role("row", name=re.compile("labelled"))).to_contain_text("production→2")

        # a name the domain refuses: said next to the form, in its words, with what was typed kept
        page.goto(f"/templates/{template_id}")
        form.get_by_label("Label", exact=True).fill("Prod Uction")
        form.get_by_label("Version").select_option("1")
        form.get_by_role("button", name="Set label").click()
        expect(form.get_by_role("alert")).to_contain_text("a label is 1 to 40 characters of a-z, 0-9")
        expect(form.get_by_label("Label", exact=True)).to_have_value("Prod Uction")
        expect(form.get_by_label("Label", exact=True)).to_have_attribute("aria-invalid", "true")
        expect(form.get_by_label("Version")).to_have_value("1")
        assert api.get(f"/api/templates/{template_id}").json()["labels"] == {"production": 2}

        page.goto(f"/templates/{template_id}")
        page.get_by_role("button", name="Remove label production").click()
        expect(page.locator("#version-2")).not_to_contain_text("production")
        assert api.get(f"/api/templates/{template_id}").json()["labels"] == {}


def test_the_description_is_saved_and_shown_on_the_list(browser, dashboard_mesh):
    from playwright.sync_api import expect

    with (
        signed_up(browser, dashboard_mesh, viewport={"width": 1280, "height": 900}) as page,
        account_api(page, dashboard_mesh) as api,
    ):
        page.goto("/templates/new")
        description = page.get_by_label("Description")
        expect(description).to_have_attribute("maxlength", str(MAX_DESCRIPTION_LENGTH))
        page.get_by_label("Name").fill("described")
        description.fill("Greets a customer by name.")
        page.get_by_label("Message 1").fill("Hello {{name}}.")
        page.get_by_role("button", name="Create template").click()
        expect(page.get_by_role("heading", name=re.compile("described"))).to_contain_text("version 1")
        (listed,) = api.get("/api/templates").json()["data"]
        assert listed["description"] == "Greets a customer by name."
        expect(page.get_by_label("Description")).to_have_value("Greets a customer by name.")

        page.get_by_label("Description").fill("Greets a customer by first name.")
        page.get_by_role("button", name="Save as version 2").click()
        expect(page.get_by_role("heading", name=re.compile("described"))).to_contain_text("version 2")
        shown = api.get(f"/api/templates/{listed['id']}").json()
        assert (shown["version"], shown["description"]) == (2, "Greets a customer by first name.")

        page.goto("/templates")
        expect(page.get_by_role("row", name=re.compile("described"))).to_contain_text(
            "Greets a customer by first name."
        )
        shot(page, "templates-list-described")
        narrow(page, "templates-list-375px")


def test_messages_are_added_removed_and_reordered_with_javascript(browser, dashboard_mesh):
    from playwright.sync_api import expect

    with (
        signed_up(browser, dashboard_mesh, viewport={"width": 1280, "height": 900}) as page,
        account_api(page, dashboard_mesh) as api,
    ):
        template_id = made(
            api,
            [{"role": "system", "content": "Be {{tone}}."}, {"role": "user", "content": "drop me"}],
            name="ordered",
        )
        page.goto(f"/templates/{template_id}")
        posted: list[str] = []
        page.on("request", lambda r: posted.append(r.url) if r.method == "POST" else None)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        rows = page.locator(".message")
        before = rows.count()

        page.get_by_role("button", name="Add message").click()
        expect(rows).to_have_count(before + 1)
        page.get_by_label(f"Message {before + 1}", exact=True).fill("Answer {{question}}")
        page.get_by_label(f"Role {before + 1}", exact=True).select_option("user")
        page.get_by_role("button", name="Remove message 2").click()  # "drop me"
        expect(rows).to_have_count(before)
        expect(page.get_by_label("Message 2", exact=True)).to_have_value("")  # the blank row moved up
        page.get_by_role("button", name=f"Move up message {before}").click()
        page.get_by_role("button", name="Move up message 2").click()  # the new message now comes first
        expect(page.get_by_label("Message 1", exact=True)).to_have_value("Answer {{question}}")
        expect(page.get_by_label("Message 2", exact=True)).to_have_value("Be {{tone}}.")
        expect(page.get_by_label("Role 2", exact=True)).to_have_value("system")  # the role goes with its message
        expect(page.get_by_role("button", name="Move up message 1")).to_be_disabled()
        expect(page.locator("#detected")).to_have_text("question, tone")
        assert posted == []  # nothing sent while editing
        shot(page, "templates-editor-reordered")
        narrow(page, "templates-editor-375px")

        page.get_by_role("button", name="Save as version 2").click()
        expect(page.get_by_role("heading", name=re.compile("ordered"))).to_contain_text("version 2")
        saved = api.get(f"/api/templates/{template_id}").json()
        assert saved["messages"] == [
            {"role": "user", "content": "Answer {{question}}"},
            {"role": "system", "content": "Be {{tone}}."},
        ]
        assert len(posted) == 1 and errors == []


def test_messages_are_reordered_without_javascript(browser, dashboard_mesh):
    from playwright.sync_api import expect

    with (
        signed_up(browser, dashboard_mesh, java_script_enabled=False, viewport={"width": 1280, "height": 900}) as page,
        account_api(page, dashboard_mesh) as api,
    ):
        template_id = made(
            api,
            [{"role": "system", "content": "first"}, {"role": "user", "content": "second"}],
            name="plain",
            description="kept while editing",
        )
        page.goto(f"/templates/{template_id}")
        page.get_by_label("Message 2", exact=True).fill("second, edited")
        page.get_by_role("button", name="Move down message 1").click()
        expect(page.get_by_role("status")).to_contain_text("Not saved yet")
        expect(page.get_by_label("Message 1", exact=True)).to_have_value("second, edited")  # unsaved edits kept
        expect(page.get_by_label("Message 2", exact=True)).to_have_value("first")
        expect(page.get_by_label("Role 2", exact=True)).to_have_value("system")
        expect(page.get_by_label("Description")).to_have_value("kept while editing")
        assert api.get(f"/api/templates/{template_id}").json()["latest_version"] == 1  # nothing saved yet

        rows = page.locator(".message").count()
        page.get_by_role("button", name="Add message").click()
        expect(page.locator(".message")).to_have_count(rows + 1)
        page.get_by_label(f"Message {rows + 1}", exact=True).fill("third")
        page.get_by_role("button", name=f"Remove message {rows}").click()  # the blank row below "first"
        expect(page.locator(".message")).to_have_count(rows)
        shot(page, "templates-editor-no-js")
        page.get_by_role("button", name="Save as version 2").click()
        expect(page.get_by_role("heading", name=re.compile("plain"))).to_contain_text("version 2")
        saved = api.get(f"/api/templates/{template_id}").json()
        assert saved["messages"] == [
            {"role": "user", "content": "second, edited"},
            {"role": "system", "content": "first"},
            {"role": "user", "content": "third"},  # a row added after an assistant's is the user's
        ]
        assert saved["description"] == "kept while editing"

        # the server's bound on messages: a full template offers no Add
        full = made(api, [{"role": "user", "content": f"m{i}"} for i in range(MAX_MESSAGES)], name="full")
        page.goto(f"/templates/{full}")
        expect(page.locator(".message")).to_have_count(MAX_MESSAGES)
        expect(page.get_by_role("button", name="Add message")).to_be_disabled()


def test_a_blank_variable_is_flagged_and_nothing_is_sent(browser, dashboard_mesh, fake_openai):
    from playwright.sync_api import expect

    for javascript in (True, False):
        with (
            signed_up(browser, dashboard_mesh, java_script_enabled=javascript) as page,
            account_api(page, dashboard_mesh) as api,
        ):
            secret = key_of(api)
            template_id = made(api, [{"role": "user", "content": "I am {{name}}, ask {{topic}}"}])
            page.goto(f"/templates/{template_id}")
            sent = len(fake_openai.requests)
            page.get_by_label("name", exact=True).fill("Ada")
            page.get_by_label("API key").fill(secret)
            page.get_by_role("button", name="Test").click()
            alert = page.locator("#test-result").get_by_role("alert")
            expect(alert).to_have_text("topic is empty: fill it in to test; nothing was sent")
            expect(page.get_by_label("name", exact=True)).to_have_value("Ada")
            time.sleep(1)  # a call would have reached the upstream by now, and been logged
            assert len(fake_openai.requests) == sent, javascript
            assert api.get("/api/logs").json()["data"] == []
            if javascript:
                expect(page.get_by_label("topic", exact=True)).to_be_focused()

            page.get_by_label("topic", exact=True).fill("the weather")
            page.get_by_label("API key").fill(secret)
            page.get_by_role("button", name="Test").click()
            expect(page.locator("#answer")).not_to_be_empty()
            assert len(fake_openai.requests) == sent + 1


def test_the_answer_wraps_and_the_test_button_waits_while_sending(browser, dashboard_mesh, fake_openai):
    from playwright.sync_api import expect

    with (
        signed_up(browser, dashboard_mesh, viewport={"width": 1280, "height": 900}) as page,
        account_api(page, dashboard_mesh) as api,
    ):
        secret = key_of(api)
        template_id = made(api, [{"role": "user", "content": "Say a lot."}])
        page.goto(f"/templates/{template_id}")
        page.get_by_label("API key").fill(secret)
        words, delay = fake_openai.reply_words, fake_openai.delay
        fake_openai.reply_words, fake_openai.delay = 600, 2.0  # a long answer, slowly
        try:
            button = page.get_by_role("button", name="Test", exact=True)
            button.click()
            expect(page.locator("#sending")).to_be_visible()
            expect(page.locator("#sending")).to_have_text("Sending…")
            expect(button).to_be_disabled()
            expect(page.locator("#answer")).to_contain_text("w599", timeout=30_000)
        finally:
            fake_openai.reply_words, fake_openai.delay = words, delay
        expect(page.locator("#sending")).to_be_hidden()
        expect(button).to_be_enabled()
        answer = page.locator("#answer")
        assert answer.evaluate("e => e.scrollWidth <= e.clientWidth"), "the answer is cut off on the right"
        assert answer.evaluate("e => getComputedStyle(e).whiteSpace") == "pre-wrap"
        shot(page, "templates-test-wrapped")
        narrow(page, "templates-test-wrapped-375px")


def test_line_breaks_from_the_page_are_saved_as_newlines(browser, dashboard_mesh):
    from playwright.sync_api import expect

    with signed_up(browser, dashboard_mesh) as page, account_api(page, dashboard_mesh) as api:
        page.goto("/templates/new")
        page.get_by_label("Name").fill("lines")
        page.get_by_label("Description").fill("first line\nsecond line")
        page.get_by_label("Message 1").fill("You are {{persona}}.\nBe brief.")
        page.get_by_label("Stop (one per line)").fill("END\nSTOP")
        page.get_by_role("button", name="Create template").click()
        expect(page.get_by_role("heading", name=re.compile("lines"))).to_contain_text("version 1")
        template_id = api.get("/api/templates").json()["data"][0]["id"]
        first = api.get(f"/api/templates/{template_id}")
        assert "\\r" not in first.text, first.text  # JSON writes a carriage return as \r
        assert first.json()["description"] == "first line\nsecond line"
        assert first.json()["messages"][0]["content"] == "You are {{persona}}.\nBe brief."
        assert first.json()["defaults"]["stop"] == ["END", "STOP"]

        page.get_by_label("Message 1").fill("You are {{persona}}.\n\nBe brief.\n")
        page.get_by_role("button", name="Save as version 2").click()
        expect(page.get_by_role("heading", name=re.compile("lines"))).to_contain_text("version 2")
        second = api.get(f"/api/templates/{template_id}")
        assert "\\r" not in second.text, second.text
        assert second.json()["messages"][0]["content"] == "You are {{persona}}.\n\nBe brief.\n"
        assert second.json()["description"] == "first line\nsecond line"
