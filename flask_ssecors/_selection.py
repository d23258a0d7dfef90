"""Named CORS policies, and a selector that picks one per request.

Some apps serve several tenants, each with its own allowed origins, from the same routes.
Declare each policy once, at setup, with the same options as the app's policy::

    sse.policy("acme", origins=["https://acme.example.com"], allow_credentials=True)
    sse.policy("globex", origins=["https://app.globex.test"])

    @sse.policy_selector
    def tenant_policy() -> str | None:
        return TENANT_POLICIES.get(request.host)   # a name, or None for the view's own policy

A named policy starts from the app's settings and overrides what it is given (``origins`` is
required); it is validated like the app's policy when declared (or at ``init_app``), and every
problem is raised together as :class:`~flask_ssecors.exceptions.ConfigError`.

The selector runs once per policed request, in the request context, and returns a declared
name, or None for the view's own policy. It can only choose among validated policies: a value
that is not a declared name (an origin string, a typo, a policy object) is a programming error,
raised as :class:`~flask_ssecors.exceptions.ConfigError` in debug and testing; in production it
is logged and the request is refused with ``403``, as is a request whose selector raised (fail
closed).

Caching: the answer of an ``@sse.cors`` view then depends on what the selector reads (the host,
a cookie, a header) besides ``Origin``; add those to ``Vary`` (``response.vary.add("Cookie")``)
if shared caches sit in front. Streams are never cached.

.. versionadded:: 0.1
"""

from __future__ import annotations

import re
import typing as t

from ._config import check_overrides
from ._config import CORS_KWARGS
from ._config import merge_overrides
from ._log import get_logger
from ._logsafe import escape
from ._policy import Decision
from ._policy import Reason
from .exceptions import ConfigError
from .exceptions import ConfigIssue

if t.TYPE_CHECKING:
    import collections.abc as cabc

    from ._config import Settings

logger = get_logger(__name__)

_NAME: t.Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}")

Selector = t.Callable[[], "str | None"]


def check_policy_options(name: object, options: dict[str, object]) -> dict[str, object]:
    """Validate a named policy's name and options on their own (as a decorator's overrides).

    :raises ConfigError: listing every problem found.
    """
    issues: list[ConfigIssue] = []
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        issues.append(
            ConfigIssue(
                "name",
                name,
                "a policy name is 1 to 64 letters, digits and _.:- (not starting with one of "
                ".:-), such as 'partners'.",
            )
        )
    if "origins" not in options:
        issues.append(
            ConfigIssue("origins", None, "is required: list the origins this policy allows.")
        )
    try:
        checked = check_overrides(options, allowed=CORS_KWARGS)
    except ConfigError as error:
        issues.extend(error.issues)
        checked = {}
    if issues:
        raise ConfigError(issues, where=f"flask-ssecors policy {name!r}")
    return checked


def merge_policy_options(
    settings: Settings, name: str, checked: cabc.Mapping[str, object]
) -> tuple[Settings | None, list[ConfigIssue]]:
    """Apply a named policy's options to an app's settings; the issues when refused."""
    try:
        return merge_overrides(settings, checked), []
    except ConfigError as error:
        return None, [
            ConfigIssue(f"policy {name!r}: {issue.key}", issue.value, issue.reason)
            for issue in error.issues
        ]


class _Refuse:
    """Stands in for a policy when selection failed: every request is refused."""

    def decide(
        self,
        *,
        method: str,
        origin: str | None,
        request_method: str | None = None,
        **_: object,
    ) -> Decision:
        preflight = method == "OPTIONS" and origin is not None and request_method is not None
        return Decision(False, preflight, Reason.SELECTION_FAILED)


REFUSE: t.Final = _Refuse()


class Decider(t.Protocol):
    """What :func:`choose` returns: a compiled policy, or the refusal stand-in."""

    def decide(
        self,
        *,
        method: str,
        origin: str | None,
        own_origin: str | cabc.Callable[[], str],
        request_method: str | None = ...,
        request_headers: str | None = ...,
        private_network: bool = ...,
        route_methods: t.Collection[str] | None = ...,
    ) -> Decision: ...


def choose(
    selector: Selector,
    policies: cabc.Mapping[str, Decider],
    default: Decider,
    *,
    strict: bool,
) -> Decider:
    """Run ``selector`` for the current request and return the policy it names.

    :param selector: the app's selector.
    :param policies: the app's compiled named policies.
    :param default: the view's own policy, used when the selector returns None.
    :param strict: raise a selector's mistakes (debug and testing) instead of refusing.
    """
    try:
        name = selector()
    except Exception:
        if strict:
            raise
        logger.exception("the policy selector raised; refusing the request")
        return REFUSE
    if name is None:
        return default
    policy = policies.get(name) if isinstance(name, str) else None
    if policy is not None:
        return policy
    problem = ConfigIssue(
        "policy_selector",
        name if isinstance(name, str) else type(name).__name__,
        "returned something that is not the name of a policy declared with sse.policy(); "
        "a selector returns a declared name, or None for the view's own policy.",
    )
    if strict:
        raise ConfigError([problem], where="flask-ssecors policy selector")
    logger.error(
        "refused the request: the policy selector returned %s, which is not a declared policy",
        # A name is chosen by the app, but may come from request data: log it escaped.
        escape(problem.value, 64),
    )
    return REFUSE
