"""The replay methods the config knows: each one's settings dataclass and one registration line.

The implementations live in :mod:`harness.replay` (one module per method) and are imported
only when a trial builds one (:meth:`harness.registry.Entry.load`). Add a method by writing its
module (a :class:`harness.replay.base.ReplayMethod` subclass with the same ``name``) and
registering it here with its settings; the config then validates, documents and hashes its
settings, and the command line, the demo and the result tables list it in ``order``.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.registry import Entry, Registry, coerced


@dataclass(frozen=True)
class ReplayEntry(Entry):
    default_weight: float = 1.0
    """Weight w in ``CE + w * term`` when the config does not set one (tm: 100)."""


REPLAY: Registry[ReplayEntry] = Registry("replay method")
"""Replay methods by name: the one list of them."""


@dataclass(frozen=True)
class NoSettings:
    """A method without settings."""


@dataclass(frozen=True)
class KLSettings:
    temperature: float = 2.0
    """softmax temperature T of both distributions; > 0 (reference: 2.0)."""
    t2_scale: bool = True
    """multiply the term by T^2 so its gradients keep their size across temperatures (Hinton
    et al.); GeRe's reference calc_kl does not: false."""
    mask_padding: bool = True
    """average over non-padding positions only; GeRe's reference calc_kl averages over every
    position, padding included: false."""

    def __post_init__(self) -> None:
        coerced(self)
        if not self.temperature > 0:
            raise ValueError(
                f"kl temperature must be > 0, got {self.temperature!r} (reference: 2.0)."
            )


@dataclass(frozen=True)
class TMSettings:
    k: float = 1.0
    """the thresholds are mean +- k * std (population std) of each hidden dimension of the
    frozen model on the replay texts; >= 0 (GeRe: 1.0)."""

    def __post_init__(self) -> None:
        coerced(self)
        if not self.k >= 0:
            raise ValueError(f"tm k must be >= 0, got {self.k!r} (GeRe: 1.0).")


REPLAY.add(
    ReplayEntry(
        "none",
        "harness.replay.none:NoReplay",
        NoSettings,
        order=0,
        label="none (sequential FT)",
        colour="tab:gray",
        summary="No replay rows in any batch; nothing to add to the task loss.",
    )
)
REPLAY.add(
    ReplayEntry(
        "ce",
        "harness.replay.ce:CEReplay",
        NoSettings,
        order=10,
        label="CE replay",
        colour="tab:blue",
        summary="Replay rows get CE only.",
    )
)
REPLAY.add(
    ReplayEntry(
        "kl",
        "harness.replay.kl:KLReplay",
        KLSettings,
        order=20,
        label="KL replay",
        colour="tab:purple",
        summary="CE on replay rows + KL to the frozen model's temperature-softened "
        "next-token distribution.",
    )
)
REPLAY.add(
    ReplayEntry(
        "l1",
        "harness.replay.l1:L1Replay",
        NoSettings,
        order=30,
        label="L1 replay",
        colour="tab:olive",
        summary="CE on replay rows + mean absolute deviation from the frozen hidden states.",
    )
)
REPLAY.add(
    ReplayEntry(
        "l2",
        "harness.replay.l2:L2Replay",
        NoSettings,
        order=40,
        label="L2 replay",
        colour="tab:brown",
        summary="CE on replay rows + mean squared deviation from the frozen hidden states.",
    )
)
REPLAY.add(
    ReplayEntry(
        "tm",
        "harness.replay.tm:TMReplay",
        TMSettings,
        order=50,
        label="TM (GeRe)",
        colour="tab:red",
        default_weight=100.0,
        summary="CE on replay rows + w * TM(h; states and thresholds of the frozen model).",
    )
)


def method_names() -> list[str]:
    """Every replay method's name in display order (none, ce, kl, l1, l2, tm, then any newer
    method): the one list that configs, help, the demo and result tables use."""
    return REPLAY.names()
