"""Does GeRe protect general ability under LoRA as well as under full fine-tuning?

Question: the paper reports GeRe keeps MMLU 60.7 with full fine-tuning and 66.3 with LoRA
(AP 74.4 vs 64.4). LoRA changes fewer weights; does replay still matter, and what does it
cost in task accuracy?

Grid: model.tuning in {full, lora} x replay.method in {none, tm} x seed in {0, 1, 2}
(12 trials). Smoke: {full, lora} x {none, tm} (4 trials).

Cost: llama-3.1-8b preset: full trials need ZeRO-3 across 8 GPUs (~16 bytes/param of
optimizer state); LoRA trials fit one 80 GB GPU each (pass --set scale.workers=1 and
--set scale.zero_stage=0 to run them one GPU per trial).

Commands:
    python studies/lora_vs_full.py --smoke-test
    # on a cluster, with its token (clusters/README.md, "Token authentication"):
    RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$HOME/.ray-gere/auth_token \\
        ray job submit --working-dir . -- python studies/lora_vs_full.py \\
        --preset llama-3.1-8b --storage-path s3://YOUR-BUCKET/gere --out /mnt/shared/results
"""

import sys

from harness.grid import axis
from harness.study import Study
from studies import run

CELLS = [axis("model.tuning", ["full", "lora"]), axis("replay.method", ["none", "tm"])]
GRID = [*CELLS, axis("seed", [0, 1, 2])]
SMOKE = CELLS

STUDY = Study("lora_vs_full", __doc__, GRID, SMOKE)

if __name__ == "__main__":
    sys.exit(run(STUDY))
