"""Each layer imports only the layers before it (``docs/design.md``, "Architecture and layers")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "trio_things"

# Lower number = lower layer; one rank per module (a package's __init__ takes its
# package's rank, "client" ranks the whole client). A module may import modules of
# lower rank only, so modules of the same rank are independent of each other.
LAYERS = {
    "errors": 0,
    "model.docstrings": 9, "model.blob": 9,
    "model": 10, "model.values": 10, "model.schema": 10, "model.invocation": 10,
    "model.affordances": 11,
    "model.declarations": 12, "model.description": 12,
    "model.thing": 13,
    "protocol": 20, "protocol.accept": 20, "protocol.limits": 20, "protocol.rate": 20,
    "protocol.frames": 20, "protocol.credit": 20, "protocol.dns_sd": 20,
    "protocol.keepalive": 20, "protocol.ranges": 21,
    "protocol.problems": 21, "protocol.commands": 21, "protocol.frame_guard": 21,
    "protocol.access": 22, "protocol.invocation_json": 22, "protocol.dialects": 22,
    "protocol.routes": 22, "protocol.directory": 22,
    "protocol.labthings": 23, "protocol.wtp": 23, "protocol.sse": 23,
    "protocol.multipart": 23,
    "protocol.longpoll": 23, "protocol.mqtt": 23,
    "fanout": 30, "fanout.bridge": 30, "fanout.outbox": 30,
    "fanout.observers": 31,
    "fanout.history": 32,
    "fanout.notifier": 33,
    "transport": 40, "transport.admission": 40,
    "transport.upgrade": 41,
    "transport.http": 42,
    "transport.listeners": 43,
    "transport.dns_sd": 40,  # the DNS-SD announcement: imports protocol.dns_sd only
    "transport.mqtt": 40,  # a connection to a broker: the server's and the client's
    "runtime": 50, "runtime.action_values": 50, "runtime.context": 50, "runtime.turns": 50,
    "runtime.blobs": 50,
    "runtime.settings": 50,
    "runtime.actions": 51,
    "runtime.dispatcher": 52,
    "websockets": 60,
    "bindings": 61, "bindings.sse": 61, "bindings.websocket": 61, "bindings.dashboard": 61,
    "bindings.blobs": 61, "bindings.mqtt": 61,
    "bindings.http": 62,
    "config": 63,
    "server": 64,
    "demo": 65,
    # The client sits beside the server, not on it: see test_the_client_never_imports_the_server.
    "client": 65,
    "cli": 70,
    "__init__": 70,
    # The harness's raw HTTP client imports no trio_things module: it works against any server.
    "testing_http": 66,
    # The in-memory test harness joins the server and the client, so it sits on both.
    "testing": 70,
}


def layer_of(module: str) -> int:
    """The rank of a dotted module name (``trio_things.`` optional)."""
    parts = module.removeprefix("trio_things.").removesuffix(".__init__").split(".")
    if parts[0] == "client":
        return LAYERS["client"]
    return LAYERS[".".join(parts[:2])]


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py"))


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


def test_every_module_has_a_rank() -> None:
    unranked = [module_name(p) for p in modules()
                if not module_name(p).startswith("client")
                and module_name(p).removesuffix(".__init__") not in LAYERS]
    assert unranked == [], f"give these modules a rank in LAYERS: {unranked}"


def imports_of(path: Path) -> list[str]:
    """Every trio_things module ``path`` imports, wherever the import stands (under
    ``TYPE_CHECKING`` or inside a function too); ``from package import module`` names
    the module."""
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "trio_things":
                continue
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                as_path = PACKAGE.parent / (submodule.replace(".", "/") + ".py")
                found.append(submodule if as_path.exists() else node.module)
        elif isinstance(node, ast.Import):
            found.extend(a.name for a in node.names if a.name.split(".")[0] == "trio_things")
    return found


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_downwards(path: Path) -> None:
    """A module imports only modules of a lower rank (or, in the client, its own
    package); modules of the same rank never import each other."""
    name = module_name(path)
    own = layer_of(name)
    for imported in imports_of(path):
        if imported == "trio_things":
            assert own >= LAYERS["__init__"] or name == "demo", f"{name} imports the package root"
            continue
        inner = imported.removeprefix("trio_things.")
        if name.startswith("client") and inner.startswith("client"):
            continue  # one unit; test_no_import_cycle still covers it
        if name.removesuffix(".__init__") == inner.split(".")[0]:
            continue  # a package's __init__ may name its own modules
        assert layer_of(imported) < own, (
            f"{name} (rank {own}) imports {imported} (rank {layer_of(imported)})")


def test_no_import_cycle() -> None:
    """No module reaches itself through imports, counting those under ``TYPE_CHECKING``."""
    graph = {module_name(p).removesuffix(".__init__"): {
        i.removeprefix("trio_things.") for i in imports_of(p) if i != "trio_things"}
        for p in modules()}
    done: set[str] = set()

    def visit(node: str, trail: list[str]) -> None:
        if node in trail:
            raise AssertionError("import cycle: " + " -> ".join([*trail[trail.index(node):], node]))
        if node in done:
            return
        for target in sorted(graph.get(node, ())):
            visit(target, [*trail, node])
        done.add(node)

    for module in sorted(graph):
        visit(module, [])


def test_the_cycle_check_would_catch_a_cycle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the test above meaningful: two modules importing each other fail it."""
    real = imports_of

    def with_cycle(path: Path) -> list[str]:
        extra = {"fanout.outbox": ["trio_things.fanout.observers"]}
        return real(path) + extra.get(module_name(path), [])

    monkeypatch.setitem(globals(), "imports_of", with_cycle)
    with pytest.raises(AssertionError, match="import cycle"):
        test_no_import_cycle()


def test_model_and_protocol_never_import_trio() -> None:
    for layer in ("model", "protocol"):
        for path in (PACKAGE / layer).rglob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    assert all(not a.name.startswith("trio") or a.name.startswith("trio_things")
                               for a in node.names), path
                if isinstance(node, ast.ImportFrom) and node.module:
                    assert node.module == "trio_things" or not node.module.startswith("trio") \
                        or node.module.startswith("trio_things"), path


#: What the client may import of trio-things: the error root, the cattrs converter and
#: the sans-IO protocol values (problem details). Never a server module: it must work
#: against any server, so it cannot lean on ours (``docs/design.md``, "Architecture and layers").
CLIENT_MAY_IMPORT = ("trio_things.errors", "trio_things.model.values", "trio_things.protocol.",
                     "trio_things.client")
#: The one exception, exactly this module: a connection *to an MQTT broker*
#: (paho-mqtt driven from the Trio thread). It serves no Thing and knows none; the
#: server's MQTT bridge and the client's MQTT forms (client/mqtt.py) are both clients
#: of a broker and share it, rather than the client growing a second copy.
CLIENT_MAY_IMPORT_EXACTLY = ("trio_things.transport.mqtt",)


def imported_modules(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found.extend(a.name for a in node.names)
    return [name for name in found if name.split(".")[0] == "trio_things"]


@pytest.mark.parametrize("path", sorted((PACKAGE / "client").rglob("*.py")),
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_client_never_imports_the_server(path: Path) -> None:
    for module in imported_modules(path):
        if module in CLIENT_MAY_IMPORT_EXACTLY:
            continue
        assert module.startswith(CLIENT_MAY_IMPORT), f"{path.name} imports {module}"
        for server_module in ("server", "dispatch", "http_api", "websockets", "invocations",
                              "transport", "fanout", "config", "demo"):
            assert not module.startswith(f"trio_things.{server_module}"), (
                f"{path.name} imports the server module {module}")


def test_the_layer_check_would_catch_a_client_importing_the_server(tmp_path: Path) -> None:
    """Keep the test above meaningful: it fails on the import it exists to forbid."""
    bad = tmp_path / "bad.py"
    bad.write_text("from trio_things.server import ThingServer\n")
    with pytest.raises(AssertionError, match=r"imports trio_things\.server"):
        test_the_client_never_imports_the_server(bad)


@pytest.mark.parametrize("module", ["trio_things.transport.http",
                                    "trio_things.transport.mqtt_extra"])
def test_the_mqtt_exception_admits_that_one_module_only(tmp_path: Path, module: str) -> None:
    """``transport.mqtt`` is allowed by its exact name, not as a prefix of the package."""
    ok = tmp_path / "ok.py"
    ok.write_text("from trio_things.transport.mqtt import open_mqtt_connection\n")
    test_the_client_never_imports_the_server(ok)
    bad = tmp_path / "bad.py"
    bad.write_text(f"import {module}\n")
    with pytest.raises(AssertionError, match=f"imports {module}"):
        test_the_client_never_imports_the_server(bad)


def test_importing_the_client_does_not_load_the_server() -> None:
    """The package root imports the server lazily, so a client-only program does not
    load it (the client has its own HTTP and WebSocket code)."""
    import subprocess
    import sys

    code = ("import sys, trio_things.client, trio_things; "
            "assert 'trio_things.server' not in sys.modules, 'server loaded'; "
            "assert 'trio_things.websockets' not in sys.modules, 'websockets loaded'; "
            "trio_things.ThingServer; assert 'trio_things.server' in sys.modules")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
