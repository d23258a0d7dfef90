"""Names and sets of the Fetch standard that the policy, the configuration and the auditor share.

Pure leaf module: it imports nothing of the package. One owner for the CORS header names and
for the sets of headers and methods the Fetch standard forbids, so that the policy, the checks
of the configuration, the response headers and the auditor read them from one place.
"""

from __future__ import annotations

import typing as t

#: The prefix of every header of the CORS protocol, lowercase: flask-ssecors owns them.
CORS_HEADER_PREFIX: t.Final = "access-control-"
ACAO: t.Final = "Access-Control-Allow-Origin"
ACAC: t.Final = "Access-Control-Allow-Credentials"
ACAM: t.Final = "Access-Control-Allow-Methods"
ACAH: t.Final = "Access-Control-Allow-Headers"
ACEH: t.Final = "Access-Control-Expose-Headers"
ACMA: t.Final = "Access-Control-Max-Age"
ACAPN: t.Final = "Access-Control-Allow-Private-Network"

#: Request headers a preflight may never ask for (Fetch "forbidden request-header names").
FORBIDDEN_REQUEST_HEADERS: t.Final = frozenset(
    {
        "accept-charset",
        "accept-encoding",
        "access-control-request-headers",
        "access-control-request-method",
        "access-control-request-private-network",
        "connection",
        "content-length",
        "cookie",
        "cookie2",
        "date",
        "dnt",
        "expect",
        "host",
        "keep-alive",
        "origin",
        "referer",
        "set-cookie",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "via",
    }
)
FORBIDDEN_REQUEST_PREFIXES: t.Final = ("proxy-", "sec-")
#: Response headers page script can never read, and names that make no sense to expose.
FORBIDDEN_EXPOSE_HEADERS: t.Final = frozenset(
    {"set-cookie", "set-cookie2", "origin", "access-control-request-method"}
)
FORBIDDEN_METHODS: t.Final = frozenset({"CONNECT", "TRACE", "TRACK"})
#: The characters of an HTTP token (RFC 9110), lowercase: header names, cookie names.
TOKEN_CHARS: t.Final = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz")
