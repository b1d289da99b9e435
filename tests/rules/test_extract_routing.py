"""Fields from the customer's words and routing rules with their trace: pure functions over a message."""

from __future__ import annotations

import time

from core.rules_config import RoutingRule
from normalizer.rules.extract import compile_patterns, extract_fields
from normalizer.rules.routing import Facts, compile_rules, route

PATTERNS = compile_patterns({"order_number": r"订单号?\s*[:：]?\s*(\d{10,20})"})


def test_named_patterns_and_builtins_fill_fields() -> None:
    text = "订单号：20261201123456 的发票开错了，应该是 ¥1,299.50，电话 138 0013 8000，邮箱 Li.Ming@Example.com"
    assert extract_fields(text, PATTERNS, max_chars=4000) == {
        "order_number": "20261201123456",
        "phone": "+8613800138000",
        "email": "li.ming@example.com",
        "amount": "1299.50 CNY",
    }


def test_an_order_number_is_not_taken_for_a_phone_number() -> None:
    assert "phone" not in extract_fields("订单 12345678901234 还没到", PATTERNS, max_chars=4000)


def test_amounts_in_words_and_dollars() -> None:
    assert extract_fields("退我300元", {}, max_chars=4000)["amount"] == "300.00 CNY"
    assert extract_fields("charged me $25.5 twice", {}, max_chars=4000)["amount"] == "25.50 USD"


def test_a_slow_pattern_sees_only_the_bounded_text() -> None:
    slow = compile_patterns({"evil": r"(a+)+$"})
    text = "a" * 22 + "b" + "a" * 100_000
    began = time.process_time()
    extract_fields(text, slow, max_chars=20)
    assert time.process_time() - began < 1.0  # 20 characters: bounded backtracking, however long the message


def facts(text: str, **kw: object) -> Facts:
    base: dict[str, object] = {"text": text, "channel": "webchat", "inbox": "web", "fields": {}}
    return Facts(**{**base, **kw})  # type: ignore[arg-type]


RULES = compile_rules(
    [
        RoutingRule.model_validate(r)
        for r in [
            {"name": "invoices", "when": {"text": "发票|invoice"}, "set": {"queue": "billing", "tags": ["invoice"]}},
            {
                "name": "complaints",
                "when": {"text": "投诉|complain"},
                "set": {"queue": "complaints", "priority": "high", "category": "complaint"},
            },
            {"name": "vip", "when": {"vip": True}, "set": {"skills": ["vip"], "priority": "urgent"}, "stop": True},
            {
                "name": "complaint-by-email",
                "when": {"category": "complaint", "channel": "email"},
                "set": {"tags": ["mail"]},
            },
            {"name": "orders", "when": {"fields": {"order_number": ""}}, "set": {"tags": ["order"]}},
        ]
    ]
)


def test_every_matching_rule_applies_in_order_and_the_trace_names_them() -> None:
    routed = route(RULES, facts("我要投诉发票的问题", channel="email", fields={"order_number": "1"}), max_chars=4000)
    assert routed.fired == ("invoices", "complaints", "complaint-by-email", "orders")
    assert routed.queue == "complaints"  # the later rule wins
    assert routed.tags == ("invoice", "mail", "order")
    assert routed.priority == "high" and routed.category == "complaint"


def test_stop_ends_the_walk() -> None:
    routed = route(RULES, facts("invoice please", vip=True, fields={"order_number": "1"}), max_chars=4000)
    assert routed.fired == ("invoices", "vip")
    assert routed.priority == "urgent" and routed.skills == ("vip",)


def test_nothing_matches_nothing_changes() -> None:
    assert route(RULES, facts("你好"), max_chars=4000).fired == ()
