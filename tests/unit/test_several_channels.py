"""Several channels on one stream, through the extension (the brokers' side is in the broker
contract, tests/unit/test_brokers.py)."""

from __future__ import annotations

import typing as t

from flask import Flask
from flask import request

from flask_ssecors import Event
from flask_ssecors import SSECors
from tests.conftest import ALLOWED
from tests.conftest import stream_client

ORIGIN = {"Origin": ALLOWED}


def build(make_app: t.Callable[..., Flask]) -> tuple[Flask, SSECors]:
    app = make_app()
    sse = SSECors(app)

    @app.get("/page")
    @sse.stream()
    def page() -> t.Any:
        names = request.args.get("channels", "ticker,chat:lobby").split(",")
        return sse.subscribe(*names)

    @app.get("/secure")
    @sse.stream(require_token=True)
    def secure() -> t.Any:
        return sse.subscribe("mine", "theirs")

    @app.get("/token")
    @sse.cors()
    def token() -> t.Any:
        return {"token": sse.issue_token("u1", channels=["mine"])}

    return app, sse


def test_a_page_reads_two_channels_on_one_stream(make_app: t.Callable[..., Flask]) -> None:
    app, sse = build(make_app)
    with stream_client(app).open_stream("/page", headers=ORIGIN) as reader:
        with app.app_context():
            sse.publish("ticker", Event({"n": 1}, event="tick"))
            sse.publish("chat:lobby", Event({"text": "hi"}))
        first, second = reader.events(2)
    assert (first.event, first.data) == ("ticker/tick", '{"n":1}')
    assert (second.event, second.data) == ("chat:lobby/message", '{"text":"hi"}')
    assert second.id is not None and second.id.count("~") == 1
    with app.app_context():
        assert sse.subscriber_count() == 0


def test_a_reconnect_resumes_both_channels(make_app: t.Callable[..., Flask]) -> None:
    app, sse = build(make_app)
    client = stream_client(app)
    with client.open_stream("/page", headers=ORIGIN) as reader:
        with app.app_context():
            sse.publish("ticker", Event("t1"))
        (event,) = reader.events(1)
    held = event.id
    assert held is not None
    with app.app_context():
        sse.publish("ticker", Event("t2"))
        sse.publish("chat:lobby", Event("c1"))
    headers = {**ORIGIN, "Last-Event-ID": held}
    with client.open_stream("/page", headers=headers) as reader:
        assert sorted((e.event, e.data) for e in reader.events(2)) == [
            ("chat:lobby/message", "c1"),
            ("ticker/message", "t2"),
        ]


def test_nine_channels_or_a_bad_name_answer_400(make_app: t.Callable[..., Flask]) -> None:
    app, _ = build(make_app)
    client = app.test_client()
    nine = ",".join(f"c{n}" for n in range(9))
    for names in (nine, "ok,\x00bad"):
        response = client.get("/page", query_string={"channels": names}, headers=ORIGIN)
        assert response.status_code == 400
        assert b"invalid channel name" in response.data


def test_every_channel_must_be_granted_by_the_token(make_app: t.Callable[..., Flask]) -> None:
    app, sse = build(make_app)
    client = app.test_client()
    token = client.get("/token", headers=ORIGIN).get_json()["token"]
    response = client.get("/secure", query_string={"token": token}, headers=ORIGIN)
    assert response.status_code == 403
    with app.app_context():
        assert sse.subscriber_count() == 0
