"""The playground in a real browser: Debian's Chromium driven by Playwright (no browser
download). A prompt typed in streams its answer in; the runs view draws a loss curve.
Every request the page makes must go to the server: nothing may load from the network."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium on PATH: install Debian's (apt-get install chromium; "
    "scripts/install-browser.sh does) to run the browser tests",
)
KEY = "browser-key"
# prompts whose greedy answers from the tiny random model are visible text, not special tokens
CHAT_PROMPT = "hello"
COMPLETION_PROMPT = "we are going to the park"


@pytest.fixture(scope="module")
def server(serve: Any, runs_dir: Any) -> Iterator[Any]:
    with serve("causal", model_name="tiny", runs_dir=runs_dir, api_keys=(KEY,)) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, server: Any) -> Iterator[Any]:
    """The playground, with the API key entered; every request it makes is recorded."""
    page = browser.new_page()
    page.requests = []
    page.on("request", lambda request: page.requests.append(request.url))
    page.goto(server.url)
    # no key yet: the page says what the server answered
    page.wait_for_function("document.getElementById('status').textContent.includes('API key')")
    page.fill("#api-key", KEY)
    page.dispatch_event("#api-key", "change")
    page.wait_for_function("document.getElementById('model-name').textContent === 'tiny'")
    yield page
    hosts = {urlparse(url).netloc for url in page.requests}
    assert hosts == {urlparse(server.url).netloc}, f"requests left the server: {hosts}"
    page.close()


def ask(page: Any, mode: str, prompt: str, max_tokens: int) -> Any:
    """Type ``prompt`` in ``mode`` with temperature 0, send it, wait for the answer's end."""
    page.check(f"input[name=mode][value={mode}]")
    page.fill("#temperature", "0")
    page.fill("#max-tokens", str(max_tokens))
    page.type("#prompt", prompt)
    page.click("#send")
    selector = ".message.assistant .content" if mode == "chat" else ".completion-block .output"
    output = page.locator(selector).last
    page.wait_for_function(
        "s => { const all = document.querySelectorAll(s); "
        "return all.length && 'finished' in all[all.length - 1].dataset }",
        arg=selector,
    )
    return output


def test_a_chat_typed_in_the_page_streams_in(page, server) -> None:
    output = ask(page, "chat", CHAT_PROMPT, max_tokens=12)
    want = server.client(KEY).chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": CHAT_PROMPT}],
        max_tokens=12,
        temperature=0,
    )
    assert output.text_content() == want.choices[0].message.content
    assert int(output.get_attribute("data-chunks")) > 1  # arrived in pieces, as streamed
    assert output.get_attribute("data-finished") == "length"
    assert "12 completion tokens" in page.text_content("#status")
    assert page.locator(".message.user").last.text_content().endswith(CHAT_PROMPT)


def test_a_completion_streams_in_and_shows_its_prompt(page, server) -> None:
    output = ask(page, "completion", COMPLETION_PROMPT, max_tokens=6)
    want = server.client(KEY).completions.create(
        model="tiny", prompt=COMPLETION_PROMPT, max_tokens=6, temperature=0
    )
    assert output.text_content() == want.choices[0].text
    assert page.locator(".completion-block .prompt").last.text_content() == COMPLETION_PROMPT
    assert int(output.get_attribute("data-chunks")) > 1


def test_the_runs_view_plots_loss_curves_and_shows_metrics(page) -> None:
    page.click("#show-runs")
    page.locator("#run-list button", has_text="tiny-gpt2").click()
    train = page.locator("svg.chart polyline.train")
    train.wait_for()
    assert len(train.get_attribute("points").split()) == 4  # one point per logged step
    assert len(page.locator("svg.chart polyline.eval").get_attribute("points").split()) == 2
    assert page.locator("#run-detail table").count() >= 3  # last step, last eval, compute
    page.locator("#run-list button", has_text="eval-bleu").click()
    page.locator("#run-detail td", has_text="12.5").wait_for()
    assert page.locator("svg.chart").count() == 0


def test_a_refused_prompt_shows_the_servers_message_and_is_given_back(page) -> None:
    page.check("input[name=mode][value=completion]")
    too_long = " ".join(["window"] * 600)
    page.fill("#prompt", too_long)
    page.click("#send")
    page.wait_for_function("document.getElementById('status').classList.contains('error')")
    assert "this server takes at most 512 (--max-prompt-tokens)" in page.text_content("#status")
    assert page.locator(".completion-block").count() == 0
    assert page.input_value("#prompt") == too_long
