"""The API origin (``http://localhost:5000``): streams, the session, and the chat.

Every route a browser page calls is policed by flask-ssecors: ``@sse.stream()`` for the
streams, ``@sse.cors()`` for the ordinary endpoints. A request from an origin that is not on
``SSECORS_ALLOWED_ORIGINS`` is answered ``403`` before any of these views runs.

The session cookie names the user. The page's stream (``withCredentials: true``) or ``GET /me``
(a credentialed fetch), whichever comes first, gives a new visitor one; the page then sends it
with its chat POSTs (``credentials: "include"``): the server, not the page, decides who wrote a
message, and who is in a room. A room's streams declare their user as a member of the room
(``sse.subscribe(..., member=<the user's name>)``): every tab of a browser is one user and one
member, and the room's join and leave events (``SSECORS_PRESENCE_EVENTS``, set in
:mod:`example_app.app`) tell the page when a user's first stream opens and its last one closes.
"""

from __future__ import annotations

import datetime
import hmac
import random
import secrets
import typing as t

from flask import abort
from flask import Blueprint
from flask import current_app
from flask import jsonify
from flask import request
from flask import Response
from flask import session
from werkzeug.exceptions import HTTPException

from flask_ssecors import Event
from flask_ssecors import last_event_id
from flask_ssecors.exceptions import BrokerUnavailable

from .extensions import sse
from .state import demo_state
from .state import Room
from .streams import TICKER_CHANNEL

api = Blueprint("api", __name__)

#: Longest chat message, in characters.
MAX_MESSAGE_LENGTH = 500
#: The event type of a chat message.
MESSAGE_EVENT = "message"
#: Random names tried for a new visitor before one already in a room is accepted.
_NAME_DRAWS = 20

_ADJECTIVES = (
    "amber", "brisk", "calm", "dapper", "eager", "fuzzy", "gentle", "hazel", "jolly", "keen",
    "lucky", "mellow", "nimble", "plucky", "quiet", "rosy", "sunny", "tidy", "witty", "zesty",
)  # fmt: skip
_ANIMALS = (
    "badger", "crane", "dingo", "egret", "ferret", "gecko", "heron", "ibis", "koala", "lemur",
    "marten", "newt", "otter", "puffin", "quokka", "raven", "stoat", "tapir", "vole", "wombat",
)  # fmt: skip


@api.errorhandler(HTTPException)
def _json_error(error: HTTPException) -> tuple[Response, int]:
    """Errors of the API are JSON, so that the page can show them."""
    return jsonify(error=error.name, message=error.description), error.code or 500


def describe() -> dict[str, t.Any]:
    """What the API origin serves: its answer to ``GET /`` (for people who open it, or curl)."""
    config = current_app.config
    return {
        "service": "flask-ssecors example API",
        "page": f"{config['EXAMPLE_PAGE_ORIGIN']}/",
        "streams": [
            "/page-events",
            "/ticks",
            "/feed",
            *(f"/rooms/{r}/events" for r in demo_state().rooms),
        ],
    }


# -- streams -------------------------------------------------------------------------------


@api.get("/ticks")
@sse.stream()
def ticks() -> t.Any:
    """The public ticker. A reconnecting browser resumes after its ``Last-Event-ID``."""
    state = demo_state()
    resume = last_event_id()
    state.observer.view("ticks", last_event_id=resume)
    return state.streams.ticks(state.ticker, resume)


@api.get("/page-events")
@sse.stream()
def page_events() -> t.Any:
    """One stream per page: the ticker and a room's chat, as ``ticker/tick``,
    ``room:<room>/message``... (several channels on one stream). The page reads it through the
    tab-shared helper, so every tab of an origin shares this one connection.

    The stream declares the session's user as a member of both channels; a new visitor is
    given a user here (the response sets the session cookie), so the page, which signs in with
    ``GET /me`` once its stream is open, is the user its stream declared. With
    ``SSECORS_PRESENCE_EVENTS = ["room:*"]`` the user's first stream on the room publishes
    ``room:<room>/ssecors-join`` and its last one ``room:<room>/ssecors-leave``; the ticker
    counts its members silently.
    """
    state = demo_state()
    found = _room(request.args.get("room", "lobby"))
    user = _user_or_new()
    state.feed.start(current_app._get_current_object())  # type: ignore[attr-defined]
    state.observer.view(
        "page_events",
        room=found.name,
        user=user["name"],
        last_event_id=last_event_id(),
    )
    return state.streams.track(
        sse.subscribe(TICKER_CHANNEL, f"room:{found.name}", member=user["name"])
    )


@api.get("/ticks/recent")
@sse.cors()
def recent_ticks() -> t.Any:
    """The last ticks, for a page's chart when it opens (live ones follow on its stream)."""
    return {"ticks": demo_state().ticker.recent()}


@api.get("/feed")
@sse.stream()
def feed() -> t.Any:
    """The ticker for token holders, read with ``fetch()`` (an EventSource cannot send headers).

    The page sends ``Authorization`` and ``Last-Event-ID`` itself, so the browser asks first
    with a preflight, which flask-ssecors answers: allowed only if ``SSECORS_ALLOWED_HEADERS``
    lists ``authorization``.
    """
    state = demo_state()
    expected = f"Bearer {current_app.config['EXAMPLE_FEED_TOKEN']}"
    given = request.headers.get("Authorization", "")
    authorized = hmac.compare_digest(given.encode(), expected.encode())
    resume = last_event_id()
    state.observer.view("feed", authorized=authorized, last_event_id=resume)
    if not authorized:
        response = jsonify(error="Unauthorized", message="send Authorization: Bearer <token>")
        response.status_code = 401
        response.headers["WWW-Authenticate"] = 'Bearer realm="feed"'
        return response
    return state.streams.ticks(state.ticker, resume)


@api.get("/rooms/<room>/events")
@sse.stream()
def room_events(room: str) -> t.Any:
    """A chat room's messages: what came after ``Last-Event-ID`` first, then live ones.

    The session's user is a member of the room while the stream is open (``ssecors-join`` and
    ``ssecors-leave``, unprefixed on this one-channel stream).
    """
    state = demo_state()
    found = _room(room)
    user = _signed_in_user()
    resume = last_event_id()
    state.observer.view("room_events", room=found.name, user=user["name"], last_event_id=resume)
    return state.streams.track(sse.subscribe(f"room:{found.name}", member=user["name"]))


# -- the session and the chat -----------------------------------------------------------------


@api.get("/me")
@sse.cors()
def me() -> t.Any:
    """Who the session cookie says the caller is; a new visitor is given a name."""
    user = _user_or_new()
    demo_state().observer.view("me", user=user["name"])
    return user


@api.get("/rooms/<room>")
@sse.cors()
def room_state(room: str) -> t.Any:
    """A room's topic, recent messages and members, and the cursor to open its stream from.

    ``presence`` is :meth:`~flask_ssecors.SSECors.presence` of the room's channel, as a dict:
    ``members`` (sorted names), ``member_count``, ``connections`` and ``counts_only``. The page
    reads it once its stream is open, then applies the join and leave events that follow.
    """
    found = _room(room)
    user = _signed_in_user()
    demo_state().observer.view("room_state", room=found.name, user=user["name"])
    return {
        "room": found.name,
        "topic": found.topic,
        "messages": list(found.recent),
        "cursor": found.cursor,
        "presence": sse.presence(f"room:{found.name}").as_dict(),
    }


@api.post("/rooms/<room>/messages")
@sse.cors()
def post_message(room: str) -> t.Any:
    """Post ``{"text": ...}`` as the session's user; every open tab receives it."""
    state = demo_state()
    found = _room(room)
    user = _signed_in_user()
    state.observer.view("post_message", room=found.name, user=user["name"])
    if not request.is_json:
        abort(415, 'send the message as JSON: {"text": "..."}')
    body = request.get_json(silent=True)
    text = body.get("text") if isinstance(body, dict) else None
    if not isinstance(text, str) or not text.strip():
        abort(400, 'the body must be a JSON object with a non-empty "text" string')
    text = text.strip()
    if len(text) > MAX_MESSAGE_LENGTH:
        abort(400, f"a message has at most {MAX_MESSAGE_LENGTH} characters")
    message = {
        "uid": user["id"],
        "user": user["name"],
        "hue": user["hue"],
        "text": text,
        "at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    event_id = sse.publish(f"room:{found.name}", Event(message, event=MESSAGE_EVENT))
    remember(found, event_id, message)
    state.observer.view("published", room=found.name, id=event_id)
    return {"id": event_id, **message}, 201


def open_room(name: str, topic: str) -> Room:
    """Create a room and publish its topic, its first event (call in an app context).

    Every room has an event from the start, so the cursor the page opens the stream from is
    never empty, and nothing published between loading the page and connecting is missed.
    """
    room = Room(name, topic)
    room.cursor = sse.publish(f"room:{name}", Event({"topic": topic}, event="topic"))
    return room


def remember(room: Room, event_id: str, message: dict[str, t.Any]) -> None:
    """Keep a published message for pages that open later."""
    room.recent.append({"id": event_id, **message})
    room.cursor = event_id


# -- helpers -------------------------------------------------------------------------------


def _room(name: str) -> Room:
    found = demo_state().rooms.get(name)
    if found is None:
        abort(404, f"there is no room {name[:40]!r}")
    return found


def _user() -> dict[str, t.Any] | None:
    user = session.get("user")
    if (
        isinstance(user, dict)
        and isinstance(user.get("id"), str)
        and isinstance(user.get("name"), str)
        and isinstance(user.get("hue"), int)
    ):
        return user
    return None


def _user_or_new() -> dict[str, t.Any]:
    """The session's user; a new visitor is given one, kept in the session cookie."""
    user = _user()
    if user is None:
        user = {"id": secrets.token_hex(8), "name": _free_name(), "hue": random.randrange(360)}
        session["user"] = user
    return user


def _free_name() -> str:
    """A random name that nobody in a room has now, when one is found in a few draws.

    Rooms list their members by name, so two users present under one name would show as one.
    """
    try:
        taken = {m for name in demo_state().rooms for m in sse.presence(f"room:{name}").members}
    except BrokerUnavailable:
        taken = set()
    name = ""
    for _ in range(_NAME_DRAWS):
        name = f"{random.choice(_ADJECTIVES)}-{random.choice(_ANIMALS)}"
        if name not in taken:
            break
    return name


def _signed_in_user() -> dict[str, t.Any]:
    user = _user()
    if user is None:
        abort(401, "no session: call GET /me with credentials first (the cookie did not arrive)")
    return user
