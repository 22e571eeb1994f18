"""A Trio client for any Web Thing, driven by its Thing Description.

::

    import trio_things.client as ttc

    async with ttc.connect("http://127.0.0.1:8000/thermometer/") as thermo:
        await thermo.write("setpoint", 30)
        async with thermo.observe("temperature") as temperatures:
            invocation = await thermo.invoke("ramp", to=30)
            ...

For a script or a Jupyter notebook (no Trio program), ``ThingClient`` is the same
client, blocking, running Trio in a thread of its own::

    with ttc.ThingClient("http://127.0.0.1:8000/thermometer/") as thermo:
        thermo.setpoint = 30
        print(thermo.temperature)

It never imports the server: it speaks to any server whose TD offers forms it
understands (HTTP, the Web Thing Protocol over WebSocket, and MQTT through a broker;
``ClientOptions(prefer="mqtt")`` puts one first). See ``docs/client.md``.

Modules, one job each:

===================== ==========================================================
``connect``           ``connect``, ``open_client``, ``open_directory``, ``Client``:
                      fetch TDs, own it all
``directory``         ``Directory``, ``ListedThing``: a Thing Description Directory's
                      Things (WoT Discovery), to consume
``things``            ``ConsumedThing``: read, write, observe, subscribe, invoke
``actions``           ``Invocation``: an invoked action's live status, result, cancel
``action_status``     ``ActionStatus``, ``State``, ``LogLine``: an invocation's status
``observation``       ``Observation``: an observed property or subscribed event
``blobs``             ``RemoteBlob``: a blob's link, and its bytes downloaded
``blocking``          ``ThingClient``: the same, blocking, for scripts and notebooks
``blocking_handles``  ``BlockingInvocation``, ``BlockingObservation``, ``ActionMethod``,
                      ``BlockingBlob``
``blocking_thread``   the Trio thread that runs the blocking client's calls
``session``           one shared WebSocket per endpoint; routing; reconnection;
                      resuming event subscriptions from their last ``eventID``
``mqtt``              one shared connection per MQTT broker: the MQTT forms
                      (observe, subscribe, read, write, invoke); reconnection
``wtp``               Web Thing Protocol messages, sans-IO
``forms``             choosing forms (and the binding) from a TD, sans-IO
``http``              keep-alive HTTP/1.1 over h11
``streams``           URLs, and the seam that opens connections
``values``            JSON in, typed values out (cattrs)
``options``           timeouts, intervals, the preferred bindings; ``backoff``:
                      reconnection waits
``errors``            the exceptions, each carrying the server's problem details
``command_line``      the ``trio-things td/read/write/invoke/observe/subscribe`` CLI
``command_arguments`` the CLI's arguments and ``KEY=VALUE`` parsing
===================== ==========================================================
"""

from trio_things.client.actions import ActionStatus, Invocation, LogLine, State
from trio_things.client.blobs import RemoteBlob
from trio_things.client.blocking import (
    BlockingBlob,
    BlockingInvocation,
    BlockingObservation,
    ThingClient,
)
from trio_things.client.connect import Client, connect, open_client, open_directory
from trio_things.client.directory import Directory, ListedThing
from trio_things.client.errors import (
    ActionCancelled,
    ActionFailed,
    ClientError,
    ConnectionLost,
    FellBehind,
    InvalidValue,
    InvocationLost,
    NotAThing,
    NotFound,
    NotificationsMissed,
    NotWritable,
    ServerError,
    Timeout,
    Unreachable,
    UnsupportedOperation,
)
from trio_things.client.observation import Change, Observation
from trio_things.client.options import ClientOptions
from trio_things.client.streams import OpenStream, open_tcp_stream
from trio_things.client.things import ConsumedThing
from trio_things.client.values import JsonValue

__all__ = [
    "ActionCancelled",
    "ActionFailed",
    "ActionStatus",
    "BlockingBlob",
    "BlockingInvocation",
    "BlockingObservation",
    "Change",
    "Client",
    "ClientError",
    "ClientOptions",
    "ConnectionLost",
    "ConsumedThing",
    "Directory",
    "FellBehind",
    "InvalidValue",
    "Invocation",
    "InvocationLost",
    "JsonValue",
    "ListedThing",
    "LogLine",
    "NotAThing",
    "NotFound",
    "NotWritable",
    "NotificationsMissed",
    "Observation",
    "OpenStream",
    "RemoteBlob",
    "ServerError",
    "State",
    "ThingClient",
    "Timeout",
    "Unreachable",
    "UnsupportedOperation",
    "connect",
    "open_client",
    "open_directory",
    "open_tcp_stream",
]
