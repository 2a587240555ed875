"""Does GeRe keep general ability when the learning rate is 1-10x too high?

Question: sequential fine-tuning forgets more as the learning rate grows; the GeRe paper
reports that TM replay stays stable at 3-10x. This study measures general ability (probe
accuracy, held-out perplexity) and task AP after the whole stream, per LR multiplier.

Grid: train.lr_multiplier in {1, 2, 3, 5, 10} x replay.method in {none, tm} x seed in {0, 1, 2}
(30 trials). Smoke: {1, 10} x {none, tm} (4 trials).

Cost: llama-3.1-8b preset: 30 trials x 15 tasks x (3 epochs x <=1,000 examples + eval), each on
8 GPUs with ZeRO-3: roughly 30 x 8 GPU x ~6 h (an unmeasured guess: benchmarks/gpu_8b.py
measures the rates on one GPU). tiny: seconds per trial.

Commands:
    python studies/lr_robustness.py --smoke-test                     # here, minutes
    # on a cluster, with its token (clusters/README.md, "Token authentication"):
    RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$HOME/.ray-gere/auth_token \\
        ray job submit --working-dir . -- python studies/lr_robustness.py \\
        --preset llama-3.1-8b --storage-path s3://YOUR-BUCKET/gere --out /mnt/shared/results
"""

import sys

from harness.grid import axis
from harness.study import Study
from studies import run

METHODS = [{"replay.method": "none"}, {"replay.method": "tm"}]
GRID = [axis("train.lr_multiplier", [1, 2, 3, 5, 10]), METHODS, axis("seed", [0, 1, 2])]
SMOKE = [axis("train.lr_multiplier", [1, 10]), METHODS]

STUDY = Study("lr_robustness", __doc__, GRID, SMOKE)

if __name__ == "__main__":
    sys.exit(run(STUDY))
