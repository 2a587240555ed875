"""Loss-landscape slices: random-direction slices and interpolations between checkpoints.

Pure PyTorch, no Ray. A trial's ranks share a slice's points: each evaluates a disjoint
:func:`shard` of :func:`slice_points`, and the rows of the shards, concatenated in shard order,
equal a serial run's rows exactly.

Modules: :mod:`.directions` (weights, seeded directions, writing points), :mod:`.slices` (slice
identity, grids, sharding, evaluation, cost), :mod:`.lora` (the merged-update space of a PEFT
model), :mod:`.recording` (a trial's checkpoints, as a stage hook).

Definitions (Li et al. 2018, "Visualizing the Loss Landscape of Neural Nets"; Goodfellow et al.
2015, "Qualitatively characterizing neural network optimization problems"):

* **Random slices** (Li et al. 2018): ``L(theta + alpha*d1 [+ beta*d2])`` with Gaussian
  directions. ``filter`` normalisation rescales each row of each >=2-D weight (one output unit of
  a Linear, one token vector of an embedding) to the norm of the same row of theta; ``layer``
  rescales each tensor to the tensor's norm; ``none`` keeps N(0, 1) entries. 1-D tensors (norm
  weights, biases) get a zero direction in every mode, so all modes move the same weights.
* **Interpolation** (Goodfellow et al. 2015): ``L((1-alpha)*theta_A + alpha*theta_B)`` between
  consecutive checkpoints, alpha in [-0.5, 1.5]; the barrier
  (:func:`results.diagnostics.barrier`) is the largest excess over the straight line between the
  end points.

Cost control: one fixed evaluation batch per dataset for every point; directions are
regenerated from seeds (a seed per parameter name, so any process and any dict order gives the
same tensor), never stored; every point's weights are rebuilt from a pristine copy in float32
and cast once (never stepped in place: bf16 cannot resolve steps below ~1e-2 and accumulated
steps drift), so points can be evaluated in any order, on any worker, with identical results.

LoRA: in ``space="lora_merged"`` the coordinates are the adapted weights with the adapter
merged, ``W0 + delta_W`` with ``delta_W = B @ A * scale`` (:func:`merged_lora_params`);
:func:`lora_merged` evaluates such points on the PEFT model itself (adapters disabled, merged
weights written into the frozen base layers, W0 restored on exit). Interpolating two LoRA
checkpoints interpolates their merged ``delta_W``.

Every function returns rows of the ``landscape`` record kind (``results.schema``).
"""

from harness.core import EvalBatch, eval_batches, shard
from harness.landscape.directions import (
    Coord,
    Normalisation,
    Params,
    PointKey,
    SliceKind,
    Space,
    pristine,
    random_direction,
)
from harness.landscape.lora import MergedLora, lora_merged, merged_lora_params
from harness.landscape.recording import (
    ROUND,
    LandscapeHook,
    previous_weights,
    record_stage,
    stage_specs,
)
from harness.landscape.slices import (
    Batches,
    SliceSpec,
    batch_loss,
    cost_forward_passes,
    done_keys,
    evaluate_interpolation,
    evaluate_points,
    interpolation_points,
    interpolation_slice,
    point_key,
    random_slice,
    slice_directions,
    slice_points,
)

__all__ = [
    "ROUND",
    "Batches",
    "Coord",
    "EvalBatch",
    "LandscapeHook",
    "MergedLora",
    "Normalisation",
    "Params",
    "PointKey",
    "SliceKind",
    "SliceSpec",
    "Space",
    "batch_loss",
    "cost_forward_passes",
    "done_keys",
    "eval_batches",
    "evaluate_interpolation",
    "evaluate_points",
    "interpolation_points",
    "interpolation_slice",
    "lora_merged",
    "merged_lora_params",
    "point_key",
    "pristine",
    "previous_weights",
    "random_direction",
    "random_slice",
    "record_stage",
    "shard",
    "slice_directions",
    "slice_points",
    "stage_specs",
]
