"""The write pacer: a token bucket at Graph's write budget, and a pause on 429."""

from __future__ import annotations

from scim_server.sync.pacer import Pacer
from tests.helpers import FakeClock


def test_writes_are_paced_to_the_rate_after_a_burst() -> None:
    clock = FakeClock()
    pacer = Pacer(10, burst=5, clock=clock, sleep=clock.sleep)
    waits = [pacer.acquire() for _ in range(7)]
    assert waits[:5] == [0, 0, 0, 0, 0]
    assert [round(w, 6) for w in waits[5:]] == [0.1, 0.1]


def test_a_hold_pauses_for_the_longest_retry_after_not_their_sum() -> None:
    clock = FakeClock()
    pacer = Pacer(10, burst=10, clock=clock, sleep=clock.sleep)
    for _ in range(20):  # twenty parts of one batch, each throttled for 2 s
        pacer.hold(2.0)
    pacer.hold(1.0)  # a shorter one does not shorten it
    assert round(pacer.acquire(), 6) == 2.1
    clock.now += 60  # long after: full speed again
    assert pacer.acquire() == 0
