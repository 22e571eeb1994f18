"""Each layer imports only the layers before it (STYLE.md section 2)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "trio_things"

# Lower number = lower layer. A module may import its own layer and those below.
LAYERS = {
    "errors": 0,
    "model": 1,
    "protocol": 2,
    "fanout": 3,
    "transport": 4,
    "invocations": 5, "dispatch": 5, "websockets": 5, "http_api": 5, "server": 5,
    "config": 5, "demo": 5,
    # The client sits beside the server, not on it: see test_the_client_never_imports_the_server.
    "client": 5,
    "cli": 6,
    "__init__": 6,
}


def layer_of(module: str) -> int:
    first = module.removeprefix("trio_things.").split(".")[0]
    return LAYERS[first]


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_downwards(path: Path) -> None:
    relative = path.relative_to(PACKAGE).with_suffix("")
    own = layer_of(".".join(relative.parts))
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(
                "trio_things"):
            imported = node.module
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("trio_things.")]
            if not names:
                continue
            imported = names[0]
        else:
            continue
        if imported == "trio_things":
            assert own >= LAYERS["__init__"] or relative.parts[0] == "demo", (
                f"{relative} imports the package root")
            continue
        assert layer_of(imported) <= own, f"{relative} (layer {own}) imports {imported}"


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
#: against any server, so it cannot lean on ours (STYLE.md section 2).
CLIENT_MAY_IMPORT = ("trio_things.errors", "trio_things.model.values", "trio_things.protocol.",
                     "trio_things.client")


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
