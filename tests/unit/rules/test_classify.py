"""Classification: routes, buckets, path families, object type names, rule matches (pure)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from proxy.rules.loader import (
    CounterRule,
    ObjectCacheRule,
    RespondRule,
    Rules,
    SearchIndexRule,
    UntilEndOf,
    WriteBehindRule,
    load_rules,
    parse_rules,
)
from proxy.rules.paths import canonical_segments

DEFAULT = Path(__file__).parents[3] / "rules" / "default.yaml"

TEXT = """
version: 1
object_types: {bookings: "2-50158943", mock_exams: "2-50158913"}
limits: {tier: professional, safety_margin: 1}
routes:
  - name: booking-search
    match: {method: POST, path: "/crm/v3/objects/bookings/search"}
    priority: interactive
    max_wait: 5s
  - name: any-search
    match: {method: POST, path: "/crm/v3/objects/{objectType}/search"}
    priority: background
  - name: contact-read
    match: {method: GET, path: "/crm/v3/objects/contacts/{contactId}"}
    priority: interactive
  - name: deal-by-id-template
    match: {method: "*", path: "/crm/v3/objects/0-3/{dealId}"}
    buckets: [daily]
  - name: v4-default-association
    match: {method: PUT, path: "/crm/v4/objects/{from}/{fromId}/associations/default/{to}/{toId}"}
rules:
  - name: stub-first
    type: respond
    match: {method: POST, path: "/crm/v3/objects/2-41701559/search"}
    body: {total: 0, results: []}
  - name: stub-second
    type: respond
    match: {path: "/crm/v3/objects/2-41701559/search"}
    status: 204
  - name: disabled
    type: respond
    enabled: false
    match: {path: "/crm/v3/objects/notes/{id}"}
  - name: dup
    type: search_index
    object_type: bookings
    key: [contact_id, exam_date]
    when: {is_active: Active}
    ttl: {positive: {until_end_of: exam_date}, negative: 3h}
  - name: seats
    type: counter
    object_type: mock_exams
    property: total_bookings
    source: {association: {from_type: bookings, to_type: mock_exams}}
  - name: exam-cache
    type: object_cache
    object_type: mock_exams
    ttl: 60s
  - name: notes-async
    type: write_behind
    match: {path: "/crm/v3/objects/notes"}
    kind: create
"""


@pytest.fixture(scope="module")
def rules() -> Rules:
    return parse_rules(TEXT, "t.yaml")


def route_name(rules: Rules, method: str, path: str) -> str | None:
    route = rules.classify(method, path).route
    return route.name if route else None


# -- families and names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/crm/v3/objects/bookings/search",
        "/crm/v3/objects/2-50158943/search",
        "/crm/objects/2026-03/2-50158943/search",
        "/crm/objects/2025-09/BOOKINGS/search",
        "/crm/v3/objects/2-50158943/search/",
        "/crm/v3/objects/2-50158943/search?hapikey=x",
    ],
)
def test_v3_and_date_versioned_paths_match_one_template(rules: Rules, path: str) -> None:
    found = rules.classify("POST", path)
    assert found.route is not None and found.route.name == "booking-search"
    assert found.priority == "interactive"
    assert found.max_wait_ms == 5_000 and found.max_wait_s == 5.0
    assert found.object_type == "2-50158943"
    assert found.buckets == ("search", "daily")


@pytest.mark.parametrize(
    "path",
    ["/crm/v3/objects/contacts/7", "/crm/v3/objects/0-1/7", "/crm/objects/2026-03/Contact/7"],
)
def test_names_and_ids_are_one_object_type(rules: Rules, path: str) -> None:
    assert route_name(rules, "GET", path) == "contact-read"


def test_template_written_with_an_id_matches_a_name(rules: Rules) -> None:
    assert route_name(rules, "PATCH", "/crm/v3/objects/deals/9") == "deal-by-id-template"
    assert route_name(rules, "GET", "/crm/objects/2026-03/0-3/9") == "deal-by-id-template"


def test_placeholders_capture_canonical_object_types(rules: Rules) -> None:
    found = rules.classify("POST", "/crm/v3/objects/Companies/search")
    assert found.route is not None and found.route.name == "any-search"
    assert rules.classify("GET", "/crm/v3/objects/mock_exams/42").matches[1].params == {
        "objectType": "2-50158913",
        "objectId": "42",
    }


def test_ids_are_not_mistaken_for_object_type_names(rules: Rules) -> None:
    # Only object-type positions are canonicalised: an id that happens to be a name stays as is.
    found = rules.classify("GET", "/crm/v3/objects/mock_exams/notes")
    assert found.action is not None and found.action.params["objectId"] == "notes"


@pytest.mark.parametrize(
    "path",
    [
        "/crm/v4/objects/contacts/1/associations/default/deals/2",
        "/crm/objects/2026-03/0-1/1/associations/default/Deal/2",
        "/crm/associations/2026-03/0-1/1/associations/default/0-3/2",
    ],
)
def test_v4_object_associations_and_their_dated_paths_are_one_family(
    rules: Rules, path: str
) -> None:
    found = rules.classify("PUT", path)
    assert found.route is not None and found.route.name == "v4-default-association"
    assert found.object_type == "0-1"
    params = found.route.match.params("PUT", canonical_segments(path, {}))
    assert params == {"from": "0-1", "fromId": "1", "to": "0-3", "toId": "2"}


def test_v3_object_associations_are_their_own_family(rules: Rules) -> None:
    # v3's PUT .../associations/{to}/{toId}/{type} is not the dated (v4-shaped) call.
    found = rules.classify("PUT", "/crm/v3/objects/0-1/1/associations/default/0-3/2")
    assert found.route is None


def test_dated_association_batches_and_properties(rules: Rules) -> None:
    assert canonical_segments("/crm/associations/2026-03/contacts/deals/batch/read", {}) == (
        canonical_segments("/crm/v4/associations/0-1/0-3/batch/read", {})
    )
    assert canonical_segments("/crm/properties/2026-03/contacts", {}) == (
        canonical_segments("/crm/v3/properties/0-1", {})
    )


def test_methods_must_match(rules: Rules) -> None:
    assert route_name(rules, "GET", "/crm/v3/objects/bookings/search") is None
    assert route_name(rules, "post", "/crm/v3/objects/bookings/search") == "booking-search"


def test_no_route_gets_defaults(rules: Rules) -> None:
    found = rules.classify("GET", "/crm/v3/owners")
    assert found.route is None
    assert found.priority == rules.defaults.priority == "default"
    assert found.max_wait_ms == 20_000
    assert found.object_type is None and found.action is None and found.matches == ()


# -- buckets --------------------------------------------------------------------------------------


def test_search_is_exempt_from_general(rules: Rules) -> None:
    assert rules.classify("POST", "/crm/v3/objects/0-1/search").buckets == ("search", "daily")
    assert rules.classify("POST", "/crm/objects/2026-03/0-1/search").buckets == ("search", "daily")
    # Only a POST is a search; a GET of an object called "search" is an ordinary call.
    assert rules.classify("GET", "/crm/v3/objects/0-1/search").buckets == ("general", "daily")


@pytest.mark.parametrize(
    "path",
    [
        "/crm/v4/associations/contacts/deals/batch/create",
        "/crm/v3/associations/contacts/deals/batch/read",
        "/crm/associations/2026-03/0-1/0-3/batch/archive",
    ],
)
def test_association_batches_are_exempt_from_general(rules: Rules, path: str) -> None:
    assert rules.classify("POST", path).buckets == ("daily",)
    with_limit = parse_rules("version: 1\nlimits: {associations: {}}\n", "t.yaml")
    assert with_limit.classify("POST", path).buckets == ("associations", "daily")


def test_everything_else_draws_from_general(rules: Rules) -> None:
    assert rules.classify("POST", "/crm/v3/objects/0-1").buckets == ("general", "daily")
    assert rules.classify("PUT", "/crm/v4/objects/0-1/1/associations/default/0-3/2").buckets == (
        "general",
        "daily",
    )


def test_route_bucket_override(rules: Rules) -> None:
    assert rules.classify("DELETE", "/crm/v3/objects/deals/9").buckets == ("daily",)


# -- first match wins -----------------------------------------------------------------------------


def test_first_route_wins(rules: Rules) -> None:
    # Both booking-search and any-search match; the earlier one is chosen.
    assert route_name(rules, "POST", "/crm/v3/objects/bookings/search") == "booking-search"
    assert route_name(rules, "POST", "/crm/v3/objects/0-1/search") == "any-search"


def test_first_rule_wins(rules: Rules) -> None:
    found = rules.classify("POST", "/crm/v3/objects/2-41701559/search")
    assert found.action is not None and found.action.rule.name == "stub-first"
    assert [m.rule.name for m in found.matches] == ["stub-first", "stub-second"]
    assert isinstance(found.action.rule, RespondRule) and found.action.rule.body == {
        "total": 0,
        "results": [],
    }


def test_disabled_rules_do_not_match(rules: Rules) -> None:
    assert rules.classify("GET", "/crm/v3/objects/notes/5").matches == ()


# -- what each rule type concerns -----------------------------------------------------------------


def roles(rules: Rules, method: str, path: str) -> list[tuple[str, str]]:
    return [(m.rule.name, m.role) for m in rules.classify(method, path).matches]


def test_search_index_rule_endpoints(rules: Rules) -> None:
    assert roles(rules, "POST", "/crm/objects/2026-03/bookings/search") == [("dup", "lookup")]
    assert roles(rules, "POST", "/crm/v3/objects/2-50158943") == [("dup", "create")]
    assert roles(rules, "POST", "/crm/v3/objects/2-50158943/batch/create") == [("dup", "create")]
    # A cancellation is both a change to the index and to the counter.
    assert roles(rules, "PATCH", "/crm/v3/objects/2-50158943/1") == [
        ("dup", "update"),
        ("seats", "update"),
    ]
    assert roles(rules, "DELETE", "/crm/v3/objects/bookings/1") == [
        ("dup", "delete"),
        ("seats", "delete"),
    ]


def test_counter_and_cache_endpoints(rules: Rules) -> None:
    found = rules.classify("GET", "/crm/v3/objects/mock_exams/9")
    assert [(m.rule.name, m.role) for m in found.matches] == [
        ("seats", "overlay"),
        ("exam-cache", "read"),
    ]
    # The counter only watches; the cache answers.
    assert found.action is not None and found.action.rule.name == "exam-cache"
    assert roles(rules, "PATCH", "/crm/v3/objects/2-50158913/9") == [
        ("seats", "absorb"),
        ("exam-cache", "update"),
    ]
    assert roles(rules, "POST", "/crm/v3/objects/2-50158913/search") == [("seats", "overlay")]


@pytest.mark.parametrize(
    ("method", "path", "role"),
    [
        ("PUT", "/crm/v4/objects/bookings/1/associations/default/mock_exams/9", "associate"),
        ("PUT", "/crm/associations/2026-03/2-50158943/1/associations/default/2-50158913/9",
         "associate"),
        ("PUT", "/crm/v4/objects/2-50158943/1/associations/2-50158913/9", "associate"),
        ("PUT", "/crm/v3/objects/2-50158943/1/associations/2-50158913/9/booking_to_exam",
         "associate"),
        ("POST", "/crm/v4/associations/2-50158943/2-50158913/batch/associate/default", "associate"),
        ("DELETE", "/crm/v4/objects/2-50158943/1/associations/2-50158913/9", "dissociate"),
        ("POST", "/crm/v4/associations/2-50158943/2-50158913/batch/archive", "dissociate"),
    ],
)  # fmt: skip
def test_counter_association_source(rules: Rules, method: str, path: str, role: str) -> None:
    found = rules.classify(method, path)
    assert [(m.rule.name, m.role) for m in found.matches] == [("seats", role)]
    assert found.action is None  # forwarded, then counted
    assert found.matches[0].params["fromObjectType"] == "2-50158943"


def test_association_in_the_other_direction_is_not_the_source(rules: Rules) -> None:
    path = "/crm/v4/objects/2-50158913/9/associations/default/2-50158943/1"
    assert rules.classify("PUT", path).matches == ()


def test_write_behind_endpoint(rules: Rules) -> None:
    found = rules.classify("POST", "/crm/v3/objects/notes")
    assert found.action is not None and found.action.role == "write"
    assert isinstance(found.action.rule, WriteBehindRule) and found.action.rule.kind == "create"
    # The kind implies the method when `match` leaves it out.
    assert rules.classify("PUT", "/crm/v3/objects/notes").matches == ()


# -- the model ------------------------------------------------------------------------------------


def test_rule_models(rules: Rules) -> None:
    dup = rules.rule("dup")
    assert isinstance(dup, SearchIndexRule)
    assert dup.object_type == "2-50158943" and dup.key == ("contact_id", "exam_date")
    assert dup.when == {"is_active": "Active"}
    assert dup.positive_ttl == UntilEndOf("exam_date", 86_400_000, "UTC")
    assert dup.negative_ttl_ms == 3 * 3_600_000
    seats = rules.rule("seats")
    assert isinstance(seats, CounterRule)
    assert seats.booking_object_type == "2-50158943" and seats.ttl_ms == 90 * 86_400_000
    assert seats.patch == "absorb" and seats.cancelled_values == ()
    cache = rules.rule("exam-cache")
    assert isinstance(cache, ObjectCacheRule) and cache.ttl_ms == 60_000
    with pytest.raises(KeyError):
        rules.rule("nope")


# -- limits ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tier", "general", "daily", "associations"),
    [
        ("starter", 100, 250_000, 100),
        ("professional", 190, 625_000, 150),
        ("enterprise", 190, 1_000_000, 150),
        ("addon", 250, 2_000_000, 200),
    ],
)
def test_tier_limits(tier: str, general: int, daily: int, associations: int) -> None:
    text = f"version: 1\nlimits: {{tier: {tier}, safety_margin: 1, associations: {{}}}}\n"
    limits = parse_rules(text, "t.yaml").limits
    assert limits.effective("general") == (general, 10_000)
    assert limits.effective("daily") == (daily, 86_400_000)
    assert limits.effective("search") == (5, 1_000)
    assert limits.effective("associations") == (associations, 10_000)


def test_safety_margin_and_overrides() -> None:
    limits = parse_rules(
        textwrap.dedent("""
        version: 1
        limits:
          tier: starter
          safety_margin: 0.9
          general: {window: 5s}
          search: {limit: 4}
          daily: {limit: 1000, timezone: America/New_York}
          expected_replicas: 4
        """),
        "t.yaml",
    ).limits
    assert limits.effective("general") == (90, 5_000)
    assert limits.effective("search") == (3, 1_000)  # floor(4 * 0.9), never rounded up
    assert limits.effective("daily") == (900, 86_400_000)
    assert limits.daily_timezone == "America/New_York"
    assert limits.local_share("general") == (22, 5_000)
    assert limits.local_share("search") == (1, 1_000)  # at least one call
    assert limits.buckets == ("general", "search", "daily")
    with pytest.raises(KeyError):
        limits.effective("associations")
    with pytest.raises(KeyError):
        limits.effective("nope")


def test_default_rules_classify_the_booking_flow() -> None:
    rules = load_rules(DEFAULT)
    expect = [
        ("POST", "/crm/v3/objects/2-50158943/search", "interactive", "booking-duplicate"),
        ("POST", "/crm/v3/objects/2-41701559/search", "interactive", "enrollments-unused"),
        ("GET", "/crm/v3/objects/2-50158913/1", "interactive", "exam-cache"),
        ("GET", "/crm/v3/objects/0-1/1", "interactive", None),
        ("POST", "/crm/v3/objects/2-50158943", "interactive", None),
        ("PUT", "/crm/v4/objects/0-1/1/associations/default/2-50158943/2", "background",
         "contact-booking-association-async"),
        ("PUT", "/crm/v4/objects/2-50158943/2/associations/default/2-50158913/3", "background",
         "booking-exam-association-async"),
        ("PATCH", "/crm/v3/objects/2-50158913/3", "default", "exam-total-bookings-async"),
        ("POST", "/crm/v3/objects/0-46", "background", "notes-async"),
        ("POST", "/crm/v3/objects/0-46/batch/create", "background", None),
    ]  # fmt: skip
    for method, path, priority, action in expect:
        found = rules.classify(method, path)
        assert found.priority == priority, (method, path)
        assert (found.action.rule.name if found.action else None) == action, (method, path)
    booking_exam = rules.classify("PUT", expect[6][1])
    assert [m.rule.name for m in booking_exam.matches] == [
        "exam-counter",
        "booking-exam-association-async",
    ]
