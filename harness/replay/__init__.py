"""Replay methods (one module each) and the replay buffer.

Each method's name, settings and facts are registered in :mod:`harness.config.replay_methods`
(the one list of method names: the config validates ``replay.method`` and ``replay.settings``
against it, and the command line, the demo and the result tables take their names and order
from it); its module here is imported only when a trial builds it (:func:`get_method`).
"""

from harness.config.replay_methods import REPLAY, method_names
from harness.registry import Setting
from harness.replay.base import HiddenForward, ReplayMethod, ReplayView, combine, get_method
from harness.replay.buffer import ReplayBuffer
from harness.replay.states import TMStates, pack_codes, tm_loss, tm_loss_raw, unpack_codes

REGISTRY = REPLAY

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
    "tm_loss",
    "tm_loss_raw",
    "unpack_codes",
]
