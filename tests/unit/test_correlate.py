"""Correlation of device incidents (alerting/correlate.py) and the notifier's send plan
(alerting/notifier.plan), on small known inputs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alerting.correlate import Incident, assign, correlated_id, rank_root
from alerting.notifier import Group, backlog_of, plan
from common.settings import Settings

T = datetime(2026, 1, 1, tzinfo=UTC)
GAP = timedelta(seconds=60)
TOL = timedelta(seconds=20)


def inc(device: str, start_s: int, end_s: int, severity: float = 50.0) -> Incident:
    return Incident(device, T + timedelta(seconds=start_s), T + timedelta(seconds=end_s), severity)


# r1's links lead to a1 and a2; r2's to b1. u1 is linked to nothing.
LINKS = [("r1", "a1"), ("r1", "a2"), ("r2", "b1")]


def test_a_cascade_is_one_incident_named_after_its_first_member():
    cascade = [inc("a1", 10, 60), inc("r1", 0, 60), inc("a2", 20, 50)]
    got = assign(cascade, {}, LINKS, GAP)
    assert set(got.values()) == {correlated_id(cascade[1])} == {f"r1@{T.isoformat()}"}


def test_unlinked_or_far_apart_failures_stay_apart():
    incidents = [inc("r1", 0, 60), inc("u1", 0, 60), inc("r2", 0, 60), inc("a1", 300, 400)]
    got = assign(incidents, {}, LINKS, GAP)
    assert len(set(got.values())) == 4
    # Started within the gap (60 s) of r1 and within the gap after it ended: one failure.
    assert len(set(assign([inc("r1", 0, 10), inc("a1", 60, 90)], {}, LINKS, GAP).values())) == 1
    assert len(set(assign([inc("r1", 0, 10), inc("a1", 71, 90)], {}, LINKS, GAP).values())) == 2
    # A long-running incident does not take in a neighbour's failure that starts much later.
    assert len(set(assign([inc("r1", 0, 900), inc("a1", 61, 90)], {}, LINKS, GAP).values())) == 2


def test_a_link_joins_members_through_each_other_and_either_direction():
    # a2 is linked to a1 only through r1; r1 arrives last: all three are one.
    incidents = [inc("a1", 0, 30), inc("a2", 0, 30), inc("r1", 10, 40)]
    assert len(set(assign(incidents, {}, LINKS, GAP).values())) == 1


def test_new_members_join_an_existing_incident_and_existing_ones_are_never_merged():
    first = [inc("r1", 0, 60)]
    known = assign(first, {}, LINKS, GAP)
    later = [*first, inc("a1", 30, 90)]
    assert assign(later, known, LINKS, GAP) == {later[1].key: known[first[0].key]}
    # Two existing incidents (r1's and r2's) stay two even when a new one touches both: it
    # joins the older.
    existing = [inc("r1", 0, 60), inc("r2", 5, 60)]
    ids = assign(existing, {}, [], GAP)
    bridge = inc("b1", 20, 40)  # r2's links lead to it; it is linked to r1 too
    got = assign([*existing, bridge], ids, [*LINKS, ("b1", "r1")], GAP)
    assert got == {bridge.key: ids[existing[0].key]}
    # Two new linked incidents related to an existing one are a failure of their own.
    pair = [inc("r2", 20, 40), inc("b1", 25, 40)]
    got = assign(
        [inc("a1", 0, 60), *pair], {inc("a1", 0, 60).key: "a"}, [*LINKS, ("r2", "a1")], GAP
    )
    assert set(got.values()) == {correlated_id(pair[0])}


def test_nothing_joins_an_incident_whose_page_was_resolved():
    first = inc("r1", 0, 30)
    late = inc("a1", 40, 60)
    ids = {first.key: "done"}
    assert assign([first, late], ids, LINKS, GAP) == {late.key: "done"}
    assert assign([first, late], ids, LINKS, GAP, frozenset({"done"})) == {
        late.key: correlated_id(late)
    }


def test_links_are_read_as_they_are_now():
    incidents = [inc("r1", 0, 60), inc("u1", 10, 60)]
    assert len(set(assign(incidents, {}, LINKS, GAP).values())) == 2
    assert len(set(assign(incidents, {}, [*LINKS, ("u1", "r1")], GAP).values())) == 1


def test_the_root_is_ranked_by_onset_then_direction_then_severity():
    # Same onset window: the device the links lead from wins over a more severe neighbour.
    members = [inc("a1", 0, 60, 99.0), inc("r1", 10, 60, 40.0), inc("a2", 10, 60, 50.0)]
    root = rank_root(members, LINKS, TOL)
    assert root.device_id == "r1"
    assert "links lead from it to 2 and to it from 0 of the 2 other devices" in root.reason
    # An onset clearly first (beyond the tolerance) wins over direction.
    assert rank_root([inc("a1", 0, 60), inc("r1", 30, 60)], LINKS, TOL).device_id == "a1"
    # No links among them: the most severe of the first.
    assert rank_root([inc("x", 0, 9, 10.0), inc("y", 5, 9, 80.0)], [], TOL).device_id == "y"
    assert rank_root([inc("x", 0, 9)], [], TOL).reason.startswith("x: the only device")


# The hold: 2 onset windows + 1 window + 5 s of lateness = 35 s of event time.
SETTINGS = Settings(
    window_seconds=10,
    watermark_delay_seconds=5,
    correlation_onset_windows=2,
    alert_resend_seconds=30,
    alert_min_firing_seconds=15,
)
NOW = T + timedelta(hours=1)


def group(status: str = "open", start_s: int = 0, **notification) -> Group:
    member = {
        "device_id": "r1",
        "started_at": T + timedelta(seconds=start_s),
        "ended_at": T + timedelta(seconds=start_s + 10),
        "status": status,
    }
    return Group("g", [member], notification=notification or None)


def states(g: Group, stream_s: int, now: datetime = NOW) -> list[str]:
    return [x.state for x in plan([g], T + timedelta(seconds=stream_s), now, SETTINGS)]


def test_a_new_incident_waits_for_the_hold_in_event_time_then_fires():
    assert SETTINGS.alert_hold_seconds == 35
    assert states(group(), 34) == []
    assert states(group(), 35) == ["firing"]
    # One that closed within the hold fires at once (then resolves later).
    assert states(group("closed"), 5) == ["firing"]
    assert backlog_of(plan([group()], T + timedelta(seconds=35), NOW, SETTINGS)) == 1


def test_an_open_incident_is_resent_every_interval_and_resolved_after_its_firing_settled():
    fired = NOW - timedelta(seconds=100)
    assert states(group(fired_at=fired, last_sent_at=NOW - timedelta(seconds=29)), 999) == []
    assert states(group(fired_at=fired, last_sent_at=NOW - timedelta(seconds=30)), 999) == [
        "firing"
    ]
    # Closed: resolved once the firing has been with Alertmanager 15 s, not before.
    just = NOW - timedelta(seconds=14)
    assert states(group("closed", fired_at=just, last_sent_at=just), 999) == []
    assert states(group("closed", fired_at=fired, last_sent_at=NOW), 999) == ["resolved"]
    # Resolved: re-sent for four intervals (an Alertmanager restart meanwhile), then done.
    done = {"fired_at": fired, "last_sent_at": NOW - timedelta(seconds=30)}
    assert states(group("closed", resolved_at=NOW - timedelta(seconds=60), **done), 9) == [
        "resolved"
    ]
    assert states(group("closed", resolved_at=NOW - timedelta(seconds=120), **done), 9) == []
    sends = plan(
        [group("closed", resolved_at=NOW - timedelta(seconds=60), **done)], T, NOW, SETTINGS
    )
    assert backlog_of(sends) == 0
