"""The blocking client (``ThingClient``) against the demo server over loopback.

The tests are plain functions (no Trio run in the test's thread, as in a script): the
server runs ``trio.run`` in a thread of its own, on 127.0.0.1 and a free port, and each
client starts its own Trio thread. No sleeps: every wait has a timeout, so a broken
test fails fast.
"""

from __future__ import annotations

import _thread
import asyncio
import inspect
import json
import queue
import signal
import socket
import threading
import urllib.request
import weakref
from collections.abc import Iterator

import attrs
import pytest
import trio

import trio_things.client as ttc
from tests.helpers.servers import serve_on_loopback
from trio_things.client import State, ThingClient
from trio_things.config import ServerConfig
from trio_things.demo import Counter, Reading, Thermometer
from trio_things.errors import LocalProtocolError
from trio_things.server import ThingServer

#: Quick polls, and a bound on every network wait well under the test's patience.
FAST = ttc.ClientOptions(timeout=5.0, poll_interval=0.05, backoff_initial=0.01,
                         backoff_max=0.1)
#: The longest any one wait of a test may take.
PATIENCE = 10.0


@attrs.define
class RunningServer:
    """The demo server, running in a thread."""

    port: int
    token: trio.lowlevel.TrioToken
    stop: trio.Event

    def url(self, thing: str) -> str:
        return f"http://127.0.0.1:{self.port}/{thing}/"

    def invocations(self, thing: str) -> list[dict[str, object]]:
        """The server's invocations of ``thing`` (``queryallactions`` over HTTP)."""
        with urllib.request.urlopen(self.url(thing) + "actions", timeout=PATIENCE) as answer:
            listed = json.load(answer)
        assert isinstance(listed, list)
        return listed


@pytest.fixture
def demo() -> Iterator[RunningServer]:
    """The demo Things (``thermometer``, ``counter``) served on 127.0.0.1 from a thread."""
    started: queue.Queue[RunningServer | BaseException] = queue.Queue()

    async def serve() -> None:
        server = ThingServer(ServerConfig(host="127.0.0.1", port=0))
        server.add_thing("thermometer", Thermometer())
        server.add_thing("counter", Counter())
        stop = trio.Event()
        async with serve_on_loopback(server) as served:
            started.put(RunningServer(port=served.port,
                                      token=trio.lowlevel.current_trio_token(), stop=stop))
            await stop.wait()

    def main() -> None:
        try:
            trio.run(serve)
        except BaseException as error:  # pragma: no cover - reported by the fixture
            started.put(error)
            raise

    thread = threading.Thread(target=main, name="demo server", daemon=True)
    thread.start()
    running = started.get(timeout=PATIENCE)
    if isinstance(running, BaseException):  # pragma: no cover
        raise running
    try:
        yield running
    finally:
        trio.from_thread.run_sync(running.stop.set, trio_token=running.token)
        thread.join(PATIENCE)
        assert not thread.is_alive(), "the demo server did not stop"


def client_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("trio-things client")]


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Every test closes its clients: no client thread outlives it."""
    before = set(client_threads())
    yield
    assert set(client_threads()) <= before


def test_properties_as_attributes(demo: RunningServer) -> None:
    with ThingClient(demo.url("thermometer"), options=FAST) as thermo:
        assert thermo.setpoint == 20.0
        thermo.setpoint = 31.5
        assert thermo.setpoint == 31.5
        assert thermo.read("setpoint", float) == 31.5
        thermo.write("threshold", 120)
        assert thermo.read_all()["threshold"] == 120
        assert isinstance(thermo.temperature, float)


def test_an_action_as_a_method_returns_its_output(demo: RunningServer) -> None:
    with ThingClient.from_url(demo.url("counter"), options=FAST) as counter:
        assert counter.increment(by=5) == 5
        assert counter.increment() == 6
        assert counter.call("increment", by=2, timeout=PATIENCE) == 8
        assert counter.count == 8


def test_an_action_past_its_timeout_is_cancelled_on_the_server(demo: RunningServer) -> None:
    with ThingClient(demo.url("thermometer"), options=FAST) as thermo:
        with pytest.raises(ttc.Timeout, match=r"'ramp' .* did not end within 0.2 s, "
                                              r"so it was cancelled on the server"):
            thermo.ramp(to=150, rate=0.01, timeout=0.2)
    [ramp] = demo.invocations("thermometer")
    assert ramp["status"] == "cancelled"


def test_the_non_blocking_handle(demo: RunningServer) -> None:
    with ThingClient(demo.url("counter"), options=FAST) as counter:
        done = counter.invoke("increment", by=3)
        assert done.result(int, timeout=PATIENCE) == 3
        assert done.status.state is State.COMPLETED
        states = [s.state for s in done.updates(timeout=PATIENCE)]
        assert states == [State.COMPLETED]

        slow = counter.invoke("count_slowly", n=100, delay=1.0)
        assert slow.action == "count_slowly" and slow.id
        with pytest.raises(ttc.Timeout, match="still running"):
            slow.result(timeout=0.05)  # giving up waiting leaves it running
        assert not slow.status.state.ended
        assert slow.cancel() is True
        with pytest.raises(ttc.ActionCancelled):
            slow.result(timeout=PATIENCE)
        assert slow.status.state is State.CANCELLED
        assert slow.cancel() is False
        assert "count_slowly" in repr(slow) and "cancelled" in repr(slow)


def test_observing_a_property_change(demo: RunningServer) -> None:
    with ThingClient(demo.url("thermometer"), options=FAST) as thermo:
        with thermo.observe("setpoint", float, timeout=PATIENCE) as setpoints:
            assert next(setpoints) == 20.0  # the current value first
            thermo.setpoint = 42
            assert next(setpoints) == 42.0
            thermo.setpoint = 43
            change = next(setpoints.changes())
            assert (change.name, change.value) == ("setpoint", 43.0)
            assert change.timestamp
        assert list(setpoints) == []  # closed: the iteration is over

        # A for loop, bounded by a duration: it ends by itself.
        seen = list(thermo.observe("setpoint", duration=0.5))
        assert seen[0] == 43.0 and all(value == 43.0 for value in seen)

        # A timeout on the next value raises, and leaves the observation usable.
        with thermo.observe("setpoint", timeout=0.5) as setpoints:
            assert next(setpoints) == 43.0
            with pytest.raises(ttc.Timeout, match="no news of property 'setpoint'"):
                next(setpoints)
            thermo.setpoint = 44
            assert next(setpoints) == 44.0

        # break out of a for loop without a with block: nothing keeps the observation
        # alive, so it is collected, and ends (without waiting).
        observation = thermo.observe("setpoint")
        collected = weakref.ref(observation)
        for value in observation:
            assert value == 44.0
            break
        del observation
        assert collected() is None

        # break out of a for loop, inside the with block: ended at its end.
        with thermo.observe("setpoint", timeout=PATIENCE) as setpoints:
            for value in setpoints:
                assert value == 44.0
                break


def test_subscribing_to_an_event(demo: RunningServer) -> None:
    with ThingClient(demo.url("thermometer"), options=FAST) as thermo:
        thermo.threshold = 25  # the temperature is about 20
        with thermo.subscribe("overheated", Reading, timeout=PATIENCE) as alarms:
            thermo.setpoint = 60  # the temperature rises through 25
            reading = next(alarms)
        assert isinstance(reading, Reading)
        assert reading.temperature > 25


def test_errors(demo: RunningServer) -> None:
    with ThingClient(demo.url("thermometer"), options=FAST) as thermo:
        with pytest.raises(AttributeError, match=r"Thermometer has no property or action "
                                                 r"'humidity' \(its properties: temperature, "
                                                 r"setpoint, threshold; its actions: ramp"):
            thermo.humidity  # noqa: B018
        with pytest.raises(AttributeError, match="has no property 'humidity' to set"):
            thermo.humidity = 3
        with pytest.raises(AttributeError, match="'overheated' is an event"):
            thermo.overheated  # noqa: B018
        assert not hasattr(thermo, "humidity")
        with pytest.raises(ttc.NotFound, match="no property 'humidity'"):
            thermo.read("humidity")
        with pytest.raises(ttc.NotFound, match="no event 'boiled'"):
            thermo.subscribe("boiled")
        with pytest.raises(ttc.InvalidValue) as info:
            thermo.setpoint = 200
        assert info.value.problem is not None and "maximum" in info.value.problem.detail
        # The traceback goes through the Trio thread's frames to the caller's.
        frames = [(frame.path.name, frame.name) for frame in info.traceback]
        assert ("test_blocking.py", "test_errors") in frames
        assert ("things.py", "write") in frames  # ConsumedThing.write, in the Trio thread
        with pytest.raises(ttc.NotWritable):
            thermo.temperature = 3
        with pytest.raises(ttc.InvalidValue):
            thermo.ramp(to=1000)
        with pytest.raises(AttributeError, match="own attribute"):
            thermo.title = "x"
    with pytest.raises(LocalProtocolError, match="is closed"):
        thermo.read("setpoint")


def test_unreachable_server() -> None:
    with socket.socket() as free:  # a port just freed: nothing listens there
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    with pytest.raises(ttc.Unreachable, match=f"cannot reach 127.0.0.1:{port}"):
        ThingClient(f"http://127.0.0.1:{port}/thermometer/", options=FAST)


def test_dir_and_repr(demo: RunningServer) -> None:
    with ThingClient(demo.url("thermometer"), options=FAST) as thermo:
        assert {"temperature", "setpoint", "threshold", "ramp", "read", "observe"} <= set(
            dir(thermo))
        assert repr(thermo) == (
            f"<ThingClient 'Thermometer' at {demo.url('thermometer')}: properties "
            f"temperature, setpoint, threshold; actions ramp; events overheated>")
        assert str(inspect.signature(thermo.ramp)) == (
            "(*, to: float, rate: float = 1.0, timeout: float | None = None)")
        assert thermo.ramp.__doc__ is not None and "Move the setpoint" in thermo.ramp.__doc__
    assert repr(thermo).startswith(f"<ThingClient 'Thermometer' at {demo.url('thermometer')}"
                                   f" (closed)")


def test_inside_a_running_asyncio_loop(demo: RunningServer) -> None:
    """As in a Jupyter notebook: the client's own thread runs Trio, so it works in a
    coroutine of an asyncio loop (blocking that loop while it waits, or not at all
    through asyncio.to_thread)."""

    async def cell() -> tuple[object, object]:
        with ThingClient(demo.url("counter"), options=FAST) as counter:
            counter.count = 10
            output = counter.increment(by=2)
            in_thread = await asyncio.to_thread(counter.increment, by=3)
            return output, in_thread

    assert asyncio.run(cell()) == (12, 15)


def test_close_ends_the_thread(demo: RunningServer) -> None:
    thermo = ThingClient(demo.url("thermometer"), options=FAST)
    [thread] = client_threads()
    assert thread.daemon
    setpoints = thermo.observe("setpoint", timeout=PATIENCE)
    assert next(setpoints) == 20.0  # an observation open as the client closes
    assert not thermo.closed
    thermo.close()
    assert not thread.is_alive()
    assert thermo.closed
    assert list(setpoints) == []  # it ended with the client
    thermo.close()  # idempotent


def test_a_forgotten_client_is_closed_when_collected(demo: RunningServer) -> None:
    thermo = ThingClient(demo.url("thermometer"), options=FAST)
    [thread] = client_threads()
    del thermo  # never closed: collected, it closes itself (without waiting)
    thread.join(PATIENCE)
    assert not thread.is_alive()


def test_ctrl_c_cancels_the_action_on_the_server(demo: RunningServer) -> None:
    """Ctrl-C while a method call waits for its action: the invocation is cancelled on
    the server, then the KeyboardInterrupt goes on."""
    url = demo.url("thermometer")
    ramping = threading.Event()

    def interrupt_once_ramping() -> None:
        # Another client watches the setpoint: once the ramp moves it, Ctrl-C.
        with ThingClient(url, options=FAST) as watcher:
            for setpoint in watcher.observe("setpoint", timeout=PATIENCE):
                if setpoint != 20.0:
                    break
        ramping.set()
        _thread.interrupt_main()  # as Ctrl-C does, in the main thread (the test's)

    # Ctrl-C as in a terminal: a test run started in the background (a CI job, say) may
    # inherit SIGINT ignored, and then interrupt_main() raises nothing.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    with ThingClient(url, options=FAST) as thermo:
        helper = threading.Thread(target=interrupt_once_ramping)
        helper.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                thermo.ramp(to=150, rate=1.0)
        finally:
            helper.join(PATIENCE)
            signal.signal(signal.SIGINT, previous)
        assert ramping.is_set()
        [ramp] = demo.invocations("thermometer")
        assert ramp["status"] == "cancelled"
        assert thermo.setpoint < 150  # and the client goes on working
