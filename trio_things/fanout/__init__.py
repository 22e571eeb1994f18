"""Getting changes from Thing code to the clients waiting for them: trio primitives, no sockets."""
