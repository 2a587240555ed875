"""The replay-method interface, its registry and the loss combination rule.

Every replay method (one file each: none, ce, kl, l1, l2, tm) is a small :class:`ReplayMethod`
subclass; its name, settings and facts are registered in :mod:`harness.config.replay_methods`. The training loop only ever talks to this
interface: it asks the class flags what the forward pass must produce (replay rows at all,
hidden states, a frozen-model forward), calls :meth:`ReplayMethod.prepare` once per trial and
:meth:`ReplayMethod.term` on every step, then adds the term with :func:`combine`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor

from harness.config.replay_methods import REPLAY
from harness.registry import Configured

if TYPE_CHECKING:
    from harness.replay.buffer import ReplayBuffer

HiddenForward = Callable[[Tensor, Tensor], Tensor]
"""``forward(input_ids, attention_mask) -> last hidden state [B, L, D]`` of the frozen model."""


@dataclass(frozen=True)
class Ranks:
    """How a trial's ranks share a preparation: this rank, their number, ``gather(obj) ->
    [obj of rank 0, rank 1, ...]`` on every rank, and ``idle()``, a discarded forward a rank
    with less work makes so that every rank makes the same forward calls (sharded weights)."""

    rank: int
    world: int
    gather: Callable[[object], list]
    idle: Callable[[], None]


@dataclass
class ReplayView:
    """The replay rows of one training forward pass."""

    logits: Tensor
    """[R, L, V] logits of the current model."""
    hidden: Tensor | None
    """[R, L, D] current last hidden state (after the final norm, HF ``hidden_states[-1]``);
    present when the method's ``needs_hidden`` is set."""
    mask: Tensor
    """[R, L] bool, True at non-padding tokens."""
    index: Tensor
    """[R] long, buffer indices of these rows."""
    reference: Callable[[], tuple[Tensor, Tensor]]
    """Lazily returns (ref_logits [R, L, V], ref_hidden [R, L, D]) of the FROZEN starting model
    on the same rows under no_grad; only called by methods with ``needs_reference``. Lazy so
    methods that do not need it cost no extra forward."""


class ReplayMethod(Configured):
    """Base class: one subclass per replay loss, registered by name
    (:data:`harness.config.replay_methods.REPLAY`, with its settings)."""

    name: ClassVar[str]
    """Registry name, used in configs and results."""
    registry = REPLAY
    uses_replay: ClassVar[bool] = True
    """False only for ``none``: the trial puts no replay rows in any batch."""
    needs_hidden: ClassVar[bool] = False
    """The forward pass must return the replay rows' last hidden state (l1, l2, tm)."""
    needs_reference: ClassVar[bool] = False
    """Each replay batch also needs a frozen-model forward (kl, l1, l2)."""

    @property
    def default_weight(self) -> float:
        """Weight w in ``CE + w * term`` when the config does not set one (its entry's)."""
        return REPLAY.entry(self.name).default_weight

    def prepare(
        self,
        forward: HiddenForward,
        buffer: ReplayBuffer,
        *,
        batch_size: int,
        cache_dir: Path | None = None,
        ranks: Ranks | None = None,
    ) -> None:
        """Precompute what the term needs, once per trial, with the frozen starting model.

        Default: nothing. ``forward`` runs the frozen model without gradients. ``ranks``: the
        trial's ranks share the work (each a part of the buffer) and all end with the result.
        """

    def term(self, view: ReplayView) -> Tensor | None:
        """The replay-loss term (a scalar whose gradient reaches ``view.logits``/``view.hidden``),
        or None when the method adds nothing beyond the replay rows' CE."""
        raise NotImplementedError

    def save_state(self, path: Path) -> bool:
        """Write what ``prepare`` computed into ``path`` (a trial checkpoint), so a resumed
        trial need not recompute it from a starting model it no longer has. Returns whether
        there was anything to save. Default: nothing."""
        return False

    def load_state(self, path: Path) -> None:
        """Restore what :meth:`save_state` wrote (instead of calling ``prepare``)."""


def get_method(name: str, **settings: object) -> ReplayMethod:
    """Build a registered replay method; unknown names or settings fail with a suggestion."""
    return REPLAY.build(name, **settings)


def combine(ce: Tensor, term: Tensor | None, weight: float | str) -> tuple[Tensor, Tensor]:
    """Total loss ``ce + w * term`` and the weight used, as a tensor (for logging).

    ``weight="dynamic"`` is GeRe's adaptive weight ``w = ce.detach() / term.detach()``: the
    term's contribution is rescaled to the CE's current size while its gradient direction is
    kept; when the term is 0 (e.g. TM at step 0) w is 0 rather than inf/nan. ``term=None``
    (methods none and ce) gives ``(ce, 0)``.
    """
    if isinstance(weight, str):
        if weight != "dynamic":
            raise ValueError(f"Replay weight {weight!r} is not a number or 'dynamic'.")
    elif not weight >= 0:
        raise ValueError(f"Replay weight {weight!r} must be >= 0 (or 'dynamic').")
    if term is None:
        return ce, torch.zeros((), dtype=ce.dtype, device=ce.device)
    if weight == "dynamic":
        denominator = term.detach()
        safe = torch.where(denominator == 0, torch.ones_like(denominator), denominator)
        w = torch.where(denominator == 0, torch.zeros_like(denominator), ce.detach() / safe)
    else:
        w = torch.tensor(float(weight), dtype=term.dtype, device=term.device)
    return ce + w * term, w
