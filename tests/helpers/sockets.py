"""Real sockets in tests: a peer that crashes instead of closing."""

from __future__ import annotations

import socket
import struct

import trio


def reset_on_close(stream: trio.SocketStream) -> None:
    """Make closing ``stream`` send an RST instead of a FIN: a peer that crashed."""
    stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
