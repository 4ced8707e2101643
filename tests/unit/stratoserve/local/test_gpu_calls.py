"""The local GPU executor's fault settings and its bounded store of calls."""

from __future__ import annotations

import pytest

from stratoserve.local.gpu_calls import Call, CallStore, Faults


def test_faults_parse_from_the_environment_variable() -> None:
    assert Faults.parse("") == Faults()
    assert Faults.parse("error=0.5, hang=0.1") == Faults(error=0.5, hang=0.1)
    assert Faults.parse("hang=1").as_dict() == {"error": 0.0, "hang": 1.0}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("error", "expected name=probability"),
        ("error=lots", "not a number"),
        ("error=1.5", "from 0 to 1"),
        ("slow=0.5", "unknown fault 'slow'"),
    ],
)
def test_bad_fault_settings_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Faults.parse(text)


def test_fault_json_takes_numbers_only() -> None:
    assert Faults.from_json({"error": 1}) == Faults(error=1.0)
    for body in ([], {"error": True}, {"error": "0.5"}, {"hang": -0.1}):
        with pytest.raises(ValueError):
            Faults.from_json(body)


def _call(name: str) -> Call:
    return Call(name, "embed", "1", ["text"])


def test_finished_calls_are_kept_up_to_a_count_oldest_first() -> None:
    store = CallStore(keep_calls=2)
    calls = [_call(f"fc-{index}") for index in range(3)]
    for call in calls:
        store.add(call)
        assert store.finish(call, {"status": "succeeded", "outputs": [[1.0]]})

    assert store.get("fc-0") is None
    assert store.get("fc-1") is calls[1]
    assert calls[2].body == b'{"status":"succeeded","outputs":[[1.0]]}'
    assert calls[2].inputs is None  # the inputs are let go once answered


def test_calls_are_forgotten_after_their_time_and_beyond_the_bytes() -> None:
    store = CallStore(keep_s=0.0)
    store.add(_call("fc-old"))
    assert store.get("fc-old") is None

    store = CallStore(keep_bytes=10)
    big = _call("fc-big")
    store.add(big)
    store.finish(big, {"status": "succeeded", "outputs": [[1.0] * 10]})
    assert store.get("fc-big") is None


def test_a_cancelled_call_keeps_its_status_and_drops_its_result() -> None:
    store = CallStore()
    call = _call("fc-1")
    store.add(call)

    assert store.cancel("fc-1") is call
    assert call.answer == {"status": "cancelled"}
    assert call.cancel.is_set()
    assert not store.start(call)
    assert not store.finish(call, {"status": "succeeded", "outputs": [[1.0]]})
    assert call.answer == {"status": "cancelled"}

    finished = _call("fc-2")
    store.add(finished)
    store.finish(finished, {"status": "failed", "error": "InputError: no"})
    assert store.cancel("fc-2") is finished
    assert finished.answer == {"status": "failed"}
    assert store.cancel("fc-none") is None
