"""The API's hand-off to Temporal after the answers: rounds, their size, each key's own context, a failed round."""

from __future__ import annotations

import asyncio
import contextvars

from api.handoff import PER_ROUND, HandOff

REQUEST = contextvars.ContextVar("request", default="none")


class Recorder:
    """A hand-over that records each round and, while `hold` is clear, waits (Temporal slow)."""

    def __init__(self) -> None:
        self.rounds: list[dict[int, str]] = []
        self.hold = asyncio.Event()
        self.hold.set()
        self.fail_next = False

    async def __call__(self, given: dict[int, contextvars.Context]) -> None:
        self.rounds.append({key: context.run(REQUEST.get) for key, context in given.items()})
        await self.hold.wait()
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("Temporal refused the round")


def given_in_request(hand_off: HandOff[int], key: int) -> None:
    REQUEST.set(f"request {key}")
    hand_off.give(key)


async def test_what_arrives_during_a_round_waits_for_the_next_and_goes_in_one() -> None:
    recorder = Recorder()
    hand_off: HandOff[int] = HandOff("things", recorder, stop_within=5)
    recorder.hold.clear()
    contextvars.copy_context().run(given_in_request, hand_off, 1)
    await asyncio.sleep(0)  # the first round has begun, and waits
    for key in (3, 2, 4, 3):
        contextvars.copy_context().run(given_in_request, hand_off, key)
    recorder.hold.set()
    await hand_off.aclose()
    # The second round has the three keys given meanwhile, once each, in the order given, each with its own
    # request's context.
    assert recorder.rounds == [{1: "request 1"}, {3: "request 3", 2: "request 2", 4: "request 4"}]
    assert list(recorder.rounds[1]) == [3, 2, 4]
    # The rounds themselves ran in none of the requests' contexts.
    assert REQUEST.get() == "none"


async def test_a_round_takes_at_most_per_round_keys() -> None:
    recorder = Recorder()
    hand_off: HandOff[int] = HandOff("things", recorder, stop_within=5)
    for key in range(2 * PER_ROUND + 1):
        hand_off.give(key)
    await hand_off.aclose()
    assert [len(round_) for round_ in recorder.rounds] == [PER_ROUND, PER_ROUND, 1]
    assert [key for round_ in recorder.rounds for key in round_] == list(range(2 * PER_ROUND + 1))


async def test_a_failed_round_costs_only_its_own_keys() -> None:
    recorder = Recorder()
    hand_off: HandOff[int] = HandOff("things", recorder, stop_within=5)
    recorder.fail_next = True
    hand_off.give(1)
    await hand_off.aclose()
    hand_off.give(2)
    await hand_off.aclose()
    # The failure was logged (the relay hands the first key over later); the next key had its round.
    assert recorder.rounds == [{1: "none"}, {2: "none"}]


async def test_stopping_waits_for_the_round_under_way_only_so_long() -> None:
    recorder = Recorder()
    hand_off: HandOff[int] = HandOff("things", recorder, stop_within=0.2)
    recorder.hold.clear()
    hand_off.give(1)
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await hand_off.aclose()
    assert loop.time() - started < 5
    assert recorder.rounds == [{1: "none"}]
