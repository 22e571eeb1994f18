"""The servers under test, each a script run in a process of its own.

* :mod:`~benchmarks.servers.trio_things_server`: trio-things, serving
  :class:`benchmarks.things.BenchThing`;
* :mod:`~benchmarks.servers.naive_trio`: a trio-websocket server that loops
  ``await ws.send_message(msg)`` over its clients;
* :mod:`~benchmarks.servers.asyncio_broadcast`: the asyncio ``websockets`` library's
  ``broadcast()``;
* :mod:`~benchmarks.servers.python_limit` and :mod:`~benchmarks.servers.c_limit` (which
  builds and runs ``c_limit.c``): the limits, a bare non-blocking ``send`` of one frame
  per client per update in pure Python and in C, for the full-speed scenario only.

Every one prints its port, then obeys the control protocol of
:mod:`benchmarks.servers.control` on its stdin and stdout.
"""
