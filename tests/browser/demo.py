"""Reading the demo page's state from a test (through ``window.demo`` and the DOM)."""

from __future__ import annotations

import typing as t

if t.TYPE_CHECKING:
    from playwright.sync_api import BrowserContext
    from playwright.sync_api import Page


def open_page(context: BrowserContext, url: str, errors: list[str] | None = None) -> Page:
    """Open the demo page and wait until it knows whether its origin is allowed.

    :param errors: collects the page's uncaught exceptions and console errors.
    """
    page = context.new_page()
    if errors is not None:
        page.on("pageerror", lambda error: errors.append(f"pageerror: {error}"))
        page.on(
            "console",
            lambda message: (
                errors.append(f"console: {message.text}") if message.type == "error" else None
            ),
        )
    page.goto(url)
    page.wait_for_function("() => document.body.dataset.verdict !== 'pending'")
    return page


def wait_for_state(page: Page, connection: str, state: str) -> None:
    """Wait until a connection row shows ``state``: ``page`` (the page's one stream, carrying
    the ticker and the chat, shared by the origin's tabs) or ``feed`` (the ``fetch()`` reader)."""
    page.wait_for_function(
        "([key, state]) => document.querySelector(`#conn-${key} .badge`).dataset.state === state",
        arg=[connection, state],
    )


def wait_for_chat(page: Page) -> None:
    """Wait until the page's stream is open and its chat is ready (signed in, room loaded)."""
    wait_for_state(page, "page", "open")
    page.wait_for_function("() => !document.getElementById('chat-input').disabled")


def states(page: Page, connection: str) -> list[str]:
    """Every state a connection went through, in order."""
    return t.cast("list[str]", page.evaluate(f"demo.states.{connection}.map(s => s.state)"))


def received(page: Page, stream: str) -> list[str]:
    """The ids of the events a stream (``ticks``, ``chat``) delivered, as they arrived."""
    return t.cast("list[str]", page.evaluate(f"demo.received.{stream}"))


def wait_for_count(page: Page, stream: str, count: int) -> None:
    page.wait_for_function(
        "([stream, count]) => demo.received[stream].length >= count", arg=[stream, count]
    )


def send(page: Page, text: str) -> dict[str, t.Any]:
    """Post a chat message from the page (credentialed, cross-origin); the server's answer."""
    return t.cast("dict[str, t.Any]", page.evaluate("text => demo.send(text)", text))


def messages(page: Page) -> list[dict[str, t.Any]]:
    """The chat messages shown, as ``{"id", "user", "text"}``."""
    return t.cast(
        "list[dict[str, t.Any]]",
        page.evaluate(
            """() => [...document.querySelectorAll('#messages .message')].map(m => ({
                id: m.dataset.id,
                user: m.querySelector('.who').textContent,
                text: m.querySelector('p').textContent,
                mine: m.classList.contains('mine'),
            }))"""
        ),
    )


def chat_part(stream_id: str) -> str:
    """The chat channel's own id inside a ``/page-events`` id (``<ticker id>~<chat id>``)."""
    return stream_id.split("~")[1]


def consecutive(ids: list[str]) -> bool:
    """Whether tick ids go up by exactly one each time: none missing, none twice."""
    numbers = [int(i) for i in ids]
    return numbers == list(range(numbers[0], numbers[0] + len(numbers)))
