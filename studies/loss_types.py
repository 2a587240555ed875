"""Which replay loss protects general ability best at the same replay buffer?

Question: GeRe compares label fitting (CE), logit imitation (KL), feature imitation (L1, L2)
and its threshold-margin loss (TM) on the same replay samples. Which keeps the probe score
and perplexity closest to the starting model while the tasks are still learned?

Grid: replay.method in {none, ce, kl, l1, l2, tm} x seed in {0, 1, 2} (18 trials), buffer
fixed by the preset (tiny/world: 200 texts; llama-3.1-8b: 1,000). Smoke: all six methods.

Cost: kl, l1 and l2 run a frozen-model forward on every replay batch (about +1 forward per
replay row); tm reads 2-bit cached states instead. llama-3.1-8b: 18 trials x 8 GPUs.

Commands:
    python studies/loss_types.py --smoke-test
    # on a cluster, with its token (clusters/README.md, "Token authentication"):
    RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$HOME/.ray-gere/auth_token \\
        ray job submit --working-dir . -- python studies/loss_types.py \\
        --preset llama-3.1-8b --storage-path s3://YOUR-BUCKET/gere --out /mnt/shared/results
"""

import sys

from harness.grid import axis
from harness.study import Study
from studies import run

METHODS = axis("replay.method", ["none", "ce", "kl", "l1", "l2", "tm"])
GRID = [METHODS, axis("seed", [0, 1, 2])]
SMOKE = [METHODS]

STUDY = Study("loss_types", __doc__, GRID, SMOKE)

if __name__ == "__main__":
    sys.exit(run(STUDY))
