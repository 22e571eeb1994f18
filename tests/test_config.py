from __future__ import annotations

from pathlib import Path

import pytest

from trio_things.config import ConfigError, ServerConfig, ThingConfig, load_config
from trio_things.demo import Counter


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_toml_config(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "c.toml", """
[server]
port = 9000
invocation_retention = 5

[server.http]
max_body_bytes = 1000

[server.websocket]
outbox_size = 64
write_timeout = 2.5
keepalive_interval = 30

[server.access]
tokens = ["a-long-enough-token"]
allowed_origins = ["https://ui.example"]

[things.counter]
class = "trio_things.demo:Counter"
start = 5
"""))
    assert config.port == 9000
    assert config.host == "127.0.0.1"
    assert config.invocation_retention == 5
    assert config.http.max_body_bytes == 1000
    assert config.websocket.outbox_size == 64
    assert config.websocket.write_timeout == 2.5
    assert config.websocket.keepalive_interval == 30
    assert config.websocket.max_message_bytes == 64 * 1024  # the default
    assert config.access.enabled
    assert config.access.tokens == ("a-long-enough-token",)
    assert config.access.allowed_origins == ("https://ui.example",)
    [thing] = config.things
    assert thing == ThingConfig(name="counter", class_path="trio_things.demo:Counter",
                                kwargs={"start": 5})
    counter = thing.create()
    assert isinstance(counter, Counter)
    assert counter.count == 5


def test_labthings_json_config(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "c.json", """
{"things": {"/counter/": "trio_things.demo:Counter",
            "therm": {"class": "trio_things.demo:Thermometer", "kwargs": {}}},
 "settings_folder": "./settings"}"""))
    assert [t.name for t in config.things] == ["counter", "therm"]


@pytest.mark.parametrize(("name", "text", "message"), [
    ("c.toml", "[things.x]\nmodule = 'a:b'", "needs class ="),
    ("c.toml", "[things.things]\nclass = 'trio_things.demo:Counter'", "taken by the server"),
    ("c.toml", "[things.'a b']\nclass = 'trio_things.demo:Counter'", "names must start"),
    ("c.toml", "[server]\nport = 'eighty'", "[server]"),
    ("c.toml", "[server]\nbogus = 1", "[server]: unknown key 'bogus'; the keys are: access,"),
    ("c.toml", "[server]\nprot = 8000", "[server]: unknown key 'prot' (did you mean 'port'?)"),
    ("c.toml", "[server.websocket]\noutbox_size = 0", "[server]"),
    ("c.toml", "[server.websocket]\nbogus = 1", "[server.websocket]: unknown key 'bogus'"),
    ("c.toml", "[server.websocket]\noutbox = 1",
     "[server.websocket]: unknown key 'outbox' (did you mean 'outbox_size'?)"),
    ("c.toml", "[server.http]\nmax_body = 1",
     "[server.http]: unknown key 'max_body' (did you mean 'max_body_bytes'?)"),
    ("c.toml", "[server.access]\ntoken = ['a-long-token']",
     "[server.access]: unknown key 'token' (did you mean 'tokens'?)"),
    ("c.toml", "[server.access]\ntokens = ['short']", "at least 8"),
    ("c.toml", "[sever]\n", "unknown section"),
    ("c.toml", "[things\n", "not valid TOML"),
    ("c.json", "{", "not valid JSON"),
    ("c.json", '{"things": []}', "expected"),
])
def test_config_errors_are_one_clear_line(tmp_path: Path, name: str, text: str,
                                          message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, name, text))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("class_path", "message"), [
    ("nosuchmodule:Thing", "thing 'x': no module 'nosuchmodule' on the Python path; run "
                           "trio-things serve from the folder that holds it (or name that "
                           "folder with --app-dir), add the folder to PYTHONPATH, or install "
                           "its package"),
    ("trio_things.nosuch:Thing", "no module 'trio_things.nosuch' on the Python path"),
    ("trio_things.demo:Nope", "thing 'x': 'trio_things.demo' has no 'Nope'; its Thing "
                              "classes: Camera, Counter, Thermometer"),
    ("trio_things.demo:Thermometr", "'trio_things.demo' has no 'Thermometr' (did you mean "
                                    "'Thermometer'?)"),
    ("trio_things.demo:Reading", "'trio_things.demo:Reading' is a class, not a subclass of "
                                 "trio_things.Thing"),
    ("trio_things.demo:random", "'trio_things.demo:random' is a module, not a subclass"),
    ("trio_things.demo", "must look like 'package.module:Class'"),
])
def test_import_errors_name_the_thing(class_path: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        ThingConfig(name="x", class_path=class_path).create()
    assert message in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")


def test_constructor_failure_names_the_thing() -> None:
    thing = ThingConfig(name="c", class_path="trio_things.demo:Counter", kwargs={"nope": 1})
    with pytest.raises(ConfigError, match=r"thing 'c': trio_things\.demo:Counter"):
        thing.create()


def test_defaults_are_safe() -> None:
    config = ServerConfig()
    assert config.host == "127.0.0.1"
    assert config.http.max_body_bytes > 0


def test_a_module_that_fails_to_import_says_why(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A module that exists but cannot be imported (a dependency is missing) is not
    mistaken for one that is not on the path."""
    (tmp_path / "broken_devices.py").write_text("import no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as info:
        ThingConfig(name="x", class_path="broken_devices:Stage").create()
    assert str(info.value) == ("thing 'x': importing 'broken_devices' failed: "
                               "ModuleNotFoundError: No module named 'no_such_dependency'")


def test_the_mqtt_table(tmp_path: Path) -> None:
    path = tmp_path / "things.toml"
    path.write_text('[server.mqtt]\nbroker = "mqtts://broker.lab"\ntopic_prefix = "lab3"\n'
                    'qos = 0\nca_certificates = "ca.pem"\nusername = "bench"\n')
    mqtt = load_config(path).mqtt
    assert mqtt is not None
    assert (str(mqtt.broker_url), mqtt.topic_prefix, mqtt.qos) == ("mqtts://broker.lab:8883",
                                                                  "lab3", 0)
    assert mqtt.ca_certificates == tmp_path / "ca.pem"  # beside the file, as TLS's
    assert load_config(_write(tmp_path, "[server]\nport = 1\n")).mqtt is None


def _write(folder: Path, text: str) -> Path:
    path = folder / "other.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("table", "message"), [
    ("", "needs broker"),
    ('broker = "http://x"', "mqtt:// or mqtts://"),
    ('broker = "mqtt://x"\nqos = 3', "qos"),
    ('broker = "mqtt://x"\nbrokers = 1', "brokers"),
    ('broker = "mqtt://x"\ntopic_prefix = "a/#"', "topic_prefix"),
])
def test_mqtt_table_errors_are_one_line(tmp_path: Path, table: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(_write(tmp_path, f"[server.mqtt]\n{table}\n"))
    assert "[server.mqtt]" in str(caught.value) and "\n" not in str(caught.value)
