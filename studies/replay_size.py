"""How many general replay samples does GeRe need?

Question: the paper replays ~1,000 general texts. How does protection of general ability
(and task AP) scale with the replay-buffer size, and where does it saturate?

Grid: (replay.method, replay.size) in {(none, 0), (tm, 100), (tm, 250), (tm, 500), (tm, 1000),
(tm, 1500)} x seed in {0, 1, 2} (18 trials; method and size form one axis, so no "tm with an
empty buffer" is ever scheduled). Smoke: sizes 0, 4, 8, 16 (4 trials).

Cost: llama-3.1-8b preset: 18 trials x 8 GPUs (ZeRO-3); replay adds forward/backward passes
in proportion to the buffer size (1,000 texts x <=563 tokens per task epoch). tiny: seconds.

Commands:
    python studies/replay_size.py --smoke-test
    # on a cluster, with its token (clusters/README.md, "Token authentication"):
    RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$HOME/.ray-gere/auth_token \\
        ray job submit --working-dir . -- python studies/replay_size.py \\
        --preset llama-3.1-8b --storage-path s3://YOUR-BUCKET/gere --out /mnt/shared/results
"""

import sys

from harness.grid import axis
from harness.study import Study
from studies import run


def sizes(values):
    return [
        {"replay.method": "none", "replay.size": 0}
        if n == 0
        else {"replay.method": "tm", "replay.size": n}
        for n in values
    ]


GRID = [sizes([0, 100, 250, 500, 1000, 1500]), axis("seed", [0, 1, 2])]
SMOKE = [sizes([0, 4, 8, 16])]

STUDY = Study("replay_size", __doc__, GRID, SMOKE)

if __name__ == "__main__":
    sys.exit(run(STUDY))
