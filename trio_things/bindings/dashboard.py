"""The dashboard: a page in the browser for every Thing the server serves.

The page is static files shipped in the package (``trio_things/dashboard/``: HTML, CSS,
ES modules, and a vendored plotting library), with no build step and nothing fetched
from elsewhere, so it works on a lab network without internet. It builds each Thing's
page from the Thing Description alone and talks to the server as any client does: the
HTTP API for the Things and their TDs, the Web Thing Protocol over ``/ws`` for live
values, events and action status (``docs/dashboard.md``).

========================================== =============================================
``GET /`` asking for ``text/html``         the dashboard (JSON clients get the Things)
``GET /dashboard/``, ``/dashboard/...``    the dashboard; the page routes by its path
``GET /dashboard/static/{file}``           its files
``GET /dashboard/access``                  ``{"role": "full" | "readonly"}``: what the
                                           caller's token may do (the page disables the
                                           controls of a read-only one)
========================================== =============================================

The page and its files are served without a token: they hold no data, and the page
must load to ask for one. Every response carries a Content-Security-Policy that allows
scripts, styles and connections to this server only and no inline script, so an XSS
in a value shown (a Thing's description, an event's data) cannot run.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import mimetypes
from typing import Final

import attrs

from trio_things.protocol.accept import names as accept_names
from trio_things.transport.http import HttpRequest, HttpResponse

__all__ = ["ACCESS_PATH", "CONTENT_SECURITY_POLICY", "PREFIX", "dashboard_response"]

#: Where the dashboard lives; a Thing may not be named ``dashboard``.
PREFIX: Final = "/dashboard/"
#: The caller's role, as JSON.
ACCESS_PATH: Final = "/dashboard/access"
_STATIC: Final = "/dashboard/static/"

#: Scripts, styles, images and connections (HTTP and WebSocket) from this origin only;
#: no inline script or style, no plug-ins, no framing by other sites.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'")
_HEADERS: Final = (
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
)
_TYPES: Final = {".js": "text/javascript; charset=utf-8", ".mjs": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".html": "text/html; charset=utf-8",
                 ".svg": "image/svg+xml", ".txt": "text/plain; charset=utf-8",
                 ".json": "application/json"}


@attrs.frozen
class _File:
    body: bytes
    content_type: str
    etag: str


_cache: dict[str, _File | None] = {}


def dashboard_response(request: HttpRequest) -> HttpResponse | None:
    """The dashboard's answer to ``request``, or None when it is not the dashboard's
    (the HTTP API answers it). :data:`ACCESS_PATH` is left to the API too: it needs the
    caller's token."""
    if request.method not in ("GET", "HEAD"):
        return None
    path = request.path
    if path == "/" and accept_names(request.header("accept"), "text/html"):
        return _page(request)
    if not (path.startswith(PREFIX) or path == PREFIX.rstrip("/")) or path == ACCESS_PATH:
        return None
    if path.startswith(_STATIC):
        return _file(request, path.removeprefix(_STATIC))
    return _page(request)


def _page(request: HttpRequest) -> HttpResponse:
    page = _load("index.html")
    assert page is not None, "trio_things/dashboard/index.html is missing from the package"
    return _answer(request, page, cache="no-cache")


def _file(request: HttpRequest, name: str) -> HttpResponse:
    if not name or ".." in name.split("/") or name.startswith("/") or "\\" in name:
        return _not_found()
    found = _load(name)
    if found is None:
        return _not_found()
    return _answer(request, found, cache="no-cache")


def _answer(request: HttpRequest, found: _File, *, cache: str) -> HttpResponse:
    headers = (*_HEADERS, ("etag", found.etag), ("cache-control", cache))
    if request.header("if-none-match") == found.etag:
        return HttpResponse(status=304, headers=headers)
    return HttpResponse(status=200, body=found.body,
                        headers=(("content-type", found.content_type), *headers))


def _not_found() -> HttpResponse:
    return HttpResponse(status=404, body=b"not found",
                        headers=(("content-type", "text/plain; charset=utf-8"), *_HEADERS))


def _load(name: str) -> _File | None:
    """A file of the package's ``dashboard`` folder, read once and kept (they are a few
    tens of KiB, and the package does not change while the server runs)."""
    if name not in _cache:
        resource = importlib.resources.files("trio_things").joinpath("dashboard", *name.split("/"))
        if not resource.is_file():
            _cache[name] = None
        else:
            body = resource.read_bytes()
            suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
            content_type = _TYPES.get(suffix) or mimetypes.guess_type(name)[0] or (
                "application/octet-stream")
            digest = hashlib.blake2b(body, digest_size=12).hexdigest()
            _cache[name] = _File(body=body, content_type=content_type, etag=f'"{digest}"')
    return _cache[name]
