"""Slot affinity for llama.cpp requests (engines/llama_slots.py), on its own: no model."""

from __future__ import annotations

import threading

from livevox.engines.llama_slots import SlotAffinity


def test_a_session_goes_back_to_its_slot() -> None:
    s = SlotAffinity(4)
    a = s.acquire("A")
    s.release(a)
    b = s.acquire("B")
    s.release(b)
    assert b != a  # B took a slot nobody held, not A's
    p = s.acquire(None, owns=False)  # a probe
    s.release(p)
    assert p not in (a, b)
    for _ in range(3):
        slot = s.acquire("A")
        s.release(slot)
        assert slot == a
    assert s.owner(a) == "A" and s.owner(b) == "B"


def test_a_second_request_of_a_session_does_not_move_its_conversation() -> None:
    s = SlotAffinity(3)
    a = s.acquire("A")  # the answer, still running
    side = s.acquire("A")  # a prefill or an out-of-band response meanwhile
    assert side != a and s.owner(side) is None and s.owner(a) == "A"
    s.release(side)
    s.release(a)
    again = s.acquire("A")
    assert again == a


def test_least_recently_used_slot_is_taken_when_all_are_held() -> None:
    s = SlotAffinity(2)
    for who in ("A", "B"):
        s.release(s.acquire(who))
    a_slot = next(i for i in range(2) if s.owner(i) == "A")
    s.release(s.acquire("B"))  # B used most recently
    c = s.acquire("C")
    assert c == a_slot and s.owner(c) == "C"
    s.release(c)
    assert s.acquire("A") != c  # A lost its slot; it gets B's, the only other one


def test_none_free_lets_llama_cpp_choose() -> None:
    s = SlotAffinity(1)
    s.acquire("A")
    assert s.acquire("B") == -1
    s.release(-1)  # harmless


def test_waits_for_its_slot_while_the_request_in_it_is_stopped() -> None:
    s = SlotAffinity(2)
    stop = threading.Event()
    a = s.acquire("A", stop)
    stop.set()  # a discarded speculation: it frees its slot within a token
    threading.Timer(0.05, s.release, (a,)).start()
    assert s.acquire("A") == a  # not the free slot beside it: it waited


def test_does_not_wait_for_a_slot_busy_with_a_live_request() -> None:
    s = SlotAffinity(2)
    a = s.acquire("A", threading.Event())  # not being stopped
    assert s.acquire("A") != a
