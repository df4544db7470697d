"""The retry policy, a pure function of the failure, the attempts and the time."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from scim_server.graph.errors import Conflict, Invalid, NotFound, Throttled, Transient
from scim_server.sync.policy import GiveUp, Policy, Retry

NOW = datetime(2026, 11, 27, 12, 0, 0)


def test_throttled_waits_retry_after_and_does_not_count() -> None:
    decision = Policy().decide(Throttled("429", retry_after=7), 5, NOW, random.Random(1))
    assert decision == Retry(NOW + timedelta(seconds=7), counts=False)


def test_throttled_without_retry_after_backs_off() -> None:
    decision = Policy().decide(Throttled("429"), 0, NOW, random.Random(1))
    assert isinstance(decision, Retry) and decision.at > NOW and not decision.counts


def test_transient_backs_off_exponentially_with_jitter_then_gives_up() -> None:
    policy = Policy(max_attempts=4, base_seconds=1, cap_seconds=100)
    rng = random.Random(3)
    waits = []
    for attempts in range(3):
        decision = policy.decide(Transient("503"), attempts, NOW, rng)
        assert isinstance(decision, Retry) and decision.counts
        waits.append((decision.at - NOW).total_seconds())
    # Each wait lies in [base / 2, base * 2^attempts].
    assert all(0.5 <= w <= 2**i for i, w in enumerate(waits)), waits
    final = policy.decide(Transient("503"), 3, NOW, rng)
    assert isinstance(final, GiveUp) and "4 attempts" in final.reason


def test_not_found_right_after_create_is_lag_later_it_is_permanent() -> None:
    policy = Policy(lag_window_seconds=60)
    rng = random.Random(0)
    fresh = policy.decide(NotFound("404"), 0, NOW, rng, created_at=NOW - timedelta(seconds=5))
    assert isinstance(fresh, Retry)
    old = policy.decide(NotFound("404"), 0, NOW, rng, created_at=NOW - timedelta(hours=1))
    assert isinstance(old, GiveUp)


def test_validation_and_conflict_give_up_at_once() -> None:
    for error in (Invalid("password"), Conflict("ObjectConflict")):
        assert isinstance(Policy().decide(error, 0, NOW, random.Random(0)), GiveUp)
