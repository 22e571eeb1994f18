"""The bindings: how each protocol (HTTP, WebSocket) reaches the runtime, and the TD
forms that announce it."""
