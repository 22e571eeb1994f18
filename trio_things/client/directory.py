"""A Thing Description Directory (W3C WoT Discovery): the Things it lists, to consume.

::

    async with trio_things.client.open_directory("http://127.0.0.1:8000/") as directory:
        for listed in directory.things:
            print(listed.title, listed.id)
        counter = await directory.consume("counter")   # a name, an id or a title
        print(await counter.read("count"))

A directory is a Thing whose TD has the type ``ThingDirectory``: its ``things``
property lists the TDs it holds (WoT Discovery's listing, read page by page while a
``next`` link follows), its ``retrieveThing`` action gives one by its id, and its
``links`` (``"rel": "item"``) may point at each Thing's own TD. A trio-things server
serves one at ``/.well-known/wot``; so may any WoT server or directory.

Made by :meth:`Client.explore_directory <trio_things.client.Client.explore_directory>`
and :func:`~trio_things.client.open_directory`; the pure functions here read the
directory's answers and are tested without a server.
"""

from __future__ import annotations

import re
import types
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final

import attrs

from trio_things.client.errors import NotFound, ServerError
from trio_things.client.forms import affordance_forms, base_url, expand_uri_template, http_form
from trio_things.client.things import ConsumedThing
from trio_things.client.values import JsonValue

__all__ = ["Directory", "ListedThing", "is_directory", "item_links", "link_target",
           "listing_members", "retrieve_url"]

#: The ``@type`` of a TD that describes a directory (WoT Discovery section 6.2.1), as
#: its term in the discovery context or its full IRI.
DIRECTORY_TYPES: Final = frozenset({"ThingDirectory",
                                    "https://www.w3.org/2022/wot/discovery#ThingDirectory"})
#: One link of a ``Link`` header (RFC 8288): its target and its parameters.
_LINK: Final = re.compile(r"<([^>]*)>\s*((?:;\s*[^;,]*)*)")
_REL: Final = re.compile(r";\s*rel\s*=\s*(?:\"([^\"]*)\"|([^\s;,]+))", re.IGNORECASE)


@attrs.frozen(kw_only=True)
class ListedThing:
    """One TD a directory lists."""

    id: str | None
    """The TD's ``id``, if it has one."""
    title: str
    """The TD's ``title`` (its id when it has none)."""
    td: Mapping[str, Any] = attrs.field(repr=False)
    """The TD, as listed."""
    url: str
    """Where this TD alone can be fetched: the directory's ``retrieveThing`` URL for its
    id when it offers that, else the URL of the listing's page it came from."""


class Directory:
    """A Thing Description Directory and what it listed when it was read; see the
    module. Usable while the client that made it is open."""

    def __init__(self, *, td: Mapping[str, Any], url: str, things: Sequence[ListedThing],
                 consume_td: Callable[[Mapping[str, Any], str], ConsumedThing],
                 consume_url: Callable[[str], Awaitable[ConsumedThing]]) -> None:
        self._td = td
        self._url = url
        self._things = tuple(things)
        self._links = item_links(td, url)
        self._consume_td = consume_td
        self._consume_url = consume_url

    @property
    def td(self) -> Mapping[str, Any]:
        """The directory's own TD."""
        return self._td

    @property
    def url(self) -> str:
        """Where the directory's TD was fetched from (after redirects)."""
        return self._url

    @property
    def things(self) -> tuple[ListedThing, ...]:
        """The TDs the directory listed, in its order (WoT Discovery's: by id)."""
        return self._things

    @property
    def ids(self) -> tuple[str, ...]:
        """The ids of the TDs listed (those that have one)."""
        return tuple(thing.id for thing in self._things if thing.id is not None)

    @property
    def titles(self) -> tuple[str, ...]:
        """The titles of the TDs listed."""
        return tuple(thing.title for thing in self._things)

    @property
    def names(self) -> Mapping[str, str]:
        """The Things' names and TD URLs, from the directory's ``links`` to each TD
        (``"rel": "item"``): a name is the last segment of the TD's path, the name a
        trio-things or LabThings server serves the Thing under (``counter`` for
        ``http://host/counter/``). Empty when the directory links no TD."""
        return types.MappingProxyType(self._links)

    async def consume(self, thing: str | ListedThing) -> ConsumedThing:
        """The Thing ``thing`` names: a :class:`ListedThing` of :attr:`things`, or the
        ``id`` of a TD listed, else a name of :attr:`names` (its TD is fetched from the
        URL linked, so the Thing's ``url`` is its own), else the ``title`` of exactly one
        TD listed.

        Raises:
            NotFound: nothing has that id, name or title; or several TDs have that title
                (the message lists their ids).
        """
        if isinstance(thing, ListedThing):
            return self._consume_td(thing.td, thing.url)
        for listed in self._things:
            if listed.id == thing:
                return self._consume_td(listed.td, listed.url)
        if thing in self._links:
            return await self._consume_url(self._links[thing])
        titled = [listed for listed in self._things if listed.title == thing]
        if len(titled) == 1:
            return self._consume_td(titled[0].td, titled[0].url)
        if titled:
            raise NotFound(f"{len(titled)} Things of the directory {self._url} are titled "
                           f"{thing!r}; name one by its id: "
                           f"{', '.join(str(listed.id) for listed in titled)}")
        raise NotFound(f"the directory {self._url} lists no Thing with the id, name or "
                       f"title {thing!r}; {self._inventory()}")

    def _inventory(self) -> str:
        if self._links:
            return f"its Things: {', '.join(self._links)}"
        if self._things:
            return "its Things: " + ", ".join(
                f"{listed.title} ({listed.id})" if listed.id else listed.title
                for listed in self._things)
        return "it lists no Thing"

    def __repr__(self) -> str:
        return f"<Directory at {self._url}: {', '.join(self.titles) or 'no Thing'}>"


def is_directory(td: Mapping[str, Any]) -> bool:
    """Whether ``td`` describes a Thing Description Directory (its ``@type``)."""
    types = td.get("@type")
    if isinstance(types, str):
        types = [types]
    return isinstance(types, list) and any(t in DIRECTORY_TYPES for t in types)


def listing_members(body: JsonValue, url: str) -> tuple[list[Mapping[str, Any]], str | None]:
    """The TDs of one page of a directory's listing at ``url``, and the URL of the next
    page its body names (a ``ThingCollection``'s ``next``; an array names none).

    Raises:
        ServerError: the body is neither an array nor a collection of TDs.
    """
    if isinstance(body, list):
        members: JsonValue = body
        next_page = None
    elif isinstance(body, dict) and isinstance(body.get("members"), list):
        members = body["members"]
        following = body.get("next")
        next_page = following if isinstance(following, str) and following else None
    else:
        raise ServerError(f"the directory's listing at {url} is no array of Thing "
                          "Descriptions (nor a ThingCollection)")
    assert isinstance(members, list)
    if not all(isinstance(member, dict) for member in members):
        raise ServerError(f"the directory's listing at {url} holds something that is no "
                          "Thing Description (a JSON object)")
    return [member for member in members if isinstance(member, dict)], next_page


def link_target(header: str, rel: str) -> str | None:
    """The target of the first link of relation ``rel`` in a ``Link`` header's value
    (RFC 8288: ``<url>; rel="next", <url>; rel="canonical"``), or None."""
    for match in _LINK.finditer(header):
        for relation in _REL.finditer(match.group(2)):
            if rel in (relation.group(1) or relation.group(2) or "").lower().split():
                return match.group(1)
    return None


def item_links(td: Mapping[str, Any], url: str) -> dict[str, str]:
    """The TDs a directory's TD links to (``"rel": "item"``, a TD's media type or none),
    by name: the last segment of each TD's path (``counter`` for ``.../counter/``)."""
    links = td.get("links")
    found: dict[str, str] = {}
    for link in links if isinstance(links, list) else ():
        if not (isinstance(link, dict) and link.get("rel") == "item"
                and isinstance(link.get("href"), str)
                and link.get("type", "application/td+json") in ("application/td+json",
                                                               "application/json")):
            continue
        target = urllib.parse.urljoin(base_url(td, url), link["href"])
        path = urllib.parse.urlsplit(target).path.rstrip("/")
        name = urllib.parse.unquote(path.rsplit("/", 1)[-1])
        if name:
            found.setdefault(name, target)
    return found


def retrieve_url(directory: Mapping[str, Any], url: str, thing_id: str) -> str | None:
    """The URL of the directory's ``retrieveThing`` for ``thing_id`` (its HTTP form, the
    id in the ``id`` URI variable), or None when it offers none."""
    forms = affordance_forms(directory, url, "actions", "retrieveThing") or []
    form = http_form(forms, "invokeaction")
    if form is None or form.method_for("invokeaction") != "GET" or "{id}" not in form.href:
        return None
    return expand_uri_template(form.href, {"id": thing_id})
