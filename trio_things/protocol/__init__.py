"""Sans-IO protocol logic: text in, frozen values out. Nothing here touches trio or sockets."""
