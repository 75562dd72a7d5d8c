"""Which calls may share an answer: CRM reads of one credential, never writes or other paths."""

from __future__ import annotations

from proxy.upstream.singleflight import flight_key

CONTACT = "/crm/v3/objects/contacts/1"
SEARCH = "/crm/v3/objects/2-50158943/search"


def test_reads_of_one_credential_meet_under_one_key() -> None:
    assert flight_key("c1", "GET", CONTACT, CONTACT, b"") == flight_key(
        "c1", "GET", CONTACT, CONTACT, b""
    )
    assert flight_key("c1", "POST", SEARCH, SEARCH, b'{"a":1}') is not None


def test_what_differs_keeps_calls_apart() -> None:
    base = flight_key("c1", "GET", CONTACT, CONTACT, b"")
    assert base != flight_key("c2", "GET", CONTACT, CONTACT, b"")
    assert base != flight_key("c1", "GET", CONTACT + "?properties=a", CONTACT, b"")
    assert flight_key("c1", "POST", SEARCH, SEARCH, b'{"a":1}') != flight_key(
        "c1", "POST", SEARCH, SEARCH, b'{"a":2}'
    )


def test_writes_calls_without_a_token_and_other_paths_go_alone() -> None:
    assert flight_key(None, "GET", CONTACT, CONTACT, b"") is None
    assert flight_key("", "GET", CONTACT, CONTACT, b"") is None
    created = "/crm/v3/objects/contacts"
    assert flight_key("c1", "POST", created, created, b"{}") is None
    assert flight_key("c1", "PATCH", CONTACT, CONTACT, b"{}") is None
    assert flight_key("c1", "DELETE", CONTACT, CONTACT, b"") is None
    assert flight_key("c1", "GET", "/files/v3/files/1", "/files/v3/files/1", b"") is None
