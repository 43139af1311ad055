"""Automatic enrollment: the change feed turned into enrollments and signals, by the rules of
`crmflow.rules`, through the starter of `crmflow.enrolling`."""

from ._dispatcher import Dispatcher, LeaseLost, TemporalUnreachable, load_index
from ._index import TriggerIndex
from ._pool import DispatchPool
from ._reconcile import Reconciler

__all__ = [
    "DispatchPool",
    "Dispatcher",
    "LeaseLost",
    "Reconciler",
    "TemporalUnreachable",
    "TriggerIndex",
    "load_index",
]
