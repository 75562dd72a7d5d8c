"""Classification is kept per (method, path) for the life of one rules version: every kept
answer is the one classifying afresh gives, however many paths come and go."""

from __future__ import annotations

from proxy.rules.loader import load_rules
from proxy.rules.model import CLASSIFIED_MAX

EXAMS = "2-50158913"
CALLS = [
    ("GET", f"/crm/v3/objects/{EXAMS}/1001"),
    ("get", "/crm/v3/objects/mock_exams/1001?properties=capacity"),
    ("POST", "/crm/v3/objects/enrollments/search"),
    ("POST", "/crm/v3/objects/2-50158943/search"),
    ("PATCH", f"/crm/v3/objects/{EXAMS}/1001"),
    ("PUT", f"/crm/v4/objects/2-50158943/9/associations/default/{EXAMS}/1001"),
    ("POST", "/crm/v3/objects/contacts/batch/read"),
    ("GET", "/files/v3/files/1"),
    ("DELETE", "/crm/v3/objects/2-50158943/9"),
]


def fresh(method: str, path: str) -> object:
    """What a new copy of the rules, with nothing kept, answers."""
    return load_rules("rules/default.yaml").classify(method, path)


def test_kept_answers_are_the_fresh_ones() -> None:
    rules = load_rules("rules/default.yaml")
    for method, path in CALLS * 2:  # the second round is answered from what was kept
        assert rules.classify(method, path) == fresh(method, path), (method, path)
    assert len(rules._classified) == len(CALLS)


def test_the_query_string_and_method_case_share_one_answer() -> None:
    rules = load_rules("rules/default.yaml")
    first = rules.classify("GET", f"/crm/v3/objects/{EXAMS}/1001?properties=a")
    assert rules.classify("get", f"/crm/v3/objects/{EXAMS}/1001?properties=b") is first
    assert len(rules._classified) == 1


def test_past_the_bound_answers_stay_right_and_memory_bounded() -> None:
    rules = load_rules("rules/default.yaml")
    for n in range(CLASSIFIED_MAX + 10):
        path = f"/crm/v3/objects/{EXAMS}/{n}"
        found = rules.classify("GET", path)
        assert found.action is not None and found.action.params["objectId"] == str(n)
        assert len(rules._classified) <= CLASSIFIED_MAX
    assert rules.classify(*CALLS[0]) == fresh(*CALLS[0])


def test_roles_asked_again_get_the_same_matches() -> None:
    rules = load_rules("rules/default.yaml")
    found = rules.classify("GET", f"/crm/v3/objects/{EXAMS}/1001")
    overlay = found.by_role("overlay")
    assert [m.rule.name for m in overlay] == ["exam-counter"]
    assert found.by_role("overlay") is overlay
    assert found.by_role("read", "overlay") == tuple(
        m for m in found.matches if m.role in ("read", "overlay")
    )
