"""A second language for a generated world: the same facts, every word spelled anew.

Active forgetting (Chen et al. 2023) is about adapting a pretrained model to a *new language*:
new tokens whose embeddings must be learned, on top of a body that already knows how language
works. Here the new language is the world itself respelled by a letter substitution cipher (a
seeded permutation of a-z, upper case alike; digits, spaces and punctuation kept): "Mara
Velden was born in the city of Velmora." becomes a sentence of words no tokenizer fitted to the
first language has seen, with the same grammar, the same facts and the same probe. A tokenizer
fitted to the respelled corpus gives the new language its own vocabulary; a model adapted to it
is scored on the respelled probe, question for question against the first language's.

:func:`render_language` writes the respelled general text and probe as a data root in the
layouts of the real data (``general/``, ``mmlu/``), deterministically from the world and the
seed, atomically like :func:`harness.world.generate.generate_world`.
"""

from __future__ import annotations

import csv
import io
import json
import random
import string
from pathlib import Path

from harness.world.pretrain import build_cached

LANGUAGE_VERSION = 1
"""Bump when the respelling changes for the same world and seed (part of cache keys)."""

MANIFEST = "language.json"


def cipher(seed: int) -> dict[str, str]:
    """The letter substitution of this seed: a permutation of a-z with no letter kept (and the
    same on A-Z), so every word changes."""
    rng = random.Random(f"language-{seed}")
    letters = list(string.ascii_lowercase)
    while True:
        perm = letters[:]
        rng.shuffle(perm)
        if all(a != b for a, b in zip(letters, perm, strict=True)):
            break
    table = dict(zip(letters, perm, strict=True))
    table |= {a.upper(): b.upper() for a, b in table.items()}
    return table


def translate(text: str, table: dict[str, str]) -> str:
    """``text`` respelled letter by letter; everything that is not a letter a-z / A-Z kept."""
    return text.translate(str.maketrans(table))


def _jsonl(text: str, table: dict[str, str]) -> str:
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        row["text"] = translate(row["text"], table)
        out.append(json.dumps(row) + "\n")
    return "".join(out)


def _probe_csv(text: str, table: dict[str, str]) -> str:
    rows = list(csv.reader(io.StringIO(text)))
    header, body = rows[0], rows[1:]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    # question and choices respelled; the answer index (last column) is kept.
    writer.writerows([*(translate(c, table) for c in row[:-1]), row[-1]] for row in body)
    return buffer.getvalue()


def render_language(world_root: Path, out_dir: Path, *, seed: int = 1) -> Path:
    """Write the world at ``world_root`` respelled by :func:`cipher` (seed) into ``out_dir``
    (general text and probe); return ``out_dir``. An existing rendering of the same world and
    seed is reused; one of another is an error."""
    world_root, out_dir = Path(world_root), Path(out_dir)
    world_manifest = world_root / "world.json"
    if not world_manifest.is_file():
        raise FileNotFoundError(f"{world_root} is not a generated world (no world.json)")
    source = json.loads(world_manifest.read_text(encoding="utf-8"))["settings"]
    meta = {"world": source, "seed": seed, "version": LANGUAGE_VERSION}
    if (out_dir / MANIFEST).is_file():
        stored = json.loads((out_dir / MANIFEST).read_text(encoding="utf-8"))
        if {k: stored.get(k) for k in meta} != meta:
            raise FileExistsError(
                f"{out_dir} holds a rendering of another world or seed; delete it or pass "
                "another directory"
            )
        return out_dir
    table = cipher(seed)
    files: dict[str, str] = {}
    for rel in ("general/train.jsonl", "general/heldout.jsonl"):
        files[rel] = _jsonl((world_root / rel).read_text(encoding="utf-8"), table)
    for path in sorted((world_root / "mmlu").rglob("*.csv")):
        rel = str(path.relative_to(world_root))
        files[rel] = _probe_csv(path.read_text(encoding="utf-8"), table)
    key = "".join(table[c] for c in string.ascii_lowercase)
    files[MANIFEST] = json.dumps({**meta, "cipher": key}, indent=1)

    def write(tmp: Path) -> None:
        for rel, text in files.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_text(text, encoding="utf-8")

    build_cached(out_dir, MANIFEST, write)  # atomically, like the world and the base
    return out_dir
