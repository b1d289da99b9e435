"""SLA clocks as pure functions of a ticket and a time: policy, due times, WeChat's window, pause and resume."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from core.config import ConfigError, parse_config
from core.model import SlaTarget
from core.rules_config import SlaConfig
from normalizer.rules import sla
from normalizer.rules.routing import Facts
from tests.rules.test_calendar import at

SLA = SlaConfig.model_validate(
    {
        "hours": {"lunch": {"start": "12:00", "end": "13:00"}},
        "policies": [
            {"name": "vip", "when": {"vip": True}, "calendar": "24x7", "first_response": "30m", "resolution": "4h"},
            {"name": "complaint", "when": {"category": "complaint"}, "first_response": "1h", "resolution": "1d"},
            {
                "name": "default",
                "first_response": "2h",
                "next_response": "4h",
                "resolution": "2d",
                "on_breach": {"priority": "high", "tags": ["sla-breached"]},
            },
        ],
        "warn_at": 0.8,
    }
)
PLANS = sla.plans(SLA)


def facts(**kw: object) -> Facts:
    base: dict[str, object] = {"text": "hi", "channel": "webchat", "inbox": "web", "fields": {}}
    return Facts(**{**base, **kw})  # type: ignore[arg-type]


def plan(name: str) -> sla.Plan:
    found = next(p for p in PLANS if p.name == name)
    return found


def test_first_matching_policy_wins() -> None:
    assert sla.choose(PLANS, facts(vip=True, category="complaint"), max_chars=100) == plan("vip")
    assert sla.choose(PLANS, facts(category="complaint"), max_chars=100) == plan("complaint")
    assert sla.choose(PLANS, facts(), max_chars=100) == plan("default")


def test_due_and_warning_times_count_working_time() -> None:
    # Tuesday 2026-12-01 11:00: 2 h of work runs over lunch, so 14:00; warned at 80 % (96 min of work: 13:36).
    clocks = sla.start(plan("default"), at(2026, 12, 1, 11, 0))
    assert clocks.first_response_due_at == at(2026, 12, 1, 14, 0)
    assert clocks.first_response_warn_at == at(2026, 12, 1, 13, 36)
    # "2d" is two working days of eight hours: Thursday 11:00.
    assert clocks.resolution_due_at == at(2026, 12, 3, 11, 0)
    assert clocks.next_response_due_at is None  # only after the first reply
    vip = sla.start(plan("vip"), at(2026, 12, 5, 23, 0))  # a Saturday night, but VIPs run round the clock
    assert vip.first_response_due_at == at(2026, 12, 5, 23, 30)


def test_wechat_window_caps_the_first_response_and_says_so() -> None:
    friday = at(2026, 12, 4, 17, 0)  # 2 h of work from Friday 17:00 is Monday 10:00, past the 48-hour window
    capped = sla.start(plan("default"), friday, reply_window_closes_at=friday + timedelta(hours=48))
    assert capped.first_response_due_at == friday + timedelta(hours=48)
    assert capped.first_response_capped == sla.WECHAT_WINDOW
    assert capped.first_response_warn_at is not None and capped.first_response_warn_at < capped.first_response_due_at
    early = sla.start(plan("default"), at(2026, 12, 1, 10, 0), reply_window_closes_at=at(2026, 12, 3, 10, 0))
    assert early.first_response_capped is None and early.first_response_due_at == at(2026, 12, 1, 12, 0)


def test_warning_then_breach_each_found_once() -> None:
    clocks = sla.start(plan("default"), at(2026, 12, 1, 9, 0))
    assert sla.due_now(clocks, at(2026, 12, 1, 10, 30)) == []
    warned = sla.due_now(clocks, at(2026, 12, 1, 10, 36))
    assert [(f.target, f.kind) for f in warned] == [(SlaTarget.FIRST_RESPONSE, "warning")]
    clocks = sla.record(clocks, warned)
    assert sla.due_now(clocks, at(2026, 12, 1, 10, 50)) == []
    assert clocks.next_check_at() == at(2026, 12, 1, 11, 0)
    breached = sla.due_now(clocks, at(2026, 12, 1, 11, 0))
    assert [(f.target, f.kind) for f in breached] == [(SlaTarget.FIRST_RESPONSE, "breach")]
    clocks = sla.record(clocks, breached)
    assert clocks.breached == (SlaTarget.FIRST_RESPONSE,) and clocks.flag() == "breached"
    assert sla.due_now(clocks, at(2026, 12, 1, 11, 5)) == []


def test_a_late_look_fires_the_breach_without_a_warning_first() -> None:
    clocks = sla.start(plan("default"), at(2026, 12, 1, 9, 0))
    fired = sla.due_now(clocks, at(2026, 12, 2, 9, 0))
    assert [(f.target, f.kind) for f in fired] == [(SlaTarget.FIRST_RESPONSE, "breach")]


def test_the_first_reply_meets_the_first_response_and_a_later_customer_message_starts_next_response() -> None:
    clocks = sla.start(plan("default"), at(2026, 12, 1, 9, 0))
    answered = sla.agent_replied(clocks, at(2026, 12, 1, 9, 30))
    assert answered.first_response_due_at is None and answered.first_responded_at == at(2026, 12, 1, 9, 30)
    waiting = sla.customer_wrote(answered, plan("default"), at(2026, 12, 1, 16, 0))
    assert waiting.next_response_due_at == at(2026, 12, 2, 11, 0)  # 2 h on Tuesday, 2 h on Wednesday
    assert sla.customer_wrote(waiting, plan("default"), at(2026, 12, 1, 17, 0)) == waiting  # clock already runs
    assert sla.agent_replied(waiting, at(2026, 12, 1, 17, 30)).next_response_due_at is None


def test_pending_pauses_the_resolution_clock_and_resuming_keeps_what_was_left() -> None:
    clocks = sla.start(plan("default"), at(2026, 12, 1, 9, 0))  # resolution due Wednesday 18:00
    assert clocks.resolution_due_at == at(2026, 12, 2, 18, 0)
    clocks = sla.agent_replied(clocks, at(2026, 12, 1, 10, 0))  # the agent answers with a question
    paused = sla.pause(clocks, plan("default"), at(2026, 12, 1, 14, 0))  # 12 working hours left
    assert paused.paused and paused.resolution_due_at is None and paused.resolution_left_s == 12 * 3600
    assert sla.due_now(paused, at(2026, 12, 9, 9, 0)) == []  # a week waiting on the customer breaches nothing
    resumed = sla.resume(paused, plan("default"), at(2026, 12, 7, 9, 0))  # Monday
    assert not resumed.paused
    assert resumed.resolution_due_at == at(2026, 12, 8, 14, 0)  # 8 h Monday, 4 h Tuesday (lunch excluded)
    assert resumed.resolution_warn_at == at(2026, 12, 8, 9, 48)  # when 20 % of the 16 h target is left


def test_resolving_stops_every_clock() -> None:
    done = sla.finished(sla.start(plan("default"), at(2026, 12, 1, 9, 0)))
    assert done.next_check_at() is None and done.earliest_due_at() is None


@pytest.mark.parametrize(
    ("bad", "path"),
    [
        ({"extract": {"order_number": "(\\d+"}}, "extract.order_number"),
        ({"routing": [{"name": "a", "when": {"weather": "rain"}}]}, "routing[0].when.weather"),
        ({"routing": [{"name": "a", "when": {"text": "[发票"}}]}, "routing[0].when.text"),
        ({"routing": [{"name": "a", "set": {"queue": "nowhere"}}]}, "routing[0].set.queue: unknown queue 'nowhere'"),
        ({"sla": {"policies": [{"name": "d", "resolution": "2 weeks"}]}}, "sla.policies[0].resolution"),
        ({"sla": {"policies": [{"name": "d", "on_breach": {"queue": "x"}}]}}, "sla.policies[0].on_breach.queue"),
        ({"queues": [{"name": "a"}, {"name": "a"}]}, "queues[1].name"),
        ({"sla": {"holidays": "XX"}}, "sla.holidays"),
    ],
)
def test_a_bad_rule_stops_the_start_naming_its_key_path(bad: dict[str, object], path: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(bad, base_dir=Path("."))
    assert path in str(caught.value)


def test_the_sample_config_rules_load() -> None:
    from core.config import load_config

    config = load_config(Path(__file__).resolve().parents[2] / "config.yaml", env={})
    assert config.routing and config.queues and config.sla.policies and config.extract


def test_on_wechat_a_next_response_is_due_before_the_window_closes() -> None:
    answered = sla.agent_replied(sla.start(plan("default"), at(2026, 12, 4, 9, 0)), at(2026, 12, 4, 9, 30))
    friday_evening = at(2026, 12, 4, 17, 30)  # 4 h of work: Monday 12:00, past the 48-hour window
    capped = sla.customer_wrote(
        answered, plan("default"), friday_evening, reply_window_closes_at=friday_evening + timedelta(hours=48)
    )
    assert capped.next_response_due_at == friday_evening + timedelta(hours=48)
