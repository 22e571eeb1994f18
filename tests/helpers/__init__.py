"""The test suite's shared helpers: HTTP and WebSocket clients, demo servers, sockets."""
