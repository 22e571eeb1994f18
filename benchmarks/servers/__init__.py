"""The servers under test, each a script run in a process of its own.

* :mod:`~benchmarks.servers.trio_things_server`: trio-things, serving
  :class:`benchmarks.things.BenchThing`;
* :mod:`~benchmarks.servers.naive_trio`: a trio-websocket server that loops
  ``await ws.send_message(msg)`` over its clients;
* :mod:`~benchmarks.servers.asyncio_broadcast`: the asyncio ``websockets`` library's
  ``broadcast()``.

Every one prints its port, then obeys the control protocol of
:mod:`benchmarks.servers.control` on its stdin and stdout.
"""
