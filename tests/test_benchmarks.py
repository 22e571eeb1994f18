"""The benchmark harness works (not how fast anything is): every server starts, serves and
stops; the load generator counts exactly what was sent; the quick path writes its records,
page and plot. No assertion here is about speed, so a busy machine cannot fail it.

Rules: loopback only, tiny sizes, every process ended by the harness itself.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from benchmarks import rawsse, rawws, report
from benchmarks.fanout import main, run
from benchmarks.loadgen import SSE, LoadGenerator, OpenError
from benchmarks.messages import EVENT, PROPERTY, reference_notification, sent_at
from benchmarks.procs import start_server
from benchmarks.scenarios import HOST, Bench, Settings
from benchmarks.servers import c_limit, python_limit
from benchmarks.summary import Records, paired_ratio, percentile
from benchmarks.targets import C_LIMIT, LIMITS, TARGETS, TRIO_THINGS, Target

pytest.importorskip("websockets", reason="the bench extra is not installed")
pytest.importorskip("matplotlib", reason="the bench extra is not installed")

# --------------------------------------------------------------------------- pure parts


def test_accept_key_matches_rfc_6455_example() -> None:
    # RFC 6455 section 1.3.
    assert rawws.accept_key(b"dGhlIHNhbXBsZSBub25jZQ==") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_handshake_response_is_checked() -> None:
    key = rawws.new_key()
    head = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Accept: " + rawws.accept_key(key) + b"\r\n\r\n")
    assert rawws.check_handshake_response(head[:-1], key) is None
    assert rawws.check_handshake_response(head + b"\x81\x00", key) == len(head)
    with pytest.raises(rawws.HandshakeError):
        rawws.check_handshake_response(head, rawws.new_key())
    with pytest.raises(rawws.HandshakeError):
        rawws.check_handshake_response(b"HTTP/1.1 404 Not Found\r\n\r\n", key)


@pytest.mark.parametrize("size", [0, 5, 125, 126, 65535, 65536])
def test_masked_frame_unmasks_to_its_payload(size: int) -> None:
    payload = os.urandom(size)
    frame = rawws.masked_frame(rawws.TEXT, payload, mask=b"\x01\x02\x03\x04")
    assert frame[0] == 0x81 and frame[1] & 0x80  # FIN, text; masked
    length = frame[1] & 0x7F
    offset = 2 + {126: 2, 127: 8}.get(length, 0)
    mask, masked = frame[offset:offset + 4], frame[offset + 4:]
    assert bytes(b ^ mask[i % 4] for i, b in enumerate(masked)) == payload


@pytest.mark.parametrize("size", [3, 125, 126, 300, 65535, 65536])
def test_server_frames_split_at_any_boundary(size: int) -> None:
    def server_frame(opcode: int, payload: bytes) -> bytes:
        n = len(payload)
        if n < 126:
            head = bytes((0x80 | opcode, n))
        elif n < 1 << 16:
            head = bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big")
        else:
            head = bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big")
        return head + payload

    stream = server_frame(rawws.TEXT, b"x" * size) + server_frame(rawws.PING, b"hi")
    for cut in (1, 2, 3, 9, len(stream) - 1):
        frames, rest = rawws.split_frames(stream[:cut])
        assert all(f.stop <= cut for f in frames) and rest <= cut
    assert list(rawws.iter_payloads(stream)) == [(rawws.TEXT, b"x" * size),
                                                 (rawws.PING, b"hi")]


def test_masked_server_frame_is_refused() -> None:
    with pytest.raises(ValueError):
        rawws.parse_header(b"\x81\x85abcd12345", 0)


def test_sse_request_asks_for_an_event_stream() -> None:
    request = rawsse.stream_request("127.0.0.1", 8000, "/bench/tick")
    assert request.startswith(b"GET /bench/tick HTTP/1.1\r\n")
    assert b"\r\nAccept: text/event-stream\r\n" in request and request.endswith(b"\r\n\r\n")


def test_sse_response_head_is_checked() -> None:
    head = (b"HTTP/1.1 200 \r\ncontent-type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\nconnection: close\r\n\r\n")
    assert rawsse.check_response_head(head[:-1]) is None
    assert rawsse.check_response_head(head + b"1a\r\n") == len(head)
    for refused in (b"HTTP/1.1 406 Not Acceptable\r\ncontent-length: 0\r\n\r\n",
                    head.replace(b"text/event-stream", b"application/json"),
                    head.replace(b"Transfer-Encoding: chunked", b"content-length: 9")):
        with pytest.raises(rawsse.ResponseError):
            rawsse.check_response_head(refused)


def _chunk(message: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(message), message)


def test_sse_messages_are_counted_by_data_line_at_any_split() -> None:
    body = (_chunk(b'id: e.0\ndata: {"n":0,"t":0.0}\n\n')
            + _chunk(b": keep-alive\n\n")  # a comment: no message
            + _chunk(b"data: 1\n\n")  # no id: data comes first
            + _chunk(b"id: e.2\ndata: 2\n\nid: e.3\ndata: 3\n\n")  # two in one chunk
            + _chunk(b"x" * 300)  # a size over one hex digit, and no data line
            + b"0\r\n\r\n")
    last = body.index(b"0\r\n\r\n")
    assert rawsse.count_messages(body) == (4, last, True)
    for cut in range(len(body) + 1):
        first, consumed, ended = rawsse.count_messages(body[:cut])
        assert ended == (cut >= last + 3) and consumed <= cut  # "0\r\n": the end
        second, _, ended = rawsse.count_messages(body[consumed:])
        assert first + second == 4 and ended
    with pytest.raises(ValueError):
        rawsse.count_messages(b"zz\r\ndata: 1\r\n")


def test_sent_at_reads_the_benchmark_value() -> None:
    assert sent_at(reference_notification(PROPERTY, 3, 12.5).encode()) == 12.5
    assert sent_at(reference_notification(EVENT, 3, 12.5).encode()) == 12.5
    assert sent_at(b'{"messageType": "response"}') is None
    assert sent_at(b"not json") is None


def test_percentile_and_paired_ratio() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.99) == 4.0
    records = [
        {"scenario": "s", "server": "a", "run": 0, "x": 10.0},
        {"scenario": "s", "server": "b", "run": 0, "x": 5.0},
        {"scenario": "s", "server": "a", "run": 1, "x": 30.0},
        {"scenario": "s", "server": "b", "run": 1, "x": 10.0},
        {"scenario": "s", "server": "b", "run": 2, "x": 1.0},  # unpaired: ignored
    ]
    assert paired_ratio(records, "x", {"server": "a"}, {"server": "b"}) == 2.5
    assert Records(records).median("x", server="b") == 5.0


# --------------------------------------------------------------------------- processes

TINY = Settings(runs=1, warmup=0.1, window=0.3, max_rate_clients=(2,), fixed_rate_clients=(2,),
                event_clients=2, event_count=50, isolation_clients=2, isolation_window=0.6,
                memory_clients=(2,))


@pytest.fixture(scope="module")
def loadgen() -> Iterator[LoadGenerator]:
    with LoadGenerator(2) as generator:
        yield generator


EVENT_TARGETS = [t for t in TARGETS.values() if t.takes_part("events")]


@pytest.mark.parametrize("target", EVENT_TARGETS, ids=[t.name for t in EVENT_TARGETS])
def test_load_generator_counts_every_event_sent(loadgen: LoadGenerator, target: Target) -> None:
    """Events are lossless in every server here (the references never drop), so the
    count the load generator reports must be exactly clients x events."""
    record = Bench(loadgen, TINY).events(target, 3, 0, count=200)
    assert record["updates"] == 200
    assert record["expected"] == 600
    assert record["deliveries"] == 600
    assert record["lost"] == 0
    assert record["clients_missing_events"] == 0
    assert record["closed"] == 0


def test_sse_clients_report_a_refused_stream(loadgen: LoadGenerator) -> None:
    with start_server(TRIO_THINGS.name, TRIO_THINGS.argv()) as server:
        try:
            with pytest.raises(OpenError, match="not 200"):
                loadgen.open(host=HOST, port=server.port, path="/bench/no-such-property",
                             kind=PROPERTY, clients=2, protocol=SSE, timeout=5.0)
        finally:
            loadgen.close_clients()


QUICK_ARGS = ["--quick", "--workers", "1", "--clients", "2", "--sse-clients", "2",
              "--event-clients", "2", "--event-count", "50", "--isolation-clients", "2",
              "--isolation-window", "0.6", "--memory-clients", "2", "--admission-clients",
              "3", "--window", "0.3", "--warmup", "0.1"]

COMMON_KEYS = {"scenario", "server", "clients", "run", "time"}
THROUGHPUT_KEYS = {"deliveries", "deliveries_per_s", "updates", "updates_per_s", "miss_mean",
                   "server_cpu_share", "server_cpu_per_delivery_us", "loadgen_cpu_share",
                   "server_user_per_delivery_us", "server_system_per_delivery_us",
                   "loadgen_saturated", "other_cpu_share", "closed"}
KEYS = {
    "max-rate": COMMON_KEYS | THROUGHPUT_KEYS,
    "sse": COMMON_KEYS | THROUGHPUT_KEYS | {"transport"},
    "fixed-rate": COMMON_KEYS | THROUGHPUT_KEYS | {"latency_p50_ms", "latency_p99_ms",
                                                   "latency_max_ms", "latency_samples"},
    "events": COMMON_KEYS | THROUGHPUT_KEYS | {"expected", "lost"},
    "isolation": COMMON_KEYS | THROUGHPUT_KEYS | {"stalled", "stalled_closed_after_s",
                                                  "timeline"},
    "memory": COMMON_KEYS | {"rss_before_kib", "rss_after_kib", "kib_per_connection"},
    "admission": COMMON_KEYS | {"connect_s", "connections_per_s", "updates", "updates_per_s",
                                "server_cpu_share", "loadgen_cpu_share"},
}


def test_quick_path_writes_records_page_and_plot(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    jsonl = tmp_path / "records.jsonl"
    assert main([*QUICK_ARGS, "--out", str(tmp_path), "--jsonl", str(jsonl)]) == 0
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert not [r for r in records if "error" in r]
    seen = {(r["scenario"], r["server"], r.get("stalled")) for r in records}
    for server, target in TARGETS.items():
        for scenario in ("max-rate", "fixed-rate", "events", "memory", "admission"):
            assert ((scenario, server, None) in seen) == target.takes_part(scenario)
        assert (("isolation", server, False) in seen) == target.takes_part("isolation")
        assert (("isolation", server, True) in seen) == target.takes_part("isolation")
    # SSE beside WebSocket, for the servers that serve an event stream (trio-things only),
    # and the SSE consumers were really sent the updates, not just the current value.
    sse = {r["transport"]: r for r in records if r["scenario"] == "sse"}
    assert {r["server"] for r in records if r["scenario"] == "sse"} == {
        t.name for t in TARGETS.values() if t.sse_path is not None}
    assert sse.keys() == {"websocket", "sse"}
    for record in sse.values():
        assert record["updates"] > 0 and record["deliveries"] > 0
        assert record["miss_max"] < 1.0  # every client was sent some of them
        assert record["closed"] == 0
    for record in records:
        if "skipped" in record:  # the C limit, with no C compiler here
            assert record["server"] == C_LIMIT.name and c_limit.unavailable() is not None
            continue
        assert KEYS[record["scenario"]] <= record.keys(), record["scenario"]
        if record["scenario"] == "events":
            assert record["lost"] == 0
        if record["scenario"] == "fixed-rate":
            assert record["latency_samples"] > 0
        if record["scenario"] == "admission":  # connected while the producer ran
            assert record["connect_s"] > 0 and record["updates"] > 0
    page = (tmp_path / "benchmarks.md").read_text()
    assert page.startswith("# Fan-out benchmarks")
    assert "## Server-Sent Events" in page and "| 2 | SSE |" in page
    assert "## Connecting while the producer runs flat out" in page
    assert "| seconds for 3 clients to connect and observe, producer at full speed |" in page
    assert "python -m benchmarks.fanout --quick" in page
    assert "![" in page
    assert (tmp_path / "benchmarks.png").read_bytes().startswith(b"\x89PNG")
    raw = (tmp_path / "benchmarks.jsonl").read_text().splitlines()
    assert "machine" in json.loads(raw[0]) and len(raw) == len(records) + 1
    assert "| figure |" in capsys.readouterr().out  # the tables, for people

    # The page can be rebuilt from the saved records alone, measuring nothing.
    again = tmp_path / "again"
    assert main(["--render", str(tmp_path / "benchmarks.jsonl"), "--out", str(again)]) == 0
    assert (again / "benchmarks.md").read_text() == page
    assert (again / "benchmarks.png").read_bytes().startswith(b"\x89PNG")


def test_fast_path_benchmark_times_every_layer_on_the_fast_path(
        capsys: pytest.CaptureFixture[str]) -> None:
    """``benchmarks.fastpath`` drives the real relay's writers; it refuses to report
    if any frame left the fast path (the figures would then mix two paths)."""
    from benchmarks import fastpath

    assert fastpath.main(["--observers", "5", "--rounds", "3"]) == 0
    out = capsys.readouterr().out
    for layer in fastpath.LAYERS:
        assert layer in out
    assert "trio-things adds" in out


def test_mjpeg_viewers_count_each_delimiter_once_at_any_split() -> None:
    from benchmarks.mjpeg import Delimiters
    from trio_things.protocol import multipart

    body = b"".join(b"%x\r\n%b\r\n" % (len(part), part) for part in (
        multipart.part("image/jpeg", b"\xff\xd8" + bytes(200) + b"\xff\xd9") for _ in range(3)))
    body += b"%x\r\n%b\r\n0\r\n\r\n" % (len(multipart.CLOSE), multipart.CLOSE)  # no part
    for cut in range(len(body) + 1):
        counter = Delimiters(multipart.BOUNDARY.encode())
        counter.feed(body[:cut])
        counter.feed(body[cut:])
        assert counter.count == 3, cut


def test_mjpeg_benchmark_runs_every_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    """``benchmarks.mjpeg``, tiny: a server process, a viewer process per scenario, the
    isolation pair; the figures are printed (none is asserted: the machine is noisy),
    and frames did arrive."""
    from benchmarks import mjpeg

    assert mjpeg.main(["--viewers", "1,2", "--seconds", "0.5", "--rounds", "1",
                       "--warmup", "0.5"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["1"], ["2"])]
    assert [row[0] for row in rows] == ["1", "2"]
    assert all(float(row[1]) > 0 for row in rows)  # frames/s: some frames arrived
    assert "beside the stalled viewer (still held: 1)" in out
    assert "median ratio" in out


def test_a_benchmark_keeps_its_section_of_the_page_when_the_fan_out_rewrites_it() -> None:
    from benchmarks.page import carry_sections, replace_section

    page = replace_section("# Fan-out\n\nfigures\n", "mjpeg", "## MJPEG\n\n30 fps")
    assert page.startswith("# Fan-out\n\nfigures\n")
    assert "## MJPEG\n\n30 fps" in page
    again = replace_section(page, "mjpeg", "## MJPEG\n\n29 fps")
    assert "30 fps" not in again and again.count("## MJPEG") == 1
    rewritten = carry_sections(again, "# Fan-out\n\nnew figures\n")
    assert rewritten.startswith("# Fan-out\n\nnew figures\n")
    assert "29 fps" in rewritten
    assert carry_sections(again, again) == again  # nothing doubled


# --------------------------------------------------------------------------- MQTT


def _mqtt_publish(topic: bytes, payload: bytes, packet_id: int | None = None) -> bytes:
    body = len(topic).to_bytes(2, "big") + topic
    if packet_id is not None:
        body += packet_id.to_bytes(2, "big")
    body += payload
    head = 0x32 if packet_id is not None else 0x30
    length = len(body)
    encoded = bytearray()
    while True:
        byte, length = length & 0x7F, length >> 7
        encoded.append(byte | (0x80 if length else 0))
        if not length:
            break
    return bytes((head,)) + bytes(encoded) + body


def test_mqtt_subscribers_count_each_publish_once_at_any_split() -> None:
    """The MQTT load generator walks fixed headers only: every PUBLISH is counted once,
    a QoS 1 one gives its packet id to acknowledge, and a packet cut anywhere (in its
    remaining length too: a 300-byte payload takes two bytes of it) waits for its rest."""
    from benchmarks.mqttload import connect_packet, scan, subscribe_packet

    connect = connect_packet("sub-1")
    assert connect[0] == 0x10 and connect[1] == len(connect) - 2
    assert b"\x00\x04MQTT\x04\x02\x00\x00\x00\x05sub-1" in connect
    assert subscribe_packet("a/b", qos=1) == b"\x82\x08\x00\x01\x00\x03a/b\x01"
    stream = (b"\x20\x02\x00\x00"  # CONNACK, accepted
              + b"\x90\x03\x00\x01\x00"  # SUBACK, QoS 0 granted
              + _mqtt_publish(b"things/bench/properties/tick", b'{"n":0,"t":1.5}')
              + _mqtt_publish(b"t", bytes(300), packet_id=7)
              + _mqtt_publish(b"t", b"x", packet_id=8))
    whole = scan(stream)
    assert (whole.publishes, whole.acknowledge, whole.consumed) == (3, [7, 8], len(stream))
    assert [head for head, _ in whole.control] == [0x20, 0x90]
    for cut in range(len(stream) + 1):
        first = scan(stream[:cut])
        second = scan(stream[first.consumed:])
        assert first.publishes + second.publishes == 3, cut
        assert first.acknowledge + second.acknowledge == [7, 8], cut
        assert first.consumed + second.consumed == len(stream), cut


def test_mqtt_benchmark_delivers_every_update_on_both_paths(tmp_path: Path) -> None:
    """``benchmarks.mqtt --quick``, tiny: a real Mosquitto, a server per path, 10
    subscribers over MQTT and 10 observers over WebSocket for a 1 s window. Every update
    reaches every subscriber on both paths, and the figures are sane; none is compared
    with a speed (the machine is noisy)."""
    import math

    from benchmarks import mqtt

    jsonl = tmp_path / "mqtt.jsonl"
    assert mqtt.main(["--quick", "--workers", "1", "--jsonl", str(jsonl)]) == 0
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert sorted(r["path"] for r in records) == ["mqtt", "websocket"]
    for record in records:
        assert record["subscribers"] == 10
        assert record["updates"] > 0 and record["deliveries"] > 0
        assert record["expected"] > 0
        assert record["received"] == record["expected"], record  # lossless at this size
        assert record["lost"] == record["coalesced"] == record["closed"] == 0
        assert record["server_cpu_s"] > 0
        assert 0 < record["cpu_per_update_us"] < 1e6 and math.isfinite(
            record["cpu_per_update_us"])
        assert (record["broker_cpu_s"] is not None) == (record["path"] == "mqtt")
    rows = mqtt.summarize([mqtt.Measurement(**{
        k: v for k, v in r.items() if k not in ("cpu_per_update_us", "deliveries_per_s",
                                                 "lost")}) for r in records])
    assert [row.subscribers for row in rows] == [10]
    assert rows[0].mqtt_ratio == rows[0].websocket_ratio == 1.0


# --------------------------------------------------------------------------- the limits


def test_python_limit_speaks_the_handshake_and_unmasks_requests() -> None:
    # RFC 6455 section 1.3.
    assert python_limit.accept_key(b"dGhlIHNhbXBsZSBub25jZQ==") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    for size in (5, 125, 126, 300):
        payload = os.urandom(size)
        frame = rawws.masked_frame(rawws.TEXT, payload)
        assert python_limit.unmask_frame(frame[:-1]) is None
        assert python_limit.unmask_frame(frame + b"more") == (rawws.TEXT, payload, len(frame))
        header = python_limit.text_frame_header(size)
        assert list(rawws.iter_payloads(header + payload)) == [(rawws.TEXT, payload)]


LIMIT_RUN = Settings(runs=1, warmup=0.1, window=0.3, max_rate_clients=(3,))


@pytest.mark.parametrize("target", LIMITS, ids=[t.name for t in LIMITS])
def test_limit_servers_deliver_at_full_speed(target: Target) -> None:
    """Each limit serves the load generator at full speed; the C one is reported as
    unavailable (a skipped record, not a failure and not a test skip) exactly when no
    C compiler is found."""
    progress = io.StringIO()
    records = run(LIMIT_RUN, scenarios=["max-rate"], targets=[target], workers=1,
                  progress=progress)
    [record] = records
    names = [os.environ["CC"]] if os.environ.get("CC") else list(c_limit.COMPILERS)
    compiler = next((name for name in names if shutil.which(name)), None)
    if "skipped" in record:  # only the C limit, only with no compiler (nor a cached build)
        assert target is C_LIMIT and compiler is None, record
        assert record["skipped"].startswith("unavailable: no C compiler")
        assert "skipped: unavailable" in progress.getvalue()
        return
    assert "error" not in record, record
    assert record["updates"] > 0 and record["deliveries"] > 0
    assert record["miss_max"] < 1.0  # every client was sent some of them
    assert record["closed"] == 0


def test_c_limit_without_a_compiler_is_reported_unavailable(tmp_path: Path) -> None:
    with pytest.raises(c_limit.Unavailable, match="no C compiler found"):
        c_limit.build(cache=tmp_path, compilers=["no-such-cc-here"])
    assert not list(tmp_path.iterdir())
    # The harness records it as skipped, says so, and the page notes it; no process starts.
    absent = attrs.evolve(C_LIMIT, unavailable=lambda: "no C compiler found (test)")
    progress = io.StringIO()
    records = run(LIMIT_RUN, scenarios=["max-rate"], targets=[absent], workers=1,
                  progress=progress)
    assert records == [{"scenario": "max-rate", "server": "c-limit", "clients": 3, "run": 0,
                        "skipped": "unavailable: no C compiler found (test)"}]
    assert "c-limit run 1/1: skipped: unavailable" in progress.getvalue()
    page = _page(records)
    assert "Skipped: max-rate C = 3 (c-limit, run 1): unavailable: no C compiler" in page


def _page(records: list[dict[str, object]]) -> str:
    return report.markdown(Records(records), machine=report.describe_machine(),
                           command="python -m benchmarks.fanout", settings=Settings(),
                           started=datetime.datetime.now(datetime.UTC), elapsed=1.0,
                           figure=None)


def _max_rate(server: str, deliveries: float, run: int = 0) -> dict[str, object]:
    return {"scenario": "max-rate", "server": server, "clients": 100, "run": run,
            "deliveries_per_s": deliveries, "server_cpu_per_delivery_us": 1e6 / deliveries}


def test_page_reads_trio_things_as_a_fraction_of_each_limit() -> None:
    both = [_max_rate("trio-things", 80.0), _max_rate("python-limit", 100.0),
            _max_rate("c-limit", 160.0), _max_rate("trio-things", 90.0, 1),
            _max_rate("python-limit", 100.0, 1), _max_rate("c-limit", 200.0, 1)]
    page = _page(both)
    assert "| fraction of the Python limit | fraction of the C limit |" in page
    assert "| max-rate deliveries/s, C = 100 | 85.0 | 0.85x | 0.47x |" in page
    assert "| trio-things / python-limit | trio-things / c-limit | python-limit / c-limit |" in page
    assert "| 100 | 0.85x | 0.47x | 0.56x |" in page
    # Records from before the limits existed: the same columns, with "-".
    page = _page([_max_rate("trio-things", 80.0)])
    assert "| max-rate deliveries/s, C = 100 | 80.0 | - | - |" in page
    assert "| 100 | - | - | - |" in page


# --------------------------------------------------------------------------- the profile


def _raw(*stacks: tuple[str, int]) -> str:
    root = "0x7f00 (libc.so.6);main (benchmarks/servers/trio_things_server.py:50);" \
           "unrolled_run (trio/_core/_run.py:2866)"
    return "\n".join(f"{root};{stack} {count}" if stack else f"{root} {count}"
                     for stack, count in stacks) + "\n"


PUBLISH = ("ObserverSet.publish (trio_things/fanout/observers.py:187);"
           "ObserverSet._deliver (trio_things/fanout/observers.py:210)")
PUT_LATEST = f"{PUBLISH};Outbox.put_latest (trio_things/fanout/outbox.py:214)"


def write_now(line: int) -> str:
    return f"{PUT_LATEST};UpgradeStream.write_now (trio_things/transport/upgrade.py:{line})"


WRITE_NOW = write_now(250)  # the join's line
RELAY_SEND = ("relay_notifications_to_websocket (trio_things/websockets.py:276);"
              "SocketWriter.write (trio_things/websockets.py:335);"
              "UpgradeStream.send_all_while (trio_things/transport/upgrade.py:419);"
              "SocketStream.send_all (trio/_highlevel_socket.py:122)")


def test_profile_puts_each_sample_in_its_bucket() -> None:
    from benchmarks import profile_fanout as p

    rules = p.Rules(splice_lines=frozenset({("trio_things/fanout/observers.py", 202),
                                            ("trio_things/transport/upgrade.py", 250)}))
    raw = _raw(
        (f"{write_now(263)};os_write (libpython3.11.so.1.0);write (libc.so.6)", 50),  # syscall
        (f"{write_now(263)};os_write (libpython3.11.so.1.0)", 4),            # fast path
        (f"{write_now(255)};_SocketType.fileno (trio/_socket.py:843)", 6),   # fast path
        (f"{WRITE_NOW};stringlib_bytes_join (libpython3.11.so.1.0)", 3),     # splicing
        (f"{WRITE_NOW}", 2),                                # splicing: the join's line
        ("ObserverSet.publish (trio_things/fanout/observers.py:187);"
         "ObserverSet._deliver (trio_things/fanout/observers.py:202)", 2),   # splicing
        (f"{RELAY_SEND};send (libc.so.6)", 7),                               # syscall
        (f"{RELAY_SEND}", 3),                                                # relay
        (f"{RELAY_SEND};gc_collect_main (libpython3.11.so.1.0)", 4),         # GC
        (f"{PUBLISH};Outbox.put_latest (trio_things/fanout/outbox.py:217);"
         "Outbox._ring (trio_things/fanout/outbox.py:307);"
         "MemorySendChannel.send_nowait (trio/_channel.py:200)", 2),         # relay
        ("", 3),                                            # scheduler: unrolled_run
        ("Runner.reschedule (trio/_core/_run.py:1919);__init__ "
         "(<attrs generated methods outcome._impl.Value>:15)", 2),           # scheduler
        ("run (trio/_core/_run.py:2535);EpollIOManager.get_events "
         "(trio/_core/_io_epoll.py:243);epoll_wait (libc.so.6)", 1),         # syscall
        ("BenchThing._produce (benchmarks/things.py:80);DataProperty.__set__ "
         "(trio_things/model/declarations.py:191);DataSchema.validate "
         "(trio_things/model/schema.py:184)", 4),                            # Thing update
        ("BenchThing._produce (benchmarks/things.py:80);ThingNotifier._publish_property "
         "(trio_things/fanout/notifier.py:85);encode_notification "
         "(trio_things/protocol/wtp.py:160);dumps (orjson.so)", 3),          # encoding
        ("process_messages_from_websocket (trio_things/websockets.py:150);"
         "WebSocketConnection.get_message (trio_websocket/_impl.py:900)", 4),  # other
        ("process_messages_from_websocket (trio_things/websockets.py:150);Runner.reschedule "
         "(trio/_core/_run.py:1919)", 1),   # scheduler: the leaf is Trio's, whoever called it
        ("Runner.reschedule (trio/_core/_run.py:1919);UserDict.__contains__ "
         "(collections/__init__.py:1130)", 1),      # scheduler: a library helper of Trio's
        ("BenchThing._produce (benchmarks/things.py:80);ThingNotifier.property_changed "
         "(trio_things/fanout/notifier.py:64);ObserverRegistry.get "
         "(trio_things/fanout/observers.py:250)", 2),   # Thing update: its helper's caller
    )
    stacks = p.parse_raw(raw + "garbage line without a count\n")
    assert len(stacks) == 19
    breakdown = p.aggregate(stacks, rules)
    assert breakdown.samples == 104
    assert breakdown.buckets == {p.SYSCALLS: 58, p.FAST_PATH: 10, p.SPLICING: 7, p.RELAY: 5,
                                 p.GC: 4, p.SCHEDULER: 7, p.THING: 6, p.ENCODING: 3,
                                 p.OTHER: 4}
    assert breakdown.syscalls == {"write (fast path)": 50, "send (relay)": 7,
                                  "epoll_wait (scheduler)": 1}
    assert breakdown.share(p.SYSCALLS) == 58 / 104
    assert breakdown.other == [("WebSocketConnection.get_message <- "
                                "process_messages_from_websocket <- unrolled_run", 4)]
    assert breakdown.lines[0] == ("_SocketType.fileno _socket.py:843", 6)  # nearest Python
    assert set(p.BUCKETS) >= breakdown.buckets.keys()


def test_profile_rules_find_the_splicing_lines_in_the_source() -> None:
    from benchmarks import profile_fanout as p

    rules = p.Rules.from_source()
    files = {file for file, _line in rules.splice_lines}
    assert files == {"trio_things/fanout/observers.py", "trio_things/websockets.py",
                     "trio_things/transport/upgrade.py"}
    # Each rule names a line that really joins or builds a frame.
    root = Path(__file__).resolve().parents[1]
    for file, line in rules.splice_lines:
        text = (root / file).read_text().splitlines()[line - 1]
        assert any(k in text for k in ('b"".join', "header", "size =", "frame: Frame")), text


def test_profile_tables_give_medians_over_runs_and_every_bucket() -> None:
    from benchmarks import profile_fanout as p

    def one(server: str, syscalls: int, cost: float) -> p.Profile:
        breakdown = p.Breakdown(samples=100, buckets={p.SYSCALLS: syscalls,
                                                      p.FAST_PATH: 100 - syscalls},
                                syscalls={"write (fast path)": syscalls}, other=[],
                                lines=[("Outbox.put_latest outbox.py:213", 100 - syscalls)])
        window = {"deliveries_per_s": 1000.0, "server_cpu_share": 1.0,
                  "server_cpu_per_delivery_us": cost, "server_user_per_delivery_us": cost / 4,
                  "server_system_per_delivery_us": cost * 3 / 4}
        return p.Profile(server=server, clients=100, breakdown=breakdown, plain=window,
                         profiled=window)

    page = p.render([one("trio-things", 70, 8.0), one("python-limit", 90, 5.0),
                     one("trio-things", 80, 6.0), one("python-limit", 94, 5.0),
                     one("trio-things", 90, 7.0), one("python-limit", 92, 5.0)], "cmd")
    assert "C = 100, medians of 3 runs:" in page
    assert "| syscalls | 80.0 % | 92.0 % | 5.60 us | 4.60 us |" in page
    assert "| GC | 0.0 % | 0.0 % | 0.00 us | 0.00 us |" in page  # shown, with no sample
    assert "| **total** | 300 samples | 300 samples | **7.00 us** | **5.00 us** |" in page
    assert "system calls: write (fast path) 80.0 %" in page
    assert "7.00 us without py-spy: 1.75 us in user space, 5.25 us in the kernel" in page
    assert "`Outbox.put_latest outbox.py:213` 20.0 %" in page
    assert page.rstrip().endswith("```sh\ncmd\n```")


def test_idle_memory_attributes_what_idle_observers_hold_to_their_parts() -> None:
    """``benchmarks.idle_memory``, tiny: the server in this process, 30 observers in a
    load-generator process; every part of a connection is found, and the table adds up
    (no figure is compared with a bound here: tests/test_idle_memory.py does that)."""
    from benchmarks import idle_memory

    rss, breakdown = idle_memory.measure(connections=30)
    assert rss > 0
    assert {"task: relay", "task: trio-websocket's reader",
            "task: the connection's (HTTP, handshake, processor)",
            "wsproto connection (frame parser)", "UpgradeStream, frame guard",
            "Outbox, writer, doorbell"} <= breakdown.parts.keys()
    assert breakdown.total == sum(breakdown.parts.values())
    lines = breakdown.lines(types=2)
    assert lines[0].startswith("| part |") and lines[-1].startswith("| **all** |")
    assert len(lines) == len(breakdown.parts) + 3
