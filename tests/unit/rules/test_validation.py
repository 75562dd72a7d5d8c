"""Rules file validation: every problem class is reported as `file:line: field: message`."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from proxy.rules.loader import (
    RulesError,
    check_file,
    format_problems,
    load_rules,
    parse_duration,
    parse_rules,
)

FIXTURES = Path(__file__).parents[2] / "fixtures" / "rules"
DEFAULT = Path(__file__).parents[3] / "rules" / "default.yaml"


def problems(text: str) -> list[str]:
    """The formatted problems of a document (dedented; line 1 is its first line)."""
    with pytest.raises(RulesError) as info:
        parse_rules(textwrap.dedent(text).lstrip("\n"), "r.yaml")
    return [str(p) for p in info.value.problems]


def one(text: str) -> str:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


# -- whole-document problems ----------------------------------------------------------------------


def test_yaml_syntax_error_points_at_the_opening_line() -> None:
    found = one("""
        version: 1
        rules:
          - name: [a
    """)
    assert found.startswith("r.yaml:3: YAML syntax error: expected ',' or ']'")


def test_yaml_syntax_error_mid_file() -> None:
    found = one("""
        version: 1
        limits:
          tier: starter
            safety_margin: 0.9
    """)
    assert found.startswith("r.yaml:4: YAML syntax error: mapping values are not allowed")


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text\n", "42\n"])
def test_top_level_must_be_a_mapping(text: str) -> None:
    assert one(text).startswith("r.yaml:1: the rules file must be a mapping")


@pytest.mark.parametrize("text", ["", "# only a comment\n"])
def test_empty_file(text: str) -> None:
    assert one(text) == "r.yaml:1: the file is empty"


def test_version_required_and_supported() -> None:
    assert one("routes: []\n") == "r.yaml:1: version: required"
    assert one("version: 2\n").startswith("r.yaml:1: version: unsupported version the number 2")


def test_unknown_key_suggests_the_closest() -> None:
    found = one("""
        version: 1
        rule: []
    """)
    assert found == "r.yaml:2: rule: unknown key (did you mean 'rules'?)"


def test_unknown_key_without_close_match_lists_known() -> None:
    found = one("""
        version: 1
        defaults: {zzz: 1}
    """)
    assert found == "r.yaml:2: defaults.zzz: unknown key (expected one of: priority, max_wait)"


def test_duplicate_yaml_key() -> None:
    found = one("""
        version: 1
        defaults:
          priority: default
          priority: background
    """)
    assert found == "r.yaml:4: defaults.priority: duplicate key (first at line 3)"


def test_merge_keys_may_be_overridden() -> None:
    rules = parse_rules(
        textwrap.dedent("""
        version: 1
        routes:
          - &base {name: a, match: {path: /x}, priority: background}
          - <<: *base
            name: b
        """),
        "r.yaml",
    )
    assert [r.name for r in rules.routes] == ["a", "b"]


def test_boolean_looking_key() -> None:
    found = one("""
        version: 1
        on: 3
    """)
    assert found.startswith("r.yaml:2: keys must be text, got 'on' (quote it")


def test_yaml_booleans_are_not_text() -> None:
    found = one("""
        version: 1
        routes:
          - name: off
            match: {path: /x}
    """)
    assert found == (
        "r.yaml:3: routes[0].name: expected non-empty text, got false "
        "(quote it: YAML reads yes/no/on/off as true/false)"
    )


def test_unsupported_tag() -> None:
    assert one("version: 1\nobject_types: !!set {a}\n") == (
        "r.yaml:2: object_types: unsupported YAML tag tag:yaml.org,2002:set"
    )


# -- types, enums, numbers ------------------------------------------------------------------------


def test_wrong_types() -> None:
    found = problems("""
        version: 1
        limits: [1]
        routes: {a: 1}
        rules: 3
    """)
    assert found == [
        "r.yaml:2: limits: expected a mapping, got a list",
        "r.yaml:3: routes: expected a list, got a mapping",
        "r.yaml:4: rules: expected a list, got the number 3",
    ]


def test_list_entries_must_be_mappings() -> None:
    found = problems("""
        version: 1
        routes:
          - just-a-name
        rules:
          - 5
    """)
    assert found == [
        "r.yaml:3: routes[0]: expected a route mapping, got 'just-a-name'",
        "r.yaml:5: rules[0]: expected a rule mapping, got the number 5",
    ]


def test_enum_values() -> None:
    found = problems("""
        version: 1
        limits:
          tier: startr
        defaults:
          priority: urgent
    """)
    assert found == [
        "r.yaml:3: limits.tier: invalid value 'startr' (did you mean 'starter'?)",
        "r.yaml:5: defaults.priority: invalid value 'urgent' "
        "(expected one of: interactive, default, background)",
    ]


@pytest.mark.parametrize("value", ["0", "1.5", "-0.1", "high", "true"])
def test_safety_margin_range(value: str) -> None:
    found = one(f"""
        version: 1
        limits:
          safety_margin: {value}
    """)
    assert found.startswith("r.yaml:3: limits.safety_margin: must be a number in (0, 1]")


def test_limits_numbers() -> None:
    found = problems("""
        version: 1
        limits:
          general: {limit: 0}
          expected_replicas: two
    """)
    assert found == [
        "r.yaml:3: limits.general.limit: must be at least 1 (got 0)",
        "r.yaml:4: limits.expected_replicas: expected a whole number, got 'two'",
    ]


def test_time_zone_is_checked() -> None:
    found = one("""
        version: 1
        limits:
          daily: {timezone: "Europe/Londn"}
    """)
    assert found == (
        "r.yaml:3: limits.daily.timezone: unknown time zone 'Europe/Londn' "
        "(did you mean 'Europe/London'?)"
    )


# -- durations ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("500ms", 500),
        ("10s", 10_000),
        ("1.5s", 1_500),
        ("5m", 300_000),
        ("3h", 10_800_000),
        ("90d", 7_776_000_000),
        ("1h30m", 5_400_000),
        ("1d2h3m4s5ms", 93_784_005),
    ],
)
def test_parse_duration(text: str, ms: int) -> None:
    assert parse_duration(text) == ms


@pytest.mark.parametrize("text", ["", "10", "10x", "s", "0s", "0ms", "10s5m", "1h1h", "-5s", "1 h"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_duration_problems() -> None:
    found = problems("""
        version: 1
        defaults:
          max_wait: 20
        rules:
          - name: c
            type: object_cache
            object_type: contacts
            ttl: 0s
          - name: d
            type: object_cache
            object_type: contacts
            ttl: 10 minutes
    """)
    assert found == [
        "r.yaml:3: defaults.max_wait: expected a duration with a unit like 10s, got the number 20",
        "r.yaml:8: rules[0].ttl: duration must be greater than 0 (got '0s')",
        "r.yaml:12: rules[1].ttl: invalid duration '10 minutes' "
        "(use e.g. 500ms, 10s, 3h, 90d or 1h30m)",
    ]


# -- match: methods and templates -----------------------------------------------------------------


def route_path_problems(path: str) -> list[str]:
    return problems(f"""
        version: 1
        routes:
          - name: r
            match: {{path: "{path}"}}
    """)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("crm/v3/objects", "must start with '/' (got 'crm/v3/objects')"),
        ("/crm//objects", "empty segment ('//')"),
        ("/crm/../objects", "'..' segment: requests are normalised, so it can never match"),
        ("/crm/./objects", "'.' segment: requests are normalised, so it can never match"),
        ("/crm/{a}/{a}", "duplicate placeholder {a}"),
        ("/crm/{a", "unbalanced braces in '{a'"),
        ("/crm/a}", "unbalanced braces in 'a}'"),
        ("/crm/{{a}}", "unbalanced braces in '{{a}}'"),
        ("/crm/{}", "empty placeholder '{}'"),
        ("/crm/{a-b}", "invalid placeholder name in '{a-b}' (letters, digits and '_')"),
        ("/crm/x{id}", "a placeholder must fill a whole segment (found 'x{id}')"),
        ("/crm/{id}.json", "a placeholder must fill a whole segment (found '{id}.json')"),
        ("/crm/x?a=1", "query strings and fragments are not matched: remove what follows '?'/'#'"),
        ("/crm/a b", "contains whitespace"),
    ],
)
def test_template_problems(path: str, message: str) -> None:
    assert route_path_problems(path) == [f"r.yaml:4: routes[0].match.path: {message}"]


def test_template_reports_every_problem() -> None:
    found = route_path_problems("/crm/{a}/{a}/x{b}//..")
    assert [f.split("path: ")[1] for f in found] == [
        "duplicate placeholder {a}",
        "a placeholder must fill a whole segment (found 'x{b}')",
        "empty segment ('//')",
        "'..' segment: requests are normalised, so it can never match",
    ]


def test_match_requires_path() -> None:
    found = one("""
        version: 1
        routes:
          - name: r
            match: {method: GET}
    """)
    assert found == "r.yaml:4: routes[0].match.path: required"


def test_unknown_method() -> None:
    found = one("""
        version: 1
        routes:
          - name: r
            match: {method: FETCH, path: /x}
    """)
    assert found == (
        "r.yaml:4: routes[0].match.method: unknown HTTP method 'FETCH' (did you mean 'PATCH'?)"
    )


def test_unknown_method_in_a_list_points_at_the_entry() -> None:
    found = one("""
        version: 1
        routes:
          - name: r
            match:
              path: /x
              method:
                - GET
                - PSOT
    """)
    assert found == "r.yaml:8: routes[0].match.method[1]: unknown HTTP method 'PSOT' " + (
        "(did you mean 'POST'?)"
    )


def test_method_wildcards_and_case() -> None:
    rules = parse_rules(
        "version: 1\nroutes:\n"
        "  - {name: a, match: {method: '*', path: /a}}\n"
        "  - {name: b, match: {method: [get, POST], path: /b}}\n",
        "r.yaml",
    )
    assert rules.routes[0].match.methods is None
    assert rules.routes[1].match.methods == frozenset({"GET", "POST"})


# -- routes ---------------------------------------------------------------------------------------


def test_duplicate_names() -> None:
    found = problems("""
        version: 1
        routes:
          - name: a
            match: {path: /a}
          - name: a
            match: {path: /b}
        rules:
          - name: x
            type: object_cache
            object_type: contacts
            ttl: 1m
          - name: x
            type: object_cache
            object_type: notes
            ttl: 1m
    """)
    assert found == [
        "r.yaml:5: routes[1].name: duplicate name 'a' (first at line 3)",
        "r.yaml:12: rules[1].name: duplicate name 'x' (first at line 8)",
    ]


def test_name_must_be_a_label() -> None:
    found = one("""
        version: 1
        routes:
          - name: "booking create"
            match: {path: /a}
    """)
    assert found.startswith("r.yaml:3: routes[0].name: 'booking create': use letters, digits")


def test_route_buckets() -> None:
    found = problems("""
        version: 1
        routes:
          - name: a
            match: {path: /a}
            buckets: [general, associations]
          - name: b
            match: {path: /b}
            buckets: []
          - name: c
            match: {path: /c}
            buckets: [genral]
    """)
    assert found == [
        "r.yaml:5: routes[0].buckets: unknown bucket 'associations' "
        "(configure limits.associations first)",
        "r.yaml:8: routes[1].buckets: list at least one bucket (a call must draw from some budget)",
        "r.yaml:11: routes[2].buckets: unknown bucket 'genral' (did you mean 'general'?)",
    ]


def test_required_fields_point_at_their_mapping() -> None:
    found = problems("""
        version: 1
        routes:
          - priority: interactive
          - name: b
    """)
    assert found == [
        "r.yaml:3: routes[0].name: required",
        "r.yaml:3: routes[0].match: required",
        "r.yaml:4: routes[1].match: required",
    ]


# -- rules ----------------------------------------------------------------------------------------


def test_unknown_rule_type_suggests() -> None:
    found = one("""
        version: 1
        rules:
          - name: r
            type: serch_index
    """)
    assert (
        found
        == "r.yaml:4: rules[0].type: invalid value 'serch_index' (did you mean 'search_index'?)"
    )


def test_unknown_key_for_the_rule_type() -> None:
    found = one("""
        version: 1
        rules:
          - name: c
            type: object_cache
            object_type: contacts
            ttl: 1m
            key: [a]
    """)
    assert found.startswith("r.yaml:7: rules[0].key: unknown key (expected one of: name, type")


def test_object_types() -> None:
    found = problems("""
        version: 1
        object_types:
          bookings: bookings
          contacts: "2-5"
        rules:
          - name: c
            type: object_cache
            object_type: mock_exams
            ttl: 1m
    """)
    assert found == [
        "r.yaml:3: object_types.bookings: expected an object type id like 2-12345, got 'bookings'",
        "r.yaml:4: object_types.contacts: 'contacts' is HubSpot's own name for 0-1",
        "r.yaml:8: rules[0].object_type: unknown object type 'mock_exams': write its id "
        "(like 2-12345) or declare the name under object_types",
    ]


def test_search_index_key_must_not_be_empty() -> None:
    found = one("""
        version: 1
        rules:
          - name: dup
            type: search_index
            object_type: "2-50158943"
            key: []
            ttl: {positive: 1h}
    """)
    assert found == (
        "r.yaml:6: rules[0].key: list at least one property: the index is keyed by their values"
    )


def test_search_index_requirements() -> None:
    found = problems("""
        version: 1
        rules:
          - name: dup
            type: search_index
    """)
    assert found == [
        "r.yaml:3: rules[0].object_type: required",
        "r.yaml:3: rules[0].key: required",
        "r.yaml:3: rules[0].ttl: required",
    ]


def test_search_index_field_relations() -> None:
    found = problems("""
        version: 1
        rules:
          - name: dup
            type: search_index
            object_type: "2-50158943"
            key: [contact_id, exam_date, contact_id]
            when: {contact_id: x, is_active: null}
            scope: exam_date
            complete: maybe
            ttl:
              positive: {until_end_of: exam, min: 0h}
              negative: forever
            timezone: Mars/Base
    """)
    assert found == [
        "r.yaml:6: rules[0].key[2]: 'contact_id' is listed twice",
        "r.yaml:7: rules[0].when.is_active: expected a value to compare with, got nothing (null)",
        "r.yaml:9: rules[0].complete: expected true or false, got 'maybe'",
        "r.yaml:11: rules[0].ttl.positive.until_end_of: 'exam' must be a key property "
        "(its value dates the entry)",
        "r.yaml:11: rules[0].ttl.positive.min: duration must be greater than 0 (got '0h')",
        "r.yaml:12: rules[0].ttl.negative: invalid duration 'forever' "
        "(use e.g. 500ms, 10s, 3h, 90d or 1h30m)",
        "r.yaml:13: rules[0].timezone: unknown time zone 'Mars/Base' (use an IANA name like 'UTC')",
    ]


def test_search_index_when_key_overlap_and_scope() -> None:
    found = problems("""
        version: 1
        rules:
          - name: dup
            type: search_index
            object_type: "2-50158943"
            key: [a]
            when: {a: x}
            scope: b
            ttl: {positive: 1h}
    """)
    assert found == [
        "r.yaml:7: rules[0].when.a: 'a' is already a key property",
        "r.yaml:8: rules[0].scope: 'b' must be one of the key properties (a)",
    ]


def test_counter_needs_a_source() -> None:
    found = one("""
        version: 1
        rules:
          - name: seats
            type: counter
            object_type: "2-50158913"
            property: total_bookings
            source: {}
    """)
    assert found == "r.yaml:7: rules[0].source: needs exactly one of association, property (got 0)"


def test_counter_with_two_sources() -> None:
    found = one("""
        version: 1
        rules:
          - name: seats
            type: counter
            object_type: "2-50158913"
            property: total_bookings
            source:
              association: {from_type: "2-50158943", to_type: "2-50158913"}
              property: {object_type: "2-50158943", property: mock_exam_id}
    """)
    assert found == "r.yaml:7: rules[0].source: needs exactly one of association, property (got 2)"


def test_counter_field_problems() -> None:
    found = problems("""
        version: 1
        rules:
          - name: seats
            type: counter
            object_type: "2-50158913"
            property: total_bookings
            source:
              association: {from_type: contacts, to_type: "2-50158943"}
            cancelled_value: Cancelled
            patch: drop
          - name: seats2
            type: counter
            object_type: "2-50158913"
            property: total_bookings
            source:
              property: {object_type: "2-50158943", property: mock_exam_id}
            booking_object_type: notes
    """)
    assert found == [
        "r.yaml:8: rules[0].source.association: one end must be the counted object type 2-50158913",
        "r.yaml:9: rules[0].cancelled_value: needs active_property (the property that holds it)",
        "r.yaml:10: rules[0].patch: invalid value 'drop' (expected one of: absorb, forward)",
        "r.yaml:17: rules[1].booking_object_type: 0-46 disagrees with the source (2-50158943)",
    ]


def test_respond_status_range() -> None:
    found = one("""
        version: 1
        rules:
          - name: r
            type: respond
            match: {path: /x}
            status: 700
    """)
    assert found == "r.yaml:6: rules[0].status: must be an HTTP status (100-599), got 700"


def test_write_behind_kind_and_method_agree() -> None:
    found = problems("""
        version: 1
        rules:
          - name: w
            type: write_behind
            match: {method: POST, path: "/crm/v3/objects/notes/{id}"}
            kind: update
          - name: v
            type: write_behind
            match: {path: /crm/v3/objects/notes}
            kind: insert
    """)
    assert found == [
        "r.yaml:5: rules[0].match: a update write-behind takes PATCH calls only",
        "r.yaml:10: rules[1].kind: invalid value 'insert' "
        "(expected one of: create, associate_default, update)",
    ]


# -- all problems at once; files; CLI helper ------------------------------------------------------


def test_reports_all_problems_in_line_order() -> None:
    with pytest.raises(RulesError) as info:
        load_rules(FIXTURES / "many_problems.yaml")
    assert [(p.line, p.field) for p in info.value.problems] == [
        (3, "limits.tier"),
        (4, "limits.safety_margin"),
        (5, "limits.general.limit"),
        (5, "limits.general.window"),
        (6, "limits.daily.timezone"),
        (8, "defaults.priority"),
        (9, "defaults.max_wait"),
        (12, "routes[0].match.method"),
        (12, "routes[0].match.path"),
        (13, "routes[1].name"),
        (14, "routes[1].match.path"),
        (16, "rules[0].ttl"),  # required: reported where its rule starts
        (19, "rules[0].key"),
        (20, "rules[0].ttll"),
        (25, "rules[1].source"),
        (27, "rules[2].type"),
    ]
    assert str(info.value) == format_problems(info.value)
    assert str(info.value).splitlines()[0] == (
        f"{FIXTURES / 'many_problems.yaml'}:3: limits.tier: invalid value 'startr' "
        "(did you mean 'starter'?)"
    )


def test_default_rules_validate() -> None:
    rules = load_rules(DEFAULT)
    assert rules.limits.tier == "starter"
    assert {r.name for r in rules.rules} >= {
        "enrollments-unused",
        "booking-duplicate",
        "booking-idempotency",
        "exam-counter",
        "exam-cache",
        "notes-async",
    }


def test_minimal_file_uses_defaults() -> None:
    rules = load_rules(FIXTURES / "minimal.yaml")
    assert rules.routes == () and rules.rules == ()
    assert rules.defaults.priority == "default" and rules.defaults.max_wait_ms == 20_000
    assert rules.limits.effective("general") == (90, 10_000)


def test_check_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert check_file(DEFAULT) == 0
    assert "ok" in capsys.readouterr().out
    assert check_file(FIXTURES / "many_problems.yaml") == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].endswith(
        "many_problems.yaml:3: limits.tier: invalid value 'startr' " + ("(did you mean 'starter'?)")
    )
    assert check_file(tmp_path / "missing.yaml") == 2
    assert "missing.yaml:1: cannot read: No such file or directory" in capsys.readouterr().err


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_bytes(b"version: 1\n# \xff\n")
    with pytest.raises(RulesError, match="not UTF-8"):
        load_rules(path)
