"""The MQTT binding's sans-IO part: broker URLs, topics, publications, commands."""

from __future__ import annotations

import datetime

import hypothesis.strategies as st
import orjson
import pytest
from hypothesis import given

from trio_things.errors import BadRequest
from trio_things.protocol import commands as c
from trio_things.protocol.mqtt import (
    PROBLEM_JSON,
    BrokerUrl,
    CommandTopic,
    MqttConfig,
    Publication,
    Topics,
    decode_command,
    encode,
    pack,
    unpack,
)
from trio_things.protocol.problems import NOTIFICATIONS_MISSED_TYPE

NOW = datetime.datetime(2026, 12, 5, tzinfo=datetime.UTC)


@pytest.mark.parametrize(("url", "expected"), [
    ("mqtt://127.0.0.1", "mqtt://127.0.0.1:1883"),
    ("mqtt://broker.lab:1884/", "mqtt://broker.lab:1884"),
    ("mqtts://broker.lab", "mqtts://broker.lab:8883"),
    ("mqtt://[::1]:1883", "mqtt://[::1]:1883"),
])
def test_broker_urls(url: str, expected: str) -> None:
    assert str(BrokerUrl.parse(url)) == expected


@pytest.mark.parametrize(("url", "why"), [
    ("http://broker:1883", "mqtt:// or mqtts://"),
    ("mqtt://user:secret@broker", "credentials"),
    ("mqtt://broker/things", "no path"),
    ("mqtt://broker:99999", "no valid port"),
    ("mqtt://", "names no host"),
])
def test_bad_broker_urls_say_why(url: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        BrokerUrl.parse(url)


@pytest.mark.parametrize("prefix", ["", "a/+", "a/#", "/a", "a/", "a//b", "$SYS"])
def test_a_topic_prefix_must_be_plain_levels(prefix: str) -> None:
    with pytest.raises(ValueError, match="topic_prefix"):
        MqttConfig(broker="mqtt://h", topic_prefix=prefix)


def test_the_default_client_id_names_the_process() -> None:
    config = MqttConfig(broker="mqtt://h")
    assert config.client_id.startswith("trio-things-") and config.qos == 1


def test_the_password_can_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIO_THINGS_MQTT_PASSWORD", "s3cret")
    config = MqttConfig(broker="mqtt://h", username="lab").with_environment()
    assert config.password == "s3cret" and "s3cret" not in repr(config)


def test_topics_and_the_commands_they_carry() -> None:
    topics = Topics("site/lab3")
    assert topics.property("counter", "count") == "site/lab3/counter/properties/count"
    assert topics.command_filters() == ("site/lab3/+/properties/+/writeproperty",
                                        "site/lab3/+/actions/+")
    assert topics.parse_command("site/lab3/counter/properties/count/writeproperty") == \
        CommandTopic("writeproperty", "counter", "count")
    assert topics.parse_command("site/lab3/counter/actions/increment") == \
        CommandTopic("invokeaction", "counter", "increment")
    for other in ("site/lab3/counter/actions/increment/status", "site/lab3/counter/missed",
                  "site/lab3/counter/properties/count", "elsewhere/counter/actions/x",
                  "site/lab3x/counter/actions/increment"):
        assert topics.parse_command(other) is None, other


@given(topic=st.text(min_size=1, max_size=50).filter(lambda t: "\0" not in t),
       payload=st.binary(max_size=200), retain=st.booleans(),
       event_id=st.text(max_size=20), content_type=st.sampled_from(["application/json",
                                                                      PROBLEM_JSON]))
def test_a_publication_survives_its_frame(topic: str, payload: bytes, retain: bool,
                                          event_id: str, content_type: str) -> None:
    publication = Publication(topic=topic, payload=payload, retain=retain,
                              event_id=event_id, content_type=content_type)
    assert unpack(pack(publication)) == publication


def test_what_each_notification_publishes() -> None:
    topics = Topics("things")
    value = unpack(encode(topics, c.PropertyChanged(thing="t", name="p", value=[1.5, "x"],
                                                    timestamp=NOW, id="e.7")))
    assert value == Publication(topic="things/t/properties/p", payload=b'[1.5,"x"]',
                                retain=True, event_id="e.7")
    event = unpack(encode(topics, c.EventEmitted(thing="t", name="ping", data={"n": 1},
                                                 timestamp=NOW, id="e.8")))
    assert (event.topic, event.payload, event.retain) == ("things/t/events/ping",
                                                          b'{"n":1}', False)
    gap = unpack(encode(topics, c.NotificationsMissed(thing="t", last_event_id="e.1",
                                                      resume_id="e.5", detail="lost")))
    assert gap.topic == "things/t/missed" and gap.content_type == PROBLEM_JSON
    problem = orjson.loads(gap.payload)
    assert problem["type"] == NOTIFICATIONS_MISSED_TYPE and problem["resumeID"] == "e.5"


def test_commands_from_payloads() -> None:
    write = CommandTopic("writeproperty", "t", "p")
    invoke = CommandTopic("invokeaction", "t", "a")
    assert decode_command(write, b"42") == c.WriteProperty(thing="t", name="p", value=42)
    assert decode_command(invoke, b"") == c.InvokeAction(thing="t", name="a", input=None)
    assert decode_command(invoke, b'{"by": 2}') == c.InvokeAction(thing="t", name="a",
                                                                  input={"by": 2})
    for topic, payload in ((write, b""), (write, b"nonsense"), (invoke, b"{"),
                           (write, b"\xff\xfe")):
        with pytest.raises(BadRequest, match="must be JSON"):
            decode_command(topic, payload)
