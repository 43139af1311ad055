"""Which workflows a change can concern, found without scanning: active workflows indexed by
the property, list and event names their conditions read. The cost of a change then depends on
the workflows that read what changed, not on how many workflows or records there are."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from crmflow.rules import CREATED, DELETED, EVENT, LISTED, TIME, UNLISTED, UPDATED, Change, Trigger


class _Side:
    """Name -> workflows, for one object type and one side (enter or leave)."""

    def __init__(self) -> None:
        self.properties: dict[str, set[tuple[str, int]]] = defaultdict(set)
        self.lists: dict[str, set[tuple[str, int]]] = defaultdict(set)
        self.events: dict[str, set[tuple[str, int]]] = defaultdict(set)
        self.all: set[tuple[str, int]] = set()

    def add(self, trigger: Trigger, reads: object) -> None:
        ident = (trigger.key, trigger.version)
        self.all.add(ident)
        for name in reads.properties:  # type: ignore[attr-defined]
            self.properties[name].add(ident)
        for name in reads.lists:  # type: ignore[attr-defined]
            self.lists[name].add(ident)
        for name in reads.events:  # type: ignore[attr-defined]
            self.events[name].add(ident)

    def find(self, change: Change) -> set[tuple[str, int]]:
        if change.kind == CREATED:
            return set(self.all)
        if change.kind == UPDATED:
            found: set[tuple[str, int]] = set()
            for name in change.properties:
                found |= self.properties.get(name, set())
            return found
        if change.kind in (LISTED, UNLISTED):
            return set(self.lists.get(change.list_name or "", set()))
        if change.kind == EVENT:
            return set(self.events.get(change.event_name or "", set()))
        if change.kind == DELETED:
            return set(self.all)
        if change.kind == TIME:
            # Its workflow's versions only: the sweep judged that workflow's conditions.
            return {ident for ident in self.all if ident[0] == change.workflow_key}
        return set()


class TriggerIndex:
    def __init__(self, triggers: Iterable[Trigger]) -> None:
        self.triggers: dict[tuple[str, int], Trigger] = {}
        self._enter: dict[str, _Side] = defaultdict(_Side)
        self._leave: dict[str, _Side] = defaultdict(_Side)
        for trigger in triggers:
            self.triggers[(trigger.key, trigger.version)] = trigger
            object_type = trigger.definition.object_type
            if trigger.active and trigger.definition.enrollment.trigger == "criteria":
                self._enter[object_type].add(trigger, trigger.enter)
            self._leave[object_type].add(trigger, trigger.leave)

    def enter(self, change: Change) -> list[Trigger]:
        """Criteria workflows this change may enroll the record in."""
        side = self._enter.get(change.object_type)
        if side is None or change.kind == DELETED:
            return []
        return [self.triggers[i] for i in sorted(side.find(change))]

    def leave(self, change: Change) -> set[tuple[str, int]]:
        """Workflow versions whose exit rules read what changed (deleted: all of them)."""
        side = self._leave.get(change.object_type)
        return set() if side is None else side.find(change)

    def trigger(self, key: str, version: int) -> Trigger | None:
        return self.triggers.get((key, version))

    def triggers_of(self, idents: Iterable[tuple[str, int]]) -> list[Trigger]:
        """The triggers of these workflow versions (as `leave` names them)."""
        return [self.triggers[i] for i in sorted(idents) if i in self.triggers]
