"""Rules as tests need them: one rule by name, typed as the kind the test expects."""

from __future__ import annotations

from typing import TypeVar

from proxy.rules.model import Rules

RuleKind = TypeVar("RuleKind")


def rule_of(rules: Rules, name: str, kind: type[RuleKind]) -> RuleKind:
    rule = rules.rule(name)
    assert isinstance(rule, kind), f"rule {name} is a {type(rule).__name__}, not a {kind.__name__}"
    return rule
