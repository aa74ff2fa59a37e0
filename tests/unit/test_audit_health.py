"""The index's health from the store's record and the node's head: ok, behind (blocks or
seconds of chain time past the thresholds, or no node), failing (quarantined events, no
checkpoint); the one-line description `dul up` and `dul chain status` print."""

from __future__ import annotations

from audit.health import StoreState, assess, describe


def state(**changes: object) -> StoreState:
    values: dict[str, object] = {
        "checkpoint_block": 100, "checkpoint_time": 1_000, "quarantined": 0,
        "incidents_unacknowledged": 0,
    }  # fmt: skip
    values.update(changes)
    return StoreState.model_validate(values)


def test_within_both_thresholds_the_index_is_ok_and_ready() -> None:
    health = assess(state(), (150, 1_060), max_blocks=50, max_seconds=60)
    assert (health.status, health.ready, health.reasons) == ("ok", True, [])
    assert (health.lag_blocks, health.lag_seconds) == (50, 60)
    assert describe(health) == "ok: checkpoint block 100, 50 block(s) / 60 s behind the head"


def test_past_either_threshold_the_index_is_behind() -> None:
    by_blocks = assess(state(), (151, 1_001), max_blocks=50, max_seconds=60)
    assert (by_blocks.status, by_blocks.ready) == ("behind", False)
    assert by_blocks.reasons == ["the index is 51 blocks behind the head (more than 50)"]
    by_time = assess(state(), (101, 1_061), max_blocks=50, max_seconds=60)
    assert by_time.status == "behind"
    assert "61 s of chain time behind" in by_time.reasons[0]
    unknown_time = assess(state(checkpoint_time=None), (101, 9_999), max_blocks=50,
                          max_seconds=60)  # fmt: skip
    assert (unknown_time.status, unknown_time.lag_seconds) == ("ok", None)


def test_quarantine_or_no_checkpoint_is_failing_and_no_node_is_behind() -> None:
    failing = assess(state(quarantined=2), (100, 1_000), max_blocks=50, max_seconds=60)
    assert (failing.status, failing.ready) == ("failing", False)
    assert failing.reasons[0].startswith("2 event(s) quarantined")
    assert "failing: checkpoint block 100" in describe(failing)
    empty = assess(state(checkpoint_block=None, checkpoint_time=None), (5, 10), max_blocks=50,
                   max_seconds=60)  # fmt: skip
    assert empty.status == "failing"
    assert "no checkpoint" in empty.reasons[0]
    offline = assess(state(incidents_unacknowledged=1), None, max_blocks=50, max_seconds=60,
                     node_error="connection refused")  # fmt: skip
    assert (offline.status, offline.ready) == ("behind", False)
    assert "unreachable (connection refused)" in offline.reasons[0]
    assert "1 unacknowledged history rewrite(s)" in describe(offline)
