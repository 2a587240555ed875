"""The replay-method interface, its registry and the loss combination rule.

Every replay method (one file each: none, ce, kl, l1, l2, tm) is a small :class:`ReplayMethod`
subclass registered by name with ``@register``. The training loop only ever talks to this
interface: it asks the class flags what the forward pass must produce (replay rows at all,
hidden states, a frozen-model forward), calls :meth:`ReplayMethod.prepare` once per trial and
:meth:`ReplayMethod.term` on every step, then adds the term with :func:`combine`.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import torch
from torch import Tensor

from harness.suggest import did_you_mean

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


class ReplayMethod:
    """Base class: one subclass per replay loss, registered by name."""

    name: ClassVar[str]
    """Registry name, used in configs and results."""
    uses_replay: ClassVar[bool] = True
    """False only for ``none``: the trial puts no replay rows in any batch."""
    needs_hidden: ClassVar[bool] = False
    """The forward pass must return the replay rows' last hidden state (l1, l2, tm)."""
    needs_reference: ClassVar[bool] = False
    """Each replay batch also needs a frozen-model forward (kl, l1, l2)."""
    default_weight: ClassVar[float] = 1.0
    """Weight w in ``CE + w * term`` when the config does not set one (tm: 100)."""
    display_order: ClassVar[int] = 100
    """Place in listings, help and result tables (:func:`method_names`): the baseline first
    (none: 0), GeRe's tm last of the built-in methods (50); a new method goes after them
    unless it sets its own. Ties are broken by name."""

    def __init__(self) -> None:
        """Subclasses take their settings as keyword-only arguments with defaults and a type
        annotation, documented in their ``__init__`` docstring one ``name: text`` line each
        (see :func:`settings_spec`). The config builds the method to validate its settings, so
        the constructor must be cheap and raise ValueError naming a bad value."""

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

    def settings(self) -> dict[str, object]:
        """The method's settings as passed to get_method (for logging and results)."""
        return {key: getattr(self, key) for key in _setting_names(type(self))}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
        return f"{type(self).__name__}({args})"


REGISTRY: dict[str, type[ReplayMethod]] = {}
"""Replay methods by name; filled by the ``@register`` lines of the method modules."""

M = TypeVar("M", bound=type[ReplayMethod])


def register(cls: M) -> M:
    """Class decorator adding a method to :data:`REGISTRY` under ``cls.name``."""
    from harness.core import add_to_registry

    add_to_registry(REGISTRY, cls, "Replay method")
    return cls


def method_names() -> list[str]:
    """Every registered method's name, in display order (none, ce, kl, l1, l2, tm, then any
    newer method): the one list that configs, help, the demo and result tables use."""
    return sorted(REGISTRY, key=lambda name: (REGISTRY[name].display_order, name))


@dataclass(frozen=True)
class Setting:
    """One setting of a replay method: a keyword-only argument of its ``__init__``."""

    name: str
    type: Any
    """The annotation, resolved (e.g. ``float``)."""
    default: Any
    """The default value (None where ``required``)."""
    doc: str
    """Its line in the ``__init__`` docstring (``name: text``), without the name."""
    required: bool = False
    """The argument has no default."""


def settings_spec(cls: type[ReplayMethod]) -> list[Setting]:
    """The settings of a method class, in signature order."""
    params = [
        p
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.name != "self" and p.kind is p.KEYWORD_ONLY
    ]
    hints = typing.get_type_hints(cls.__init__) if params else {}
    docs = _setting_docs(inspect.getdoc(cls.__init__) or "", [p.name for p in params])
    return [
        Setting(
            name=p.name,
            type=hints.get(p.name, Any),
            default=None if p.default is p.empty else p.default,
            doc=docs.get(p.name, ""),
            required=p.default is p.empty,
        )
        for p in params
    ]


def _setting_docs(doc: str, names: list[str]) -> dict[str, str]:
    """``name: text`` paragraphs of a docstring (continuation lines are joined)."""
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in doc.splitlines():
        head, sep, rest = line.strip().partition(":")
        if sep and head in names:
            current = out.setdefault(head, [])
            current.append(rest.strip())
        elif not line.strip():
            current = None
        elif current is not None:
            current.append(line.strip())
    return {name: " ".join(" ".join(parts).split()) for name, parts in out.items()}


def _setting_names(cls: type[ReplayMethod]) -> list[str]:
    params = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in params if p.name != "self" and p.kind is p.KEYWORD_ONLY]


def get_method(name: str, **settings: object) -> ReplayMethod:
    """Build a registered replay method; unknown names or settings fail with a suggestion."""
    if name not in REGISTRY:
        available = method_names()
        raise ValueError(
            f"Unknown replay method {name!r}{did_you_mean(name, available)}. "
            f"Available: {', '.join(available)}"
        )
    cls = REGISTRY[name]
    known = _setting_names(cls)
    unknown = [key for key in settings if key not in known]
    if unknown:
        problems = [f"{key!r}{did_you_mean(key, known)}" for key in unknown]
        raise ValueError(
            f"Unknown setting {', '.join(problems)} for replay method {name!r}. "
            f"Settings of {name!r}: {', '.join(known) or '(none)'}."
        )
    return cls(**settings)


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
