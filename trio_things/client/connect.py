"""Opening a client: ``connect(url)`` for one Thing, ``open_client()`` for several,
``open_directory(url)`` for the Things a directory lists.

::

    async with trio_things.client.connect("http://127.0.0.1:8000/thermometer/") as thermo:
        print(await thermo.read("temperature"))

    async with trio_things.client.open_client() as client:
        thermo = await client.consume("http://127.0.0.1:8000/thermometer/")
        counter = await client.consume("http://127.0.0.1:8000/counter/")

    async with trio_things.client.open_directory("http://127.0.0.1:8000/") as directory:
        counter = await directory.consume("counter")

    async with trio_things.client.connect("http://127.0.0.1:8000/", thing="counter") as counter:
        ...

Resource handling: the :class:`Client` owns a nursery (the WebSocket sessions' and MQTT
connections' tasks, invocation pollers), its HTTP connections, its WebSockets and its
broker connections; leaving the ``async with`` block closes them all: politely
(WebSocket close 1000, MQTT DISCONNECT) on a normal exit, at once when the block is
cancelled or raised. Several Things consumed through one client share its connections:
one WebSocket per endpoint, one HTTP pool per origin, one MQTT connection per broker.

Error handling: an exception raised inside the block comes out as itself, not wrapped
in an exception group by the client's nursery, so ``except NotFound:`` around the
block works.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final, NoReturn

import trio

from trio_things.client.directory import (
    Directory,
    ListedThing,
    is_directory,
    link_target,
    listing_members,
    retrieve_url,
)
from trio_things.client.errors import (
    ClientError,
    NotAThing,
    NotFound,
    ServerError,
    UnsupportedOperation,
    error_for_problem,
    problem_from_json,
)
from trio_things.client.forms import (
    Kind,
    affordance_forms,
    base_url,
    expand_uri_template,
    http_form,
)
from trio_things.client.http import HttpClient
from trio_things.client.mqtt import MqttClient
from trio_things.client.options import ClientOptions
from trio_things.client.session import Session
from trio_things.client.streams import Endpoint, OpenStream, open_tcp_stream
from trio_things.client.things import ConsumedThing

__all__ = ["Client", "connect", "open_client", "open_directory"]

#: Redirects followed when fetching a TD (RFC 9110 section 15.4), at most.
MAX_REDIRECTS: Final = 5
#: Pages of a directory's listing read at most (a ``next`` link beyond is an error).
MAX_LISTING_PAGES: Final = 1000
#: Where a server's directory is, if it has one (WoT Discovery, RFC 8615).
WELL_KNOWN_DIRECTORY: Final = "/.well-known/wot"
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})


class Client:
    """Consumes Things; see the module. Made by :func:`open_client`."""

    def __init__(self, *, nursery: trio.Nursery, open_stream: OpenStream,
                 options: ClientOptions, token: str | None, websocket: bool) -> None:
        self.options = options
        self._nursery = nursery
        self._open_stream = open_stream
        self._token = token
        self._trusted: set[tuple[str, int]] = set()
        self._http = HttpClient(open_stream, timeout=options.timeout,
                                headers_for=self._credentials,
                                max_response_bytes=options.max_response_bytes)
        self._websocket = websocket
        self._sessions: dict[str, Session] = {}
        self._mqtt = MqttClient(nursery=nursery, options=options)

    async def fetch_td(self, url: str) -> tuple[dict[str, Any], str]:
        """The Thing Description at ``url`` and the URL it finally came from.

        Raises:
            Unreachable, ConnectionLost, Timeout: the server could not be asked.
            NotFound: nothing there (404).
            NotAThing: a server's root (listing its Things) or one of a Thing's
                affordances is there, not a TD; the message names the URL to use.
            ServerError: any other answer that is no TD.
        """
        # The token goes where the caller sent us, not wherever a TD or a redirect
        # points: a TD's forms may name any host.
        endpoint = Endpoint.from_url(url)
        self._trusted.add((endpoint.host, endpoint.port))
        for _ in range(MAX_REDIRECTS + 1):
            response = await self._http.request("GET", url)
            location = response.headers.get("location")
            if response.status in _REDIRECTS and location:
                url = urllib.parse.urljoin(url, location)
                continue
            if response.status == 404:
                raise NotFound(f"no Thing Description at {url}",
                               problem=problem_from_json(response.json_or_text(), 404))
            if response.status == 405:  # an action's URL, say: it only takes POST
                await self._check_affordance(url)
            if not response.ok:
                raise error_for_problem(problem_from_json(response.json_or_text(),
                                                          response.status),
                                        operation="readtd", what=f"the TD at {url}")
            td = response.json()
            if isinstance(td, dict) and _looks_like_td(td):
                return td, url
            if isinstance(td, dict) and (things := _thing_list(td, url)):
                raise NotAThing(f"{url} is a server, not a Thing; its Things are: "
                                f"{', '.join(things)}", things=tuple(things))
            await self._check_affordance(url)
            kind = type(td).__name__ if not isinstance(td, dict) else "object"
            raise ServerError(f"{url} answered with no Thing Description (a JSON {kind} "
                              f"that is no TD)")
        raise ServerError(f"more than {MAX_REDIRECTS} redirects from {url}")

    async def _check_affordance(self, url: str) -> None:
        """Raise NotAThing naming the Thing if ``url`` is one of its affordances'."""
        if (owner := await self._affordance_at(url)) is not None:
            thing_url, kind, name = owner
            raise NotAThing(f"{url} is {kind} {name!r} of the Thing {thing_url}, not a "
                            f"Thing Description", thing_url=thing_url, kind=kind, name=name)

    async def _affordance_at(self, url: str) -> tuple[str, str, str] | None:
        """``(thing URL, kind, name)`` when ``url`` is where a TD one or two levels up
        has a form of one of its affordances (``/counter/count``,
        ``/counter/actions/increment``); best effort: None on any failure."""
        parts = urllib.parse.urlsplit(url)
        path = parts.path.rstrip("/")
        target = _normalised(url)
        for _ in range(2):
            path = path.rsplit("/", 1)[0]
            if not path:
                return None
            candidate = urllib.parse.urlunsplit((parts.scheme, parts.netloc, path + "/",
                                                 "", ""))
            try:
                response = await self._http.request("GET", candidate)
                td = response.json() if response.ok else None
            except ClientError:
                continue
            if not isinstance(td, dict) or not _looks_like_td(td):
                continue
            for kind in ("properties", "actions", "events"):
                affordances = td.get(kind)
                for name in affordances if isinstance(affordances, dict) else ():
                    forms = affordance_forms(td, candidate, kind, name) or []
                    if any(_normalised(form.href) == target for form in forms):
                        return candidate, _KINDS[kind], name
        return None

    async def consume(self, url: str) -> ConsumedThing:
        """Fetch the TD at ``url`` and return the Thing it describes."""
        td, final_url = await self.fetch_td(url)
        return self._consumed(td, final_url)

    def _consumed(self, td: Mapping[str, Any], url: str) -> ConsumedThing:
        return ConsumedThing(td=td, url=url, http=self._http,
                             session_for=self._session_for if self._websocket else None,
                             spawn=self._spawn, options=self.options, mqtt=self._mqtt)

    async def explore_directory(self, url: str) -> Directory:
        """The Thing Description Directory (WoT Discovery) at ``url``, or at the
        well-known ``/.well-known/wot`` of the same server (so a server's root URL will
        do), with every TD its listing holds (read page by page while a ``next`` link
        follows; see :mod:`trio_things.client.directory`).

        Raises:
            Unreachable, ConnectionLost, Timeout: the server could not be asked.
            NotFound: neither URL is a directory's TD.
            UnsupportedOperation: the directory offers no HTTP form to list its TDs.
            ServerError: the listing is no list of TDs; or any other error answer
                (401 when a token is needed, say).
        """
        td, td_url = await self._directory_td(url)
        forms = affordance_forms(td, td_url, "properties", "things") or []
        form = http_form(forms, "readproperty")
        if form is None:
            raise UnsupportedOperation(f"the directory {td_url} offers no HTTP form to "
                                       "list its Things (its 'things' property)")
        things: list[ListedThing] = []
        page = expand_uri_template(form.href, {})
        seen = {page}
        for _ in range(MAX_LISTING_PAGES):
            response = await self._http.request(form.method_for("readproperty"), page)
            if not response.ok:
                raise error_for_problem(problem_from_json(response.json_or_text(),
                                                          response.status),
                                        operation="readproperty",
                                        what=f"the directory's listing at {page}")
            members, following = listing_members(response.json(), page)
            for member in members:
                identifier = member.get("id")
                identifier = identifier if isinstance(identifier, str) else None
                title = member.get("title")
                things.append(ListedThing(
                    id=identifier, td=member,
                    title=title if isinstance(title, str) else identifier or "(untitled)",
                    url=(identifier and retrieve_url(td, td_url, identifier)) or page))
            following = following or link_target(response.headers.get("link", ""), "next")
            if following is None:
                return Directory(td=td, url=td_url, things=things,
                                 consume_td=self._consumed, consume_url=self.consume)
            page = urllib.parse.urljoin(base_url(td, td_url), following)
            if page in seen:
                raise ServerError(f"the directory's listing at {td_url} links back to "
                                  f"a page it gave already ({page})")
            seen.add(page)
        raise ServerError(f"the directory's listing at {td_url} has more than "
                          f"{MAX_LISTING_PAGES} pages")

    async def _directory_td(self, url: str) -> tuple[dict[str, Any], str]:
        """The directory's TD at ``url``, else at its server's well-known URL."""
        well_known = urllib.parse.urljoin(url, WELL_KNOWN_DIRECTORY)
        try:
            td, td_url = await self.fetch_td(url)
        except (NotFound, ServerError):
            if _normalised(url) == _normalised(well_known):
                raise
            td, td_url = None, url
        if td is not None and is_directory(td):
            return td, td_url
        if _normalised(td_url) != _normalised(well_known):
            try:
                directory, directory_url = await self.fetch_td(well_known)
            except NotFound:
                pass
            else:
                if is_directory(directory):
                    return directory, directory_url
        raise NotFound(f"{url} is no Thing Description Directory, and {well_known} "
                       "is none either")

    def _session_for(self, url: str) -> Session:
        session = self._sessions.get(url)
        if session is None:
            session = self._sessions[url] = Session(
                url, open_stream=self._open_stream, options=self.options,
                nursery=self._nursery, headers=self._credentials(Endpoint.from_url(url)))
        return session

    def _credentials(self, endpoint: Endpoint) -> list[tuple[str, str]]:
        """The ``Authorization`` header, for the hosts of the TDs we were asked for."""
        if self._token and (endpoint.host, endpoint.port) in self._trusted:
            return [("authorization", f"Bearer {self._token}")]
        return []

    def _spawn(self, task: Callable[[], Awaitable[None]]) -> None:
        self._nursery.start_soon(task)

    async def _close_politely(self) -> None:
        for session in self._sessions.values():
            await session.aclose()
        await self._mqtt.aclose()

    async def _close(self) -> None:
        await self._http.aclose()


@asynccontextmanager
async def open_client(*, open_stream: OpenStream = open_tcp_stream,
                      options: ClientOptions | None = None, token: str | None = None,
                      websocket: bool = True) -> AsyncIterator[Client]:
    """A :class:`Client`, open for the ``async with`` block.

    ``open_stream`` opens every connection (tests pass one over memory streams);
    ``token`` is sent as ``Authorization: Bearer`` on every request and handshake to
    the host and port of a TD URL given to :meth:`Client.consume` (never to other hosts
    a TD's forms or a redirect may name);
    ``websocket=False`` uses HTTP forms only (no observe or subscribe then).
    """
    user_error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            client = Client(nursery=nursery, open_stream=open_stream,
                            options=options or ClientOptions(), token=token,
                            websocket=websocket)
            try:
                yield client
            except BaseException as error:
                user_error = error
                raise
            else:
                await client._close_politely()
            finally:
                # Shielded: a checkpoint here, in a nursery about to be cancelled, would
                # raise Cancelled over the block's own exception and lose it.
                with trio.CancelScope(shield=True):
                    await client._close()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        _unwrap(group, user_error)


@asynccontextmanager
async def connect(url: str, *, thing: str | None = None,
                  open_stream: OpenStream = open_tcp_stream,
                  options: ClientOptions | None = None, token: str | None = None,
                  websocket: bool = True) -> AsyncIterator[ConsumedThing]:
    """The Thing whose TD is at ``url``, for the ``async with`` block (a client of its
    own; see :func:`open_client` for the options).

    With ``thing``, ``url`` is a Thing Description Directory's (or its server's root:
    see :meth:`Client.explore_directory`) and ``thing`` names one of the Things it lists,
    by name, id or title (:meth:`Directory.consume
    <trio_things.client.directory.Directory.consume>`)."""
    async with open_client(open_stream=open_stream, options=options, token=token,
                           websocket=websocket) as client:
        if thing is None:
            yield await client.consume(url)
        else:
            directory = await client.explore_directory(url)
            yield await directory.consume(thing)


@asynccontextmanager
async def open_directory(url: str, *, open_stream: OpenStream = open_tcp_stream,
                         options: ClientOptions | None = None, token: str | None = None,
                         websocket: bool = True) -> AsyncIterator[Directory]:
    """The Thing Description Directory at ``url`` (or at its server's
    ``/.well-known/wot``), for the ``async with`` block: its Things, listed, to consume
    through one client of its own (see :func:`open_client` for the options, and
    :meth:`Client.explore_directory`)."""
    async with open_client(open_stream=open_stream, options=options, token=token,
                           websocket=websocket) as client:
        yield await client.explore_directory(url)


#: A JSON object is taken as a TD when it has one of these members (a TD must have the
#: first two); a property's value that happens to be an object has none, usually.
_TD_MEMBERS: Final = ("@context", "title", "properties", "actions", "events", "forms",
                      "securityDefinitions")
_KINDS: Final[dict[Kind, str]] = {
    "properties": "property", "actions": "action", "events": "event"}


def _looks_like_td(body: dict[str, Any]) -> bool:
    return any(member in body for member in _TD_MEMBERS)


def _thing_list(body: dict[str, Any], url: str) -> list[str]:
    """The Thing URLs of a server's root answer (``{"counter": "http://.../counter/"}``,
    as trio-things and LabThings servers answer ``/``), else ``[]``."""
    values = list(body.values())
    if not values or not all(isinstance(v, str) and (v.startswith("/") or urllib.parse.
                                                     urlsplit(v).scheme in ("http", "https"))
                             for v in values):
        return []
    return [urllib.parse.urljoin(url, v) for v in values]


def _normalised(url: str) -> str:
    """A URL compared to a form's href: no query or fragment, no trailing slash."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme.lower(), parts.netloc.lower(),
                                    parts.path.rstrip("/"), "", ""))


def _unwrap(group: BaseExceptionGroup[BaseException], user_error: BaseException | None
            ) -> NoReturn:
    """Raise the one exception the nursery wrapped (the block's own, usually), without
    the group as its context. Cancellations beside it are dropped: they only say the
    nursery was cancelled because of it."""
    inner = [e for e in group.exceptions if not isinstance(e, trio.Cancelled)]
    if len(group.exceptions) == 1:
        _raise(group.exceptions[0])
    if len(inner) == 1:
        _raise(inner[0])
    if not inner and user_error is not None:
        _raise(user_error)
    raise group


def _raise(error: BaseException) -> NoReturn:
    context = error.__context__
    try:
        raise error
    finally:
        error.__context__ = context
        del error, context
