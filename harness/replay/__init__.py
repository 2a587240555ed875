"""Replay methods (one module each) and the replay buffer.

Importing this package registers every method in :data:`REGISTRY`; add a method by writing a
module with an ``@register``-ed :class:`ReplayMethod` subclass and importing it below.
"""

from harness.replay import ce, kl, l1, l2, none, tm  # noqa: F401  (registration side effects)
from harness.replay.base import (
    REGISTRY,
    HiddenForward,
    ReplayMethod,
    ReplayView,
    combine,
    get_method,
    register,
)
from harness.replay.buffer import ReplayBuffer
from harness.replay.states import TMStates, pack_codes, tm_loss, tm_loss_raw, unpack_codes

__all__ = [
    "REGISTRY",
    "HiddenForward",
    "ReplayBuffer",
    "ReplayMethod",
    "ReplayView",
    "TMStates",
    "combine",
    "get_method",
    "pack_codes",
    "register",
    "tm_loss",
    "tm_loss_raw",
    "unpack_codes",
]
