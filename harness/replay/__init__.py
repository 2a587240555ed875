"""Replay methods (one module each) and the replay buffer.

Importing this package registers every method in :data:`REGISTRY`; add a method by writing a
module with an ``@register``-ed :class:`ReplayMethod` subclass and importing it below. The
registry is the one list of method names: the config validates ``replay.method`` and
``replay.settings`` against it (:func:`method_names`, :func:`settings_spec`), and the command
line, the demo and the result tables take their names and order from it.
"""

from harness.replay import ce, kl, l1, l2, none, tm  # noqa: F401  (registration side effects)
from harness.replay.base import (
    REGISTRY,
    HiddenForward,
    ReplayMethod,
    ReplayView,
    Setting,
    combine,
    get_method,
    method_names,
    register,
    settings_spec,
)
from harness.replay.buffer import ReplayBuffer
from harness.replay.states import TMStates, pack_codes, tm_loss, tm_loss_raw, unpack_codes

__all__ = [
    "REGISTRY",
    "HiddenForward",
    "ReplayBuffer",
    "ReplayMethod",
    "ReplayView",
    "Setting",
    "TMStates",
    "combine",
    "get_method",
    "method_names",
    "pack_codes",
    "register",
    "settings_spec",
    "tm_loss",
    "tm_loss_raw",
    "unpack_codes",
]
