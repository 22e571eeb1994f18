"""DNS-SD records, sans-IO: what a server announces (from what it is bound to), what a
browser's resolved records mean, and ``[server.discovery]``. No sockets."""

from __future__ import annotations

from pathlib import Path

import pytest

from trio_things.config import ConfigError, ServerConfig, load_config
from trio_things.protocol.dns_sd import (
    DIRECTORY_SUBTYPE,
    SERVICE_TYPE,
    DiscoveryConfig,
    FoundService,
    Interfaces,
    check_instance_name,
    default_instance_name,
    directory_records,
    found_service,
    interfaces_for,
    published_addresses,
)


@pytest.mark.parametrize(("bound", "announced"), [
    (["127.0.0.1"], False),
    (["::1"], False),
    (["127.0.0.1", "::1"], False),
    (["0.0.0.0"], True),  # every interface: not loopback
    (["::", "0.0.0.0"], True),
    (["192.0.2.7"], True),
    (["fe80::1%eth0"], True),
])
def test_announced_by_default_unless_loopback_only(bound: list[str], announced: bool) -> None:
    assert DiscoveryConfig().announces(bound) is announced
    assert DiscoveryConfig(dns_sd=True).announces(bound) is True
    assert DiscoveryConfig(dns_sd=False).announces(bound) is False


MACHINE = ["127.0.0.1", "192.0.2.7", "198.51.100.3", "::1", "2001:db8::7", "fe80::1"]


def test_published_addresses() -> None:
    assert published_addresses(["127.0.0.1"], MACHINE) == ("127.0.0.1",)
    assert published_addresses(["192.0.2.7"], MACHINE) == ("192.0.2.7",)
    assert published_addresses(["fe80::1%eth0"], MACHINE) == ("fe80::1",)  # no zone
    # Every interface: the addresses a consumer elsewhere can use, not loopback's.
    assert published_addresses(["0.0.0.0"], MACHINE) == ("192.0.2.7", "198.51.100.3")
    assert published_addresses(["::", "0.0.0.0"], MACHINE) == (
        "2001:db8::7", "fe80::1", "192.0.2.7", "198.51.100.3")
    # A machine with loopback alone (a network namespace): loopback it is.
    assert published_addresses(["0.0.0.0"], ["127.0.0.1", "::1"]) == ("127.0.0.1",)


def test_the_interfaces_are_those_the_server_listens_on() -> None:
    assert interfaces_for(["127.0.0.1"], MACHINE) == Interfaces(addresses=("127.0.0.1",))
    assert interfaces_for(["192.0.2.7"], MACHINE) == Interfaces(addresses=("192.0.2.7",))
    # Every interface that has an address of the family, but loopback.
    assert interfaces_for(["0.0.0.0"], MACHINE) == Interfaces(
        addresses=("192.0.2.7", "198.51.100.3"))
    assert interfaces_for(["::"], MACHINE) == Interfaces(
        addresses=("2001:db8::7", "fe80::1"), ipv4=False, ipv6=True)
    assert interfaces_for(["::", "0.0.0.0"], MACHINE).ipv4 is True
    assert interfaces_for(["::1"], MACHINE) == Interfaces(addresses=("::1",), ipv4=False,
                                                          ipv6=True)


def test_a_server_is_announced_as_a_directory() -> None:
    records = directory_records(name="Lab bench 3", host_name="labpc.example.org",
                                port=8000, addresses=["192.0.2.7"], scheme="http")
    assert records.full_name == "Lab bench 3._wot._tcp.local."
    assert records.service_type == SERVICE_TYPE == "_wot._tcp.local."
    assert records.subtypes == (DIRECTORY_SUBTYPE,) == ("_directory._sub._wot._tcp.local.",)
    assert dict(records.txt) == {"td": "/.well-known/wot", "type": "Directory",
                                 "scheme": "http"}
    assert records.host_name == "labpc.local."
    assert (records.port, records.addresses) == (8000, ("192.0.2.7",))
    tls = directory_records(name="x", host_name="", port=8443, addresses=["::1"],
                            scheme="https")
    assert tls.txt["scheme"] == "https"
    assert tls.host_name == "trio-things.local."


@pytest.mark.parametrize("name", ["labpc", "Lab bench 3", "Prüfstand ü", "x" * 63])
def test_instance_names_are_free_text(name: str) -> None:
    assert check_instance_name(name) == name


@pytest.mark.parametrize(("name", "message"), [
    ("", "1 to 63 bytes"),
    ("x" * 64, "1 to 63 bytes"),
    ("ü" * 32, "1 to 63 bytes"),  # 64 bytes in UTF-8
    ("bench\n3", "control characters"),
    ("bench 3.1", "must not contain '.'"),
])
def test_bad_instance_names(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_instance_name(name)


def test_the_default_name_is_the_host_name() -> None:
    assert default_instance_name("labpc.example.org") == "labpc"
    assert default_instance_name("labpc") == "labpc"
    assert default_instance_name("") == "trio-things"
    assert default_instance_name("ü" * 40) == "ü" * 31  # cut to 63 bytes, whole characters


def txt(**values: str | None) -> dict[bytes, bytes | None]:
    return {key.encode(): None if value is None else value.encode()
            for key, value in values.items()}


def test_a_directory_found() -> None:
    found = found_service(full_name="bench._wot._tcp.local.", addresses=["127.0.0.1"],
                          port=8123, txt=txt(td="/.well-known/wot", type="Directory"))
    assert found == FoundService(name="bench", kind="Directory", url="http://127.0.0.1:8123/",
                                 td_url="http://127.0.0.1:8123/.well-known/wot")


def test_what_a_server_announces_is_what_a_browser_reads() -> None:
    records = directory_records(name="bench", host_name="labpc", port=8443,
                                addresses=["192.0.2.7"], scheme="https")
    found = found_service(full_name=records.full_name, addresses=records.addresses,
                          port=records.port, txt={k.encode(): v.encode()
                                                  for k, v in records.txt.items()})
    assert found == FoundService(name="bench", kind="Directory", url="https://192.0.2.7:8443/",
                                 td_url="https://192.0.2.7:8443/.well-known/wot")


def test_txt_keys_ignore_case_and_a_thing_is_the_default_type() -> None:
    found = found_service(full_name="pump._wot._tcp.local.", addresses=["192.0.2.9"],
                          port=80, txt={b"TD": b"/pump/", b"Scheme": b"HTTP"})
    assert found is not None
    assert (found.kind, found.td_url, found.url) == (
        "Thing", "http://192.0.2.9:80/pump/", "http://192.0.2.9:80/")


def test_a_directory_without_td_is_at_the_well_known_path() -> None:
    found = found_service(full_name="d._wot._tcp.local.", addresses=["192.0.2.9"], port=80,
                          txt=txt(type="Directory"))
    assert found is not None and found.td_url == "http://192.0.2.9:80/.well-known/wot"


@pytest.mark.parametrize(("addresses", "host"), [
    (["127.0.0.1", "192.0.2.7"], "192.0.2.7"),  # routable first
    (["fe80::1%eth0", "2001:db8::7", "192.0.2.7"], "192.0.2.7"),  # IPv4 before IPv6
    (["fe80::1%eth0", "::1", "2001:db8::7"], "[2001:db8::7]"),
    (["fe80::1%eth0", "::1"], "[::1]"),
    (["fe80::1%eth0"], "[fe80::1%25eth0]"),  # RFC 6874: the zone, escaped
    (["not an address", "192.0.2.7"], "192.0.2.7"),
])
def test_the_address_a_url_is_made_of(addresses: list[str], host: str) -> None:
    found = found_service(full_name="x._wot._tcp.local.", addresses=addresses, port=8000,
                          txt=txt(td="/.well-known/wot", type="Directory"))
    assert found is not None and found.url == f"http://{host}:8000/"


@pytest.mark.parametrize(("addresses", "port", "values"), [
    ([], 8000, {"td": "/x/"}),  # no address
    (["192.0.2.7"], None, {"td": "/x/"}),  # no port
    (["192.0.2.7"], 8000, {}),  # a Thing without its TD's path
    (["192.0.2.7"], 8000, {"td": "x/"}),  # not an absolute path
    (["192.0.2.7"], 8000, {"td": "//evil.example/x"}),  # another host's
    (["192.0.2.7"], 8000, {"td": "/x/", "scheme": "coap"}),  # not HTTP
])
def test_records_that_are_no_usable_wot_service(
        addresses: list[str], port: int | None, values: dict[str, str]) -> None:
    assert found_service(full_name="x._wot._tcp.local.", addresses=addresses, port=port,
                         txt=txt(**values)) is None


def test_discovery_in_the_configuration_file(tmp_path: Path) -> None:
    path = tmp_path / "things.toml"
    path.write_text("[server.discovery]\ndns_sd = true\nname = \"Lab bench 3\"\n")
    assert load_config(path).discovery == DiscoveryConfig(dns_sd=True, name="Lab bench 3")
    path.write_text("[server]\nport = 0\n")
    assert load_config(path).discovery == DiscoveryConfig()
    assert ServerConfig().discovery.dns_sd is None  # decided from the address bound


@pytest.mark.parametrize(("table", "message"), [
    ("dns_sd = true\nnme = 'x'", "[server.discovery]: unknown key 'nme' (did you mean 'name'?)"),
    ("dns_sd = 'yes'", "[server.discovery]: dns_sd must be true or false, not 'yes'"),
    ("name = 'bench 3.1'", "[server.discovery]: name 'bench 3.1' must not contain '.'"),
    ("name = ''", "[server.discovery]: name '' must be 1 to 63 bytes long"),
    ("name = 3", "[server.discovery]: name must be a string, not int"),
])
def test_bad_discovery_tables_are_named(tmp_path: Path, table: str, message: str) -> None:
    path = tmp_path / "things.toml"
    path.write_text(f"[server.discovery]\n{table}\n")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert message in str(raised.value)


def test_discovery_must_be_a_table(tmp_path: Path) -> None:
    path = tmp_path / "things.toml"
    path.write_text("[server]\ndiscovery = true\n")
    with pytest.raises(ConfigError, match=r"\[discovery\] must be a table"):
        load_config(path)
