"""`shared_by` on search_index rules (issue 13, 7): who shares an index."""

from __future__ import annotations

import textwrap

import pytest

from proxy.rules.loader import RulesError, SearchIndexRule, parse_rules

RULE = """
    version: 1
    rules:
      - name: idem
        type: search_index
        object_type: "2-50158943"
        key: [idempotency_key]
        ttl: {{positive: 1h}}
        {shared}
"""


def index_rule(shared: str) -> SearchIndexRule:
    rules = parse_rules(textwrap.dedent(RULE.format(shared=shared)).lstrip("\n"), "r.yaml")
    (rule,) = rules.rules
    assert isinstance(rule, SearchIndexRule)
    return rule


def test_each_credential_keeps_its_own_index_unless_told() -> None:
    assert index_rule("").shared_by == "credential"
    assert index_rule("shared_by: portal").shared_by == "portal"


def test_only_credential_or_portal() -> None:
    with pytest.raises(RulesError) as info:
        index_rule("shared_by: tenant")
    assert [str(p) for p in info.value.problems] == [
        "r.yaml:8: rules[0].shared_by: invalid value 'tenant' (expected one of: credential, portal)"
    ]
