"""The `custom` action: a user-registered Python handler.

Handlers are registered by name through the entry point group `crmflow.actions`
(`[project.entry-points."crmflow.actions"] score = "mypkg.actions:score"`) or through the
worker's `CRMFLOW_ACTIONS=score=mypkg.actions:score,other=mod:fn` (which wins on a name clash).

A handler is called as `handler(ctx: CustomActionContext)` and returns None or a mapping of
property updates for the enrolled record (None as a value clears a property). It runs outside
any store transaction, on the record as read just before; its updates and the step row then
commit in one short transaction, so they happen once. An exception stores nothing and the action
is retried (see `worker._policies.OUTWARD`), then recorded as failed. Side effects of the
handler's own outside the store should use `ctx.idempotency_key`, stable across retries.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity

from crmflow.definitions import CustomAction
from crmflow.store import RecordRepository

from ._once import Checkpoint, idempotency_key, no_checkpoint, run_once, stored_result
from .config import parse_actions_setting
from .models import ActionInput, ActionResult, EnrollmentContext

ENTRY_POINT_GROUP = "crmflow.actions"


@dataclass(frozen=True)
class CustomActionContext:
    """What a handler receives."""

    record: Mapping[str, Any]  # the enrolled record's properties (a copy)
    object_type: str
    record_id: str
    params: Mapping[str, Any]  # the action's `params`
    enrollment: EnrollmentContext  # workflow key, name, version, enrollment id
    action_id: str
    idempotency_key: str  # stable across retries of this action of this enrollment
    at: datetime  # when the action came due (workflow time)


Handler = Callable[[CustomActionContext], Mapping[str, Any] | None]


def _load(target: str) -> Handler:
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"{target!r} is not module:function")
    obj: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"{target} is not callable")
    return obj  # type: ignore[no-any-return]


class HandlerRegistry:
    """Handlers by name: entry points of `crmflow.actions`, then the settings entry. Loaded on
    first use, so a broken handler fails its own actions, not the worker."""

    def __init__(self, spec: str | None = None) -> None:
        self._targets: dict[str, Callable[[], Handler]] = {}
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            self._targets[entry_point.name] = entry_point.load
        for name, target in parse_actions_setting(spec).items():
            self._targets[name] = lambda target=target: _load(target)  # type: ignore[misc]
        self._loaded: dict[str, Handler] = {}

    def names(self) -> list[str]:
        return sorted(self._targets)

    def get(self, name: str) -> Handler:
        """The handler; KeyError when none is registered, other errors when it cannot load."""
        if name not in self._loaded:
            self._loaded[name] = self._targets[name]()
        return self._loaded[name]


class CustomActivities:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        registry: HandlerRegistry,
        *,
        checkpoint: Checkpoint | None = None,
        dry_run: bool = False,
    ) -> None:
        self.sessions = sessions
        self.registry = registry
        self.dry_run = dry_run
        self.checkpoint = checkpoint or no_checkpoint

    @activity.defn(name="run_custom_action")
    def run_custom_action(self, input: ActionInput) -> ActionResult:
        """The handler runs outside any transaction (it may take its time, or call other
        systems, without holding the store's write lock); then, in one short transaction, its
        property updates are applied and the step stored, unless an earlier attempt stored the
        step already: the step row keeps the updates exactly once."""
        action = input.action
        if not isinstance(action, CustomAction):
            raise TypeError(f"run_custom_action cannot run a {action.type} action")
        done = stored_result(self.sessions, input)
        if done is not None:
            return done
        outcome = self._call(input, action)
        if isinstance(outcome, ActionResult):
            failure = outcome
            return run_once(self.sessions, input, lambda session: failure)
        updates = outcome
        return run_once(
            self.sessions, input, lambda session: self._apply(session, input, action, updates)
        )

    def _call(self, input: ActionInput, action: CustomAction) -> ActionResult | dict[str, Any]:
        """The handler's property updates, or the result that ends the action without any."""
        ctx = input.context
        try:
            handler = self.registry.get(action.handler)
        except KeyError:
            known = ", ".join(self.registry.names()) or "none"
            return ActionResult(
                outcome=f"failed: no custom action handler '{action.handler}' "
                f"is registered on the worker (registered: {known})",
                failed=True,
            )
        except Exception as exc:
            return ActionResult(
                outcome=f"failed: handler '{action.handler}' cannot be loaded: {exc}", failed=True
            )
        with self.sessions() as session:
            record = RecordRepository(session).get(ctx.object_type, ctx.record_id)
            properties = dict(record.properties) if record is not None else None
        if properties is None:
            return _gone(ctx)
        if self.dry_run:
            return ActionResult(outcome=f"simulated: custom {action.handler} (not run)")
        self.checkpoint("before_effect", input)
        updates = handler(
            CustomActionContext(
                record=properties,
                object_type=ctx.object_type,
                record_id=ctx.record_id,
                params=dict(action.params),
                enrollment=ctx,
                action_id=action.id,
                idempotency_key=idempotency_key(activity.info().workflow_id or "", action.id),
                at=input.at,
            )
        )
        if updates is None:
            return ActionResult(outcome=f"custom {action.handler}: done")
        if not isinstance(updates, Mapping) or not all(isinstance(k, str) for k in updates):
            return ActionResult(
                outcome=f"failed: handler '{action.handler}' returned "
                f"{type(updates).__name__}, not a mapping of property updates",
                failed=True,
            )
        bad = [k for k, v in updates.items() if not isinstance(v, str | int | float | bool | None)]
        if bad:
            return ActionResult(
                outcome=f"failed: handler '{action.handler}' returned a non-scalar value "
                f"for {', '.join(sorted(bad))}",
                failed=True,
            )
        return dict(updates)

    def _apply(
        self, session: Session, input: ActionInput, action: CustomAction, updates: dict[str, Any]
    ) -> ActionResult:
        ctx = input.context
        records = RecordRepository(session)
        if records.get(ctx.object_type, ctx.record_id, for_update=True) is None:
            return _gone(ctx)  # deleted while the handler ran
        records.update(ctx.object_type, ctx.record_id, updates, now=input.at)
        # Still inside the transaction: dying here rolls the updates back with the step.
        self.checkpoint("after_effect", input)
        changed = ", ".join(sorted(updates)) or "nothing"
        return ActionResult(
            outcome=f"custom {action.handler}: updated {changed}", detail={"updates": updates}
        )


def _gone(ctx: EnrollmentContext) -> ActionResult:
    return ActionResult(
        outcome=f"failed: {ctx.object_type} '{ctx.record_id}' no longer exists", failed=True
    )
