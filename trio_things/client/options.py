"""The client's knobs: how long to wait, how often to poll, how to reconnect, which
binding to prefer."""

from __future__ import annotations

import attrs

from trio_things.client.forms import Binding, bindings

__all__ = ["ClientOptions"]

_positive = attrs.validators.gt(0.0)
_positive_int = attrs.validators.gt(0)


@attrs.frozen(kw_only=True)
class ClientOptions:
    """Timeouts and intervals, in seconds; all must be positive."""

    timeout: float = attrs.field(default=10.0, validator=_positive)
    """The longest any one network wait may take (a connection, an HTTP exchange, a
    WebSocket handshake, the response to one request) before it raises
    :class:`~trio_things.client.errors.Timeout`. It never
    bounds how long an action may run: ``trio.fail_after`` around
    ``Invocation.result()`` does that."""
    poll_interval: float = attrs.field(default=0.25, validator=_positive)
    """How often an invocation's status is queried over HTTP when nothing pushes it:
    modest, since every poll is one request to the server."""
    backoff_initial: float = attrs.field(default=0.1, validator=_positive)
    """The first wait before reconnecting after a lost connection; it doubles on every
    failed attempt, up to ``backoff_max``, each wait randomised to 50-100 % of it so
    that many clients of a restarted server do not all come back at once."""
    backoff_max: float = attrs.field(default=5.0, validator=_positive)
    """The longest wait between two reconnection attempts."""
    reconnect_for: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(_positive))
    """How long to keep trying to reach a server after losing it before giving up:
    observations then raise ``ConnectionLost``, and an invocation being followed
    raises ``InvocationLost`` (a ``ConnectionLost`` naming the invocation's URL) from
    ``updates()`` and ``result()``. ``None``: for as long as the client is open. Either
    way a warning is logged (``trio_things.client``) when the server is lost.
    ``trio-things`` gives up after 30 s (``--reconnect-for``)."""
    keepalive_interval: float = attrs.field(default=20.0, validator=_positive)
    """Seconds between two pings on an open WebSocket. A server that does not answer
    one within ``timeout`` is taken as gone and reconnected to: without pings a peer
    that vanished without closing (a cable pulled) would never be noticed. It is also
    the MQTT keepalive (rounded up to whole seconds): a broker silent for one and a
    half of it is taken as gone."""
    event_buffer: int = attrs.field(default=1024, validator=_positive_int)
    """Events (and property values) one observation holds for a slow reader. Property
    values are coalesced beyond it (the latest wins); events are never dropped: the
    subscription ends with ``FellBehind`` instead."""
    prefer: tuple[Binding, ...] = attrs.field(default=(), converter=bindings)
    """Bindings to use first, in this order, wherever the TD offers an operation over
    several: ``("mqtt",)`` reads, writes, observes, subscribes and invokes through the
    broker wherever the TD has an MQTT form for it. An operation none of them has a
    form for is performed as without a preference. A single name will do
    (``prefer="mqtt"``); the names are ``"http"``, ``"websocket"`` and ``"mqtt"``
    (:data:`~trio_things.client.forms.BINDINGS`), anything else is a ``ValueError``.

    Default ``()``: the TD's order, as generic WoT consumers choose (the first form
    whose binding the client speaks), except that between HTTP and WebSocket reads and
    writes go over HTTP and invocations over WebSocket (``actions_over``), as they did
    before MQTT. trio-things lists its MQTT forms last, so its Things are used over
    MQTT only when asked, or when the TD has no other form for the operation."""
    actions_over: str = attrs.field(default="websocket",
                                    validator=attrs.validators.in_(("websocket", "http")))
    """Which form ``invoke`` prefers when the TD offers both HTTP and WebSocket (and
    ``prefer`` does not decide). ``"websocket"``: the status is pushed as it changes.
    ``"http"``: the invocation is polled, and brings the action's log (its progress)
    where the server keeps one, as LabThings servers do; ``trio-things invoke`` uses it
    to show progress."""
    mqtt_username: str | None = None
    """The user name the client gives MQTT brokers (with ``mqtt_password``); None:
    anonymous. The same for every broker a client reaches."""
    mqtt_password: str | None = attrs.field(default=None, repr=False)
    """The broker password. ``trio-things`` reads it from ``TRIO_THINGS_MQTT_PASSWORD``,
    as the server does, rather than from its command line."""
    max_response_bytes: int = attrs.field(default=64 * 1024 * 1024, validator=_positive_int)
    """The largest HTTP response body accepted; a larger one is a ``ServerError``."""
