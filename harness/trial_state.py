"""What a trial is besides its weights: its state (the rows of every record kind so far, the
step and token counts, the RNG, the data it ran on) as a checkpoint saves it, the files a
checkpoint holds, and the result a finished run returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

KINDS = ("accuracy", "general", "lm_eval", "predictions", "curve", "plasticity", "landscape")
"""The record kinds a trial's state holds rows of (``summary`` is written from them)."""
CHECKPOINT_STATE = "state.json"
"""The trial state's file inside a checkpoint directory."""
CHECKPOINT_CONFIG = "trial_config.json"
"""The config the checkpoint was saved with: a resume with other settings is refused."""


@dataclass
class TrialState:
    """Everything of a trial that is not weights: what a checkpoint saves besides the model."""

    VERSION: ClassVar[int] = 1
    trial_id: str
    finished_stage: int = 0
    """The last task trained (0: none yet); its records are complete once its hooks ran."""
    global_step: int = 0
    train_tokens: int = 0
    train_seconds: float = 0.0
    rows: dict[str, list[dict]] = field(default_factory=lambda: {k: [] for k in KINDS})
    torch_rng: list[int] | None = None
    """torch's CPU RNG state at the checkpoint (dropout, LoRA init of later adapters)."""
    data_fingerprint: str | None = None
    """The data the trial ran on (:func:`harness.inputs.data_fingerprint`): a resume on other
    data is refused. None in checkpoints written before it existed."""

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrialState:
        """Read a saved state; one written before versioning (no 'version') has the same keys."""
        version = d.get("version", 1)
        if version != cls.VERSION:
            raise ValueError(
                f"trial state version {version} is not {cls.VERSION}; this checkpoint was "
                "written by another harness version: re-run the trial from the start"
            )
        rows = {k: list(d.get("rows", {}).get(k, [])) for k in KINDS}
        keys = ("finished_stage", "global_step", "train_tokens", "train_seconds", "torch_rng")
        keys += ("data_fingerprint",)
        return cls(trial_id=d["trial_id"], rows=rows, **{k: d[k] for k in keys if k in d})


@dataclass
class TrialResult:
    trial_id: str
    status: str
    summary: dict
    files: dict[str, Path | str] = field(default_factory=dict)
    """Each record kind's file: a Path, or a URI when ``out`` is an object store."""
    train_tokens: int = 0
    train_seconds: float = 0.0
    setup_seconds: float = 0.0
    """Data, backend (DeepSpeed initialisation), model, tokenisation, replay preparation."""
