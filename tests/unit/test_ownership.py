"""One owner of the headers: other CORS hooks and stream compression are found at init_app,
and a compressor that acts later is an error, never a silent buffer."""

from __future__ import annotations

import functools
import logging
import typing as t

import flask_cors
import pytest
from flask import Blueprint
from flask import Flask
from flask import Response

from flask_ssecors import SSECors
from flask_ssecors.exceptions import ConfigError
from flask_ssecors.exceptions import HeaderConflictError
from tests.conftest import ALLOWED


def test_flask_cors_on_the_app_is_refused_at_init_app(make_app: t.Callable[..., Flask]) -> None:
    app = make_app()
    flask_cors.CORS(app)
    with pytest.raises(ConfigError) as info:
        SSECors(app)
    [issue] = info.value.issues
    assert issue.key == "after_request"
    assert "flask-cors is registered on this app" in issue.reason
    assert "@sse.cors()" in issue.reason
    assert "ssecors" not in app.extensions


def test_flask_cors_on_a_blueprint_is_refused(make_app: t.Callable[..., Flask]) -> None:
    app = make_app()
    api = Blueprint("api", __name__)
    flask_cors.CORS(api)
    app.register_blueprint(api)
    with pytest.raises(ConfigError, match="blueprint 'api'"):
        SSECors(app)


def _sets_cors(response: Response) -> Response:
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


def _nested(response: Response) -> Response:
    def inner() -> None:
        response.headers.add("access-control-allow-credentials", "true")

    inner()
    return response


def _decorated(hook: t.Callable[[Response], Response]) -> t.Callable[[Response], Response]:
    @functools.wraps(hook)
    def wrapper(response: Response) -> Response:
        return hook(response)

    return wrapper


class _Hooks:
    def method(self, response: Response) -> Response:
        response.headers["Access-Control-Expose-Headers"] = "X-Secret"
        return response


@pytest.mark.parametrize(
    "hook",
    [
        _sets_cors,
        _nested,
        _decorated(_sets_cors),
        functools.partial(_sets_cors),
        _Hooks().method,
    ],
    ids=["function", "nested", "decorated", "partial", "method"],
)
def test_other_hooks_naming_cors_headers_are_warned_about(
    make_app: t.Callable[..., Flask],
    hook: t.Callable[[Response], Response],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A hook whose code names an Access-Control-* header may set one, or only log or delete
    it: a static guess cannot be sure, so init_app warns (naming the hook) instead of refusing
    to start. The hook is caught for sure when it does set one on a policed response."""
    app = make_app()
    app.after_request(hook)
    with caplog.at_level(logging.WARNING, "flask_ssecors"):
        SSECors(app)
    [record] = [r for r in caplog.records if "names an Access-Control-* header" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert "SSECORS_WARN_CORS_HOOKS" in record.getMessage()
    assert "tests.unit.test_ownership." in record.getMessage()  # it names the hook


def test_the_warning_can_be_silenced(
    make_app: t.Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(SSECORS_WARN_CORS_HOOKS=False)
    app.after_request(_sets_cors)
    with caplog.at_level(logging.WARNING, "flask_ssecors"):
        SSECors(app)
    assert not [r for r in caplog.records if "Access-Control-*" in r.getMessage()]


def test_a_hook_that_only_deletes_cors_headers_does_not_stop_the_app(
    make_app: t.Callable[..., Flask],
) -> None:
    """Regression: the bytecode scan used to refuse to start for a hook that merely deletes
    (or logs) an Access-Control-* header; such a hook is harmless on policed routes."""
    app = make_app()

    @app.after_request
    def strip(response: Response) -> Response:
        response.headers.pop("Access-Control-Allow-Origin", None)
        return response

    sse = SSECors(app)

    @app.get("/plain")
    @sse.cors()
    def plain() -> str:
        return "ok"

    response = app.test_client().get("/plain", headers={"Origin": ALLOWED})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED


def test_unrelated_hooks_are_fine(make_app: t.Callable[..., Flask]) -> None:
    app = make_app()

    @app.after_request
    def security_headers(response: Response) -> Response:
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    SSECors(app)


def test_a_hook_registered_after_init_app_is_caught_when_it_acts(
    make_app: t.Callable[..., Flask],
) -> None:
    """init_app cannot see it; the response check raises in testing (and logs in production)."""
    app = make_app()
    sse = SSECors(app)

    @app.post("/messages")
    @sse.cors()
    def messages() -> t.Any:
        return {"ok": True}

    app.after_request(_sets_cors)
    with pytest.raises(HeaderConflictError):
        app.test_client().post("/messages", headers={"Origin": ALLOWED})


def _fake_compress_hook() -> t.Callable[[Response], Response]:
    def after_request(response: Response) -> Response:
        return response

    after_request.__module__ = "flask_compress.flask_compress"
    return after_request


@pytest.mark.parametrize(
    ("mimetypes", "refused"),
    [
        (["text/html", "application/json"], False),
        (["text/html", "text/event-stream"], True),
        (["text/event-stream; charset=utf-8"], True),
        (["*/*"], True),
        ([], False),
    ],
)
def test_flask_compress_compressing_streams_is_refused(
    make_app: t.Callable[..., Flask], mimetypes: list[str], refused: bool
) -> None:
    app = make_app()
    app.config["COMPRESS_MIMETYPES"] = mimetypes
    app.after_request(_fake_compress_hook())
    if refused:
        with pytest.raises(ConfigError) as info:
            SSECors(app)
        assert [issue.key for issue in info.value.issues] == ["COMPRESS_MIMETYPES"]
    else:
        SSECors(app)


def _compress_everything(response: Response) -> Response:
    response.headers["Content-Encoding"] = "gzip"
    return response


@pytest.mark.parametrize("testing", [True, False])
def test_content_encoding_on_a_stream_is_an_error(
    make_app: t.Callable[..., Flask], testing: bool
) -> None:
    """A compressor registered after init_app cannot compress a stream: adding
    Content-Encoding raises (a 500 in production), it never buffers the stream silently."""
    app = make_app(TESTING=testing)
    sse = SSECors(app)

    @app.get("/events")
    @sse.stream()
    def events() -> t.Any:
        return sse.subscribe("c")

    app.after_request(_compress_everything)
    client = app.test_client()
    if testing:
        with pytest.raises(HeaderConflictError, match="Content-Encoding"):
            client.get("/events", headers={"Origin": ALLOWED})
    else:
        response = client.get("/events", headers={"Origin": ALLOWED}, buffered=True)
        assert response.status_code == 500
        assert response.mimetype == "text/html"


def test_ownership_check_can_pass_after_removing_the_hook(
    make_app: t.Callable[..., Flask],
) -> None:
    app = make_app()
    flask_cors.CORS(app)
    with pytest.raises(ConfigError):
        SSECors(app)
    app.after_request_funcs[None].clear()
    SSECors(app)
