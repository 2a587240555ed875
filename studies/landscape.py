"""Does GeRe keep the model in a flatter region of the loss landscape?

Question: GeRe's paper argues that replay with the threshold-margin loss keeps fine-tuning
inside a flatter, more robust basin of the starting model. Slices of the loss along random
directions around each end-of-task checkpoint, and along the straight line between
consecutive checkpoints (the barrier), on the previous task, the new task and general text,
show whether that holds, with full fine-tuning and with LoRA (in the merged-update space).

Grid: replay.method in {none, tm} x model.tuning in {full, lora} x seed in {0, 1}
(8 trials); every checkpoint sliced: interpolation from the previous one (21 alphas in
[-0.5, 1.5]), a 1-D random slice (21 points in [-0.5, 0.5]) and a 2-D one (11 x 11),
filter-normalised, 16 examples per dataset. Smoke: {none, tm} x {full, lora} (4 trials),
2 tasks, 9 alphas, 7 points, 5 x 5.

Cost (printed by the script, in forward passes of one batch of <= 8 x 256 tokens, no
backward): per stage 21 + 21 + 121 = 163 points x 3 datasets x 2 batches = 978 passes;
llama-3.1-8b (15 tasks): 14,344 passes per trial (stage 1 has no 'prev' task), at most
29M tokens forward -- the same order as the trial's own training (45,000 task sequences
of <= 512 tokens plus replay, forward and backward); --set landscape.stages=last cuts it
15-fold. Points of a slice are sharded over the trial's Ray Train workers (8 on the 8B
preset), and an interrupted stage recomputes only its missing points.

Scale: slices rewrite whole weight tensors, so this study runs ZeRO-2 (weights replicated,
gradients and optimizer states sharded). llama-3.1-8b full fine-tuning on 8 GPUs then needs
16 GB bf16 weights + 2 GB gradient shard + 12 GB fp32 master/Adam shard (16 B/param / 8)
~ 30 GB per GPU plus activations: fits an 80 GB GPU; LoRA needs ~17 GB.

Commands:
    python studies/landscape.py --smoke-test --report
    # on a cluster, with its token (clusters/README.md, "Token authentication"):
    RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$HOME/.ray-gere/auth_token \\
        ray job submit --working-dir . -- python studies/landscape.py \\
        --preset llama-3.1-8b --storage-path s3://YOUR-BUCKET/gere --out /mnt/shared/results
"""

import sys

from harness.grid import axis
from harness.study import Study
from studies import run

CELLS = [axis("replay.method", ["none", "tm"]), axis("model.tuning", ["full", "lora"])]
GRID = [*CELLS, axis("seed", [0, 1])]
SMOKE = CELLS

SETTINGS = {
    "scale.zero_stage": 2,
    "landscape": {
        "enabled": True,
        "stages": "all",
        "interpolation_points": 21,
        "random_1d_points": 21,
        "random_2d_resolution": 11,
        "examples_per_dataset": 16,
        "batch_size": 8,
        "max_tokens": 256,
    },
}
SMOKE_SETTINGS = {
    "landscape": {
        "interpolation_points": 9,
        "random_1d_points": 7,
        "random_2d_resolution": 5,
        "examples_per_dataset": 8,
        "max_tokens": 96,
    },
}

STUDY = Study("landscape", __doc__, GRID, SMOKE, settings=SETTINGS, smoke_settings=SMOKE_SETTINGS)

if __name__ == "__main__":
    sys.exit(run(STUDY))
