"""The embedded default: a generated world and a small base model that knows it.

``generate_world`` writes a corpus of facts, a cloze probe of those facts and a task stream in
the layouts of the real data; ``ensure_base_model`` pretrains (once, cached) a small Llama on
the corpus. Fine-tuning that model on the tasks erodes its probe score: forgetting you can
watch on a laptop with no network.
"""

from harness.world.generate import WorldInfo, generate_world, load_entities
from harness.world.pretrain import PretrainConfig, ensure_base_model

__all__ = [
    "PretrainConfig",
    "WorldInfo",
    "ensure_base_model",
    "generate_world",
    "load_entities",
]
