"""One incident per failure: device incidents on linked devices whose spans overlap form one
correlated incident, with a probable root device and the others as its symptoms.

Pure functions over what the notifier reads each cycle (alerting/notifier.py): the incidents
that ended within its horizon, the assignments already made (kept in PostgreSQL), and the
links as they are now (device_links can change between cycles). Nothing else is kept: the
state is bounded by the horizon, and a restart carries on from the tables.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

Key = tuple[str, datetime]


@dataclass(frozen=True)
class Incident:
    device_id: str
    started_at: datetime
    ended_at: datetime
    peak_severity: float = 0.0

    @property
    def key(self) -> Key:
        return (self.device_id, self.started_at)


@dataclass(frozen=True)
class Root:
    device_id: str
    reason: str


def correlated_id(incident: Incident) -> str:
    """A correlated incident is named after its first member: '<device>@<start, ISO-8601>'."""
    return f"{incident.device_id}@{incident.started_at.isoformat()}"


class Links:
    """device_links as read this cycle: each device's outgoing and incoming links (a link
    leads from device_a to device_b). Built once per cycle, shared by every lookup."""

    def __init__(self, pairs: Iterable[tuple[str, str]]):
        self.out: dict[str, set[str]] = defaultdict(set)
        self.into: dict[str, set[str]] = defaultdict(set)
        for a, b in pairs:
            if a != b:
                self.out[a].add(b)
                self.into[b].add(a)

    @classmethod
    def of(cls, links: Links | Iterable[tuple[str, str]]) -> Links:
        return links if isinstance(links, Links) else cls(links)

    def around(self, device: str) -> set[str]:
        """The devices linked to ``device``, either direction."""
        return self.out.get(device, set()) | self.into.get(device, set())


def related(a: Incident, b: Incident, gap: timedelta) -> bool:
    """The two started at most ``gap`` apart and their spans overlap (or lie at most ``gap``
    apart): one failure spreading, not a long-running condition that a later, unrelated
    failure of a neighbour happens to overlap."""
    return (
        abs(a.started_at - b.started_at) <= gap
        and a.started_at <= b.ended_at + gap
        and b.started_at <= a.ended_at + gap
    )


def assign(
    incidents: list[Incident],
    assigned: dict[Key, str],
    links: Links | Iterable[tuple[str, str]],
    gap: timedelta,
    resolved: frozenset[str] = frozenset(),
) -> dict[Key, str]:
    """Correlated incident ids for the incidents that have none yet (the others keep theirs).
    Nothing joins a correlated incident in ``resolved`` (its page is over: a late member
    would never be told).

    New incidents that are linked and related in time (``related``), directly or through
    each other, form one component. A lone new incident that is related to members of
    existing correlated incidents joins the oldest of those; otherwise a component is a new
    correlated incident, named after its first member. Existing ones are never merged with
    each other: the caller passes as ``assigned`` those that were paged, which stay as paged.
    """
    links = Links.of(links)
    by_device: dict[str, list[Incident]] = defaultdict(list)
    for incident in incidents:
        by_device[incident.device_id].append(incident)
    new = sorted((i for i in incidents if i.key not in assigned), key=lambda i: i.started_at)
    parent: dict[Key, Key] = {i.key: i.key for i in new}

    def find(k: Key) -> Key:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    touches: dict[Key, set[str]] = defaultdict(set)
    for incident in new:
        for device in links.around(incident.device_id):
            for other in by_device.get(device, ()):
                if not related(incident, other, gap):
                    continue
                if other.key in assigned:
                    touches[incident.key].add(assigned[other.key])
                else:
                    parent[find(incident.key)] = find(other.key)
    components: dict[Key, list[Incident]] = defaultdict(list)
    for incident in new:
        components[find(incident.key)].append(incident)

    group_start: dict[str, datetime] = {}
    for incident in incidents:
        cid = assigned.get(incident.key)
        if cid is not None:
            start = group_start.get(cid)
            group_start[cid] = (
                incident.started_at if start is None else min(start, incident.started_at)
            )

    out: dict[Key, str] = {}
    for members in components.values():
        existing = set().union(*(touches[m.key] for m in members)) - resolved
        # A lone incident related to existing correlated incidents is a late symptom: it
        # joins the oldest. New linked incidents are a failure with a root of their own.
        if existing and len(members) == 1:
            target = min(existing, key=lambda cid: (group_start[cid], cid))
        else:
            target = correlated_id(min(members, key=lambda m: (m.started_at, m.device_id)))
        out.update((m.key, target) for m in members)
    return out


def rank_root(
    members: list[Incident],
    links: Links | Iterable[tuple[str, str]],
    onset_tolerance: timedelta,
) -> Root:
    """The probable root of a correlated incident, and why.

    Ranked by onset (devices whose first alert lies within ``onset_tolerance`` of the
    earliest tie: detection works in whole windows), then by direction along the links (the
    links a device has to the other members minus the links they have to it: a failure
    flows from a device to the ones its links lead to), then by peak severity.
    """
    first: dict[str, datetime] = {}
    peak: dict[str, float] = {}
    for m in members:
        first[m.device_id] = min(first.get(m.device_id, m.started_at), m.started_at)
        peak[m.device_id] = max(peak.get(m.device_id, 0.0), m.peak_severity or 0.0)
    devices = set(first)
    links = Links.of(links)
    out_links = {d: links.out.get(d, set()) & devices for d in devices}
    in_links = {d: links.into.get(d, set()) & devices for d in devices}
    t0 = min(first.values())

    def order(device: str) -> tuple:
        late = first[device] - t0
        onset = timedelta(0) if late <= onset_tolerance else late
        direction = len(out_links[device]) - len(in_links[device])
        return (onset, -direction, -peak[device], device)

    root = min(devices, key=order)
    others = len(devices) - 1
    if not others:
        return Root(root, f"{root}: the only device (onset {first[root].isoformat()})")
    early = sorted(d for d in devices if first[d] - t0 <= onset_tolerance)
    onset = (
        f"first to alert ({first[root].isoformat()})"
        if len(early) == 1
        else f"among the {len(early)} devices that alerted first (within "
        f"{onset_tolerance.total_seconds():.0f} s of {t0.isoformat()})"
    )
    return Root(
        root,
        f"{root}: {onset}; links lead from it to {len(out_links[root])} and to it from "
        f"{len(in_links[root])} of the {others} other devices; peak severity "
        f"{peak[root]:.0f} (highest {max(peak.values()):.0f})",
    )
