"""Egress policy without the network: host patterns, address classes, request parsing, refusals."""

from __future__ import annotations

import base64
import ipaddress
import json
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.config import load_settings
from chalicelib.errors import SettingsInvalid
from runner_container.egress import (
    AddressClass,
    EgressPolicy,
    FetchError,
    FetchOutcome,
    FetchRequest,
    FetchResponse,
    classify_address,
    host_allowed,
    host_matches,
    target_allowed,
)

LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
TLD = st.from_regex(r"[a-z]{2,6}", fullmatch=True)
HOSTNAME = st.builds(lambda labels, tld: ".".join([*labels, tld]), st.lists(LABEL, min_size=1, max_size=3), TLD)


class RecordingResolver:
    """Answers fixed addresses and remembers every lookup (it never touches the network)."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = list(addresses)
        self.lookups: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append((host, port))
        return self.addresses


def refusal(policy: EgressPolicy, url: str, egress=("api.example.com",), **kwargs) -> FetchError:
    with pytest.raises(FetchError) as caught:
        policy.fetch(FetchRequest(url=url), egress, **kwargs)
    return caught.value


# --- host patterns ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "host", "expected"),
    [
        ("api.example.com", "api.example.com", True),
        ("API.Example.com", "api.EXAMPLE.com.", True),
        ("api.example.com", "example.com", False),
        ("api.example.com", "xapi.example.com", False),
        ("*.example.com", "a.example.com", True),
        ("*.example.com", "a.b.example.com", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "badexample.com", False),
        ("*.example.com", "example.com.evil.net", False),
        ("*", "example.com", False),
        ("*.", "example.com", False),
        ("a.*.com", "a.b.com", False),
        ("*example.com", "badexample.com", False),
        ("*.0.0.1", "127.0.0.1", False),
        ("127.0.0.1", "127.0.0.1", True),
        ("", "example.com", False),
        ("example.com", "", False),
    ],
)
def test_host_matches_exact_names_and_wildcard_subdomains_only(pattern, host, expected):
    assert host_matches(pattern, host) is expected


@given(HOSTNAME, LABEL)
def test_wildcard_matches_every_subdomain_but_never_the_apex(suffix, label):
    assert host_matches(f"*.{suffix}", f"{label}.{suffix}")
    assert host_matches(f"*.{suffix}", f"{label}.{label}.{suffix}")
    assert not host_matches(f"*.{suffix}", suffix)


@given(HOSTNAME, HOSTNAME)
def test_exact_pattern_matches_only_the_same_name_in_any_case(pattern, host):
    assert host_matches(pattern, pattern.upper())
    assert host_matches(pattern, host) is (pattern == host)


@given(HOSTNAME)
def test_an_empty_allowlist_allows_nothing(host):
    assert not host_allowed(host, [])


# --- address classes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("8.8.8.8", AddressClass.PUBLIC),
        ("2001:4860:4860::8888", AddressClass.PUBLIC),
        ("::ffff:8.8.8.8", AddressClass.PUBLIC),
        ("127.0.0.1", AddressClass.LOOPBACK),
        ("127.8.9.10", AddressClass.LOOPBACK),
        ("::1", AddressClass.LOOPBACK),
        ("::ffff:127.0.0.1", AddressClass.LOOPBACK),
        ("10.1.2.3", AddressClass.PRIVATE),
        ("172.16.0.1", AddressClass.PRIVATE),
        ("192.168.1.1", AddressClass.PRIVATE),
        ("fc00::1", AddressClass.PRIVATE),
        ("169.254.169.254", AddressClass.METADATA),
        ("fd00:ec2::254", AddressClass.METADATA),
        ("::ffff:169.254.169.254", AddressClass.METADATA),
        ("169.254.1.1", AddressClass.LINK_LOCAL),
        ("fe80::1", AddressClass.LINK_LOCAL),
        ("fe80::1%2", AddressClass.LINK_LOCAL),
        ("224.0.0.1", AddressClass.MULTICAST),
        ("ff02::1", AddressClass.MULTICAST),
        ("0.0.0.0", AddressClass.UNSPECIFIED),
        ("::", AddressClass.UNSPECIFIED),
        ("100.64.0.1", AddressClass.RESERVED),
    ],
)
def test_classify_address_names_where_an_address_points(address, expected):
    assert classify_address(ipaddress.ip_address(address)) is expected


@pytest.mark.parametrize("address", ["240.0.0.1", "255.255.255.255", "192.0.2.1", "198.18.0.1", "2001:db8::1"])
def test_special_purpose_ranges_are_never_public(address):
    assert classify_address(ipaddress.ip_address(address)) is not AddressClass.PUBLIC


@given(st.integers(min_value=0, max_value=2**24 - 1))
def test_every_address_in_ten_slash_eight_is_private(offset):
    address = ipaddress.IPv4Address(int(ipaddress.IPv4Address("10.0.0.0")) + offset)

    assert classify_address(address) is AddressClass.PRIVATE


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_an_ipv4_mapped_address_is_judged_like_its_ipv4_address(value):
    v4 = ipaddress.IPv4Address(value)
    mapped = ipaddress.IPv6Address(f"::ffff:{v4}")

    assert classify_address(mapped) is classify_address(v4)


# --- request parsing --------------------------------------------------------------------------


def test_parse_fills_defaults_for_a_bare_url():
    assert FetchRequest.parse(b'{"url": "https://api.example.com/x"}') == FetchRequest(url="https://api.example.com/x")


def test_parse_reads_method_headers_and_body():
    raw = json.dumps(
        {"url": "https://a.example.com", "method": "post", "headers": {"X-A": "1"}, "body_b64": "aGk="}
    ).encode()

    assert FetchRequest.parse(raw) == FetchRequest(
        url="https://a.example.com", method="POST", headers=(("X-A", "1"),), body=b"hi"
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{", "http_fetch request is not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b"{}", "needs a string 'url'"),
        (b'{"url": 5}', "needs a string 'url'"),
        (b'{"url": "http://a", "method": "CONNECT"}', "http_fetch method must be one of"),
        (b'{"url": "http://a", "headers": []}', "headers must map strings to strings"),
        (b'{"url": "http://a", "headers": {"x": 1}}', "headers must map strings to strings"),
        (b'{"url": "http://a", "headers": {"bad name": "x"}}', "header name 'bad name' is not a valid token"),
        (b'{"url": "http://a", "headers": {"X-A\\n": "x"}}', "header name 'X-A\\n' is not a valid token"),
        (b'{"url": "http://a", "headers": {"x": "a\\r\\nb: c"}}', "header 'x' has a value with CR, LF or NUL"),
        (b'{"url": "http://a", "body_b64": 5}', "'body_b64' must be a string or null"),
        (b'{"url": "http://a", "body_b64": "***"}', "'body_b64' is not valid base64"),
    ],
)
def test_parse_rejects_malformed_requests_as_failed(raw, message):
    with pytest.raises(FetchError) as caught:
        FetchRequest.parse(raw)

    assert caught.value.outcome is FetchOutcome.FAILED
    assert message in caught.value.message


def test_parse_refuses_a_body_over_the_cap():
    raw = json.dumps({"url": "http://a", "body_b64": base64.b64encode(b"x" * 101).decode()}).encode()

    with pytest.raises(FetchError, match="request body exceeds 100 bytes"):
        FetchRequest.parse(raw, max_body_bytes=100)
    assert FetchRequest.parse(raw, max_body_bytes=101).body == b"x" * 101


def test_results_reach_the_guest_in_the_documented_json_shapes():
    response = FetchResponse(status=200, headers={"content-type": "text/plain"}, body=b"hi")
    error = FetchError(FetchOutcome.TIMEOUT, "too slow")

    assert json.loads(response.to_json()) == {
        "status": 200,
        "headers": {"content-type": "text/plain"},
        "body_b64": "aGk=",
    }
    assert json.loads(error.to_json()) == {"error": {"code": "FETCH_TIMEOUT", "message": "too slow"}}
    assert [outcome.value for outcome in FetchOutcome] == [1, 2, 3]


# --- refusals before any connection -----------------------------------------------------------


def test_default_policy_denies_everything_without_resolving():
    resolver = RecordingResolver("93.184.216.34")
    error = refusal(EgressPolicy(resolver=resolver), "https://api.example.com/")

    assert error.outcome is FetchOutcome.DENIED
    assert error.message == "host 'api.example.com' is not in the platform's egress allowlist"
    assert resolver.lookups == []


def test_host_missing_from_the_manifest_egress_is_denied_without_resolving():
    resolver = RecordingResolver("93.184.216.34")
    policy = EgressPolicy(allowlist=("*.example.com",), resolver=resolver)

    error = refusal(policy, "https://other.example.com/", egress=("api.example.com",))

    assert error.message == "host 'other.example.com' is not in the extension's egress list"
    assert resolver.lookups == []


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://api.example.com/x", "only http and https URLs may be fetched, not 'ftp'"),
        ("file:///etc/passwd", "only http and https URLs may be fetched, not 'file'"),
        ("/relative", "only http and https URLs may be fetched, not 'a relative URL'"),
        ("https://user:pw@api.example.com/", "URLs with credentials (user:password@) are refused"),
        ("https://user@api.example.com/", "URLs with credentials (user:password@) are refused"),
    ],
)
def test_only_plain_http_and_https_urls_are_fetched(url, message):
    policy = EgressPolicy(allowlist=("api.example.com",), resolver=RecordingResolver("93.184.216.34"))

    error = refusal(policy, url)

    assert (error.outcome, error.message) == (FetchOutcome.DENIED, message)


def test_invalid_port_fails():
    policy = EgressPolicy(allowlist=("api.example.com",), resolver=RecordingResolver("93.184.216.34"))

    assert "invalid port" in refusal(policy, "https://api.example.com:99999/").message


@pytest.mark.parametrize(
    ("platform", "manifest", "url", "message"),
    [
        (
            ("api.example.com",),
            ("api.example.com",),
            "https://api.example.com:8443/",
            "port 8443 of host 'api.example.com' is not in the extension's egress list "
            "(an entry without a port allows 80 and 443)",
        ),
        (
            ("api.example.com",),
            ("api.example.com:8443",),
            "https://api.example.com:8443/",
            "port 8443 of host 'api.example.com' is not in the platform's egress allowlist "
            "(an entry without a port allows 80 and 443)",
        ),
        (
            ("api.example.com:8443",),
            ("api.example.com",),
            "http://api.example.com:22/",
            "port 22 of host 'api.example.com' is not in the extension's egress list "
            "(an entry without a port allows 80 and 443)",
        ),
        (
            ("*.example.com:8443",),
            ("api.example.com",),
            "https://api.example.com/",
            "port 443 of host 'api.example.com' is not in the platform's egress allowlist "
            "(an entry without a port allows 80 and 443)",
        ),
        (
            ("api.example.com",),
            ("api.example.com",),
            "http://api.example.com:0/",
            "port 0 of host 'api.example.com' is not in the extension's egress list "
            "(an entry without a port allows 80 and 443)",
        ),
    ],
)
def test_a_port_is_denied_unless_both_lists_allow_it_without_resolving(platform, manifest, url, message):
    resolver = RecordingResolver("93.184.216.34")
    policy = EgressPolicy(allowlist=platform, resolver=resolver, timeout_ms=100)

    error = refusal(policy, url, egress=manifest)

    assert (error.outcome, error.message) == (FetchOutcome.DENIED, message)
    assert resolver.lookups == []


@pytest.mark.parametrize(
    ("entries", "host", "port", "expected"),
    [
        (["api.example.com"], "api.example.com", 80, True),
        (["api.example.com"], "api.example.com", 443, True),
        (["api.example.com"], "api.example.com", 8080, False),
        (["api.example.com:8080"], "api.example.com", 8080, True),
        (["api.example.com:8080"], "api.example.com", 443, False),
        (["api.example.com:8080", "api.example.com"], "api.example.com", 443, True),
        (["*.example.com:8443"], "a.b.example.com", 8443, True),
        (["*.example.com:8443"], "example.com", 8443, False),
        (["127.0.0.1:9000"], "127.0.0.1", 9000, True),
        (["[::1]:9000"], "::1", 9000, True),
        (["[::1]"], "::1", 443, True),
        (["::1"], "::1", 443, True),
        (["::1"], "::1", 1, False),
        (["api.example.com:"], "api.example.com", 443, False),
        (["api.example.com:http"], "api.example.com", 80, False),
        (["api.example.com:65536"], "api.example.com", 65536, False),
        ([], "api.example.com", 443, False),
    ],
)
def test_an_entry_allows_its_port_or_else_80_and_443(entries, host, port, expected):
    assert target_allowed(host, port, entries) is expected


@pytest.mark.parametrize("entry", ["api.example.com:", "api.example.com:0", "api.example.com:70000", "a.com:x", "[::1"])
def test_a_platform_allowlist_entry_with_a_bad_port_stops_the_runner_from_starting(entry):
    settings = load_settings({"EXT_EGRESS_ALLOWLIST": f"ok.example.com,{entry}"})

    with pytest.raises(SettingsInvalid, match="EXT_EGRESS_ALLOWLIST"):
        EgressPolicy.from_settings(settings)


@pytest.mark.parametrize(
    ("addresses", "kind"),
    [
        (("127.0.0.1",), "loopback"),
        (("10.0.0.7",), "private"),
        (("169.254.169.254",), "cloud metadata"),
        (("93.184.216.34", "192.168.0.1"), "private"),
        (("fe80::1",), "link-local"),
    ],
)
def test_a_name_resolving_to_any_non_public_address_is_denied(addresses, kind):
    policy = EgressPolicy(allowlist=("api.example.com",), resolver=RecordingResolver(*addresses))

    error = refusal(policy, "https://api.example.com/")

    assert error.outcome is FetchOutcome.DENIED
    assert f"resolves to a {kind} address" in error.message


def test_cloud_metadata_stays_refused_even_when_private_addresses_are_allowed():
    resolver = RecordingResolver("169.254.169.254")
    policy = EgressPolicy(allowlist=("api.example.com",), allow_private=True, resolver=resolver)

    assert "cloud metadata" in refusal(policy, "http://api.example.com/").message
    assert resolver.lookups == [("api.example.com", 80)]


def test_a_name_that_does_not_resolve_fails():
    def failing(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    policy = EgressPolicy(allowlist=("api.example.com",), resolver=failing)

    error = refusal(policy, "https://api.example.com/")

    assert (error.outcome, error.message) == (
        FetchOutcome.FAILED,
        "could not resolve 'api.example.com': Name or service not known",
    )


def test_a_name_the_system_resolver_cannot_encode_fails_cleanly():
    # A label over 63 characters still matches a wildcard; socket.getaddrinfo raises UnicodeError for it.
    policy = EgressPolicy(allowlist=("*.example.com",))

    error = refusal(policy, f"https://{'a' * 64}.example.com/", egress=("*.example.com",))

    assert error.outcome is FetchOutcome.FAILED
    assert error.message.startswith(f"could not resolve '{'a' * 64}.example.com'")


class StalledResolver:
    """A name lookup that hangs until released (a resolver that never answers)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.returned = threading.Event()

    def __call__(self, host: str, port: int) -> list[str]:
        self.release.wait(5)
        self.returned.set()
        return ["93.184.216.34"]


def wait_for_lookups_to_drain() -> None:
    """Until a fresh lookup is accepted again (abandoned lookups end moments after they are released)."""
    policy = EgressPolicy(allowlist=("api.example.com",), resolver=RecordingResolver("127.0.0.1"))
    for _ in range(500):
        if "too many name lookups" not in refusal(policy, "https://api.example.com/").message:
            return
        time.sleep(0.01)
    raise AssertionError("abandoned name lookups did not end")


def test_a_name_lookup_that_hangs_ends_at_the_fetch_deadline():
    resolver = StalledResolver()
    policy = EgressPolicy(allowlist=("api.example.com",), resolver=resolver, timeout_ms=200)
    try:
        error = refusal(policy, "https://api.example.com/")

        assert error.outcome is FetchOutcome.TIMEOUT
        assert not resolver.returned.is_set()
    finally:
        resolver.release.set()


def test_abandoned_name_lookups_in_flight_are_capped():
    resolver = StalledResolver()
    policy = EgressPolicy(allowlist=("api.example.com",), resolver=resolver, timeout_ms=5)
    try:
        outcomes = [refusal(policy, "https://api.example.com/").outcome for _ in range(32)]
        error = refusal(policy, "https://api.example.com/")

        assert set(outcomes) == {FetchOutcome.TIMEOUT}
        assert (error.outcome, error.message) == (
            FetchOutcome.FAILED,
            "too many name lookups are in flight; try again later",
        )
    finally:
        resolver.release.set()
        wait_for_lookups_to_drain()


def test_no_time_left_in_the_call_is_a_timeout_before_resolving():
    resolver = RecordingResolver("93.184.216.34")
    policy = EgressPolicy(allowlist=("api.example.com",), resolver=resolver)

    error = refusal(policy, "https://api.example.com/", remaining_s=0.0)

    assert error.outcome is FetchOutcome.TIMEOUT
    assert resolver.lookups == []


def test_fetch_json_answers_a_refusal_with_its_code_and_error_json():
    policy = EgressPolicy(resolver=RecordingResolver("93.184.216.34"))

    code, payload = policy.fetch_json(b'{"url": "https://api.example.com/"}', ["api.example.com"])

    assert code == 1
    assert json.loads(payload)["error"]["code"] == "EGRESS_DENIED"


def test_policy_from_settings_reads_the_egress_and_fetch_settings():
    settings = load_settings(
        {
            "EXT_EGRESS_ALLOWLIST": "api.example.com, *.cdn.example.com",
            "EXT_EGRESS_ALLOW_PRIVATE": "true",
            "EXT_HTTP_FETCH_MAX_BYTES": "4096",
            "EXT_HTTP_FETCH_TIMEOUT_MS": "750",
        }
    )

    policy = EgressPolicy.from_settings(settings)

    assert (policy.allowlist, policy.allow_private, policy.max_response_bytes, policy.timeout_ms) == (
        ("api.example.com", "*.cdn.example.com"),
        True,
        4096,
        750,
    )
