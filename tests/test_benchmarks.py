"""The benchmark harness works (not how fast anything is): every server starts, serves and
stops; the load generator counts exactly what was sent; the quick path writes its records,
page and plot. No assertion here is about speed, so a busy machine cannot fail it.

Rules: loopback only, tiny sizes, every process ended by the harness itself.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks import rawsse, rawws
from benchmarks.fanout import main
from benchmarks.loadgen import SSE, LoadGenerator, OpenError
from benchmarks.messages import EVENT, PROPERTY, reference_notification, sent_at
from benchmarks.procs import start_server
from benchmarks.scenarios import HOST, Bench, Settings
from benchmarks.summary import Records, paired_ratio, percentile
from benchmarks.targets import TARGETS, TRIO_THINGS, Target

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


@pytest.mark.parametrize("target", TARGETS.values(), ids=list(TARGETS))
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
              "--isolation-window", "0.6", "--memory-clients", "2", "--window", "0.3",
              "--warmup", "0.1"]

COMMON_KEYS = {"scenario", "server", "clients", "run", "time"}
THROUGHPUT_KEYS = {"deliveries", "deliveries_per_s", "updates", "updates_per_s", "miss_mean",
                   "server_cpu_share", "server_cpu_per_delivery_us", "loadgen_cpu_share",
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
}


def test_quick_path_writes_records_page_and_plot(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    jsonl = tmp_path / "records.jsonl"
    assert main([*QUICK_ARGS, "--out", str(tmp_path), "--jsonl", str(jsonl)]) == 0
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert not [r for r in records if "error" in r]
    seen = {(r["scenario"], r["server"], r.get("stalled")) for r in records}
    for server in TARGETS:
        for scenario in ("max-rate", "fixed-rate", "events", "memory"):
            assert (scenario, server, None) in seen
        assert ("isolation", server, False) in seen and ("isolation", server, True) in seen
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
        assert KEYS[record["scenario"]] <= record.keys(), record["scenario"]
        if record["scenario"] == "events":
            assert record["lost"] == 0
        if record["scenario"] == "fixed-rate":
            assert record["latency_samples"] > 0
    page = (tmp_path / "benchmarks.md").read_text()
    assert page.startswith("# Fan-out benchmarks")
    assert "## Server-Sent Events" in page and "| 2 | SSE |" in page
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
