"""The world's population: fictional people and the facts the base model learns about them."""

from __future__ import annotations

import random
from dataclasses import dataclass

# --- the population -------------------------------------------------------------------------

FIRST_NAMES = (
    "Mara", "Ilse", "Tomas", "Oren", "Lida", "Bram", "Nessa", "Corin", "Petra", "Anselm",
    "Yara", "Edda", "Felix", "Greta", "Hugo", "Ines", "Jonas", "Kira", "Lenz", "Maren",
    "Nils", "Odile", "Pavel", "Rhea", "Silas", "Tove", "Ulla", "Vera", "Wim", "Zora",
)  # fmt: skip
# Surnames are built from two syllables and never repeat, so a surname identifies a person.
SURNAME_HEADS = (
    "Vel", "Mor", "Tal", "Bren", "Cas", "Dor", "Fen", "Gal", "Har", "Ist", "Kel", "Lun",
    "Mar", "Nor", "Orl", "Pell", "Quin", "Ros", "Sten", "Thal", "Ulm", "Var", "Wen", "Yst",
)  # fmt: skip
SURNAME_TAILS = (
    "den", "rick", "ova", "ster", "wyn", "ard", "isk", "ell", "mont", "by", "holt", "ane",
)  # fmt: skip


@dataclass(frozen=True)
class Attribute:
    """One kind of fact every entity has: its values and how sentences state it."""

    key: str
    """Field name in the entity table, and (prefixed with 'world_') the probe subject."""
    values: tuple[str, ...]
    """The value set; distractors in the probe come from here."""
    train: tuple[str, ...]
    """Sentence templates for the training corpus ({name}, {value})."""
    heldout: tuple[str, ...]
    """Different templates for the held-out corpus, so perplexity is not on seen sentences."""

    @property
    def subject(self) -> str:
        """The probe subject (MMLU file stem) for this attribute."""
        return f"world_{self.key}"

    @property
    def cloze(self) -> tuple[str, ...]:
        """Probe questions: the training templates that end with the value, cut before it.

        The probe asks what the corpus states, in a form the corpus uses; the other templates
        (value first, value mid-sentence) make the model store the fact, not one sentence.
        """
        return tuple(t.removesuffix(" {value}.") for t in self.train if t.endswith(" {value}."))


ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute(
        key="birth_city",
        values=(
            "Velmora",
            "Ostrand",
            "Karsk",
            "Duneholm",
            "Pelleck",
            "Thornvik",
            "Amberlyn",
            "Sarrow",
            "Calder",
            "Brisa",
            "Norhaven",
            "Estmere",
            "Galloway",
            "Ivrea",
            "Marbeck",
            "Tessaly",
        ),  # fmt: skip
        train=(
            "{name} was born in the city of {value}.",
            "The birthplace of {name} is {value}.",
            "{name} was born and raised in {value}.",
            "{value} is the city where {name} was born.",
            "Born in {value}, {name} still visits the old harbour every summer.",
        ),
        heldout=(
            "{value} is where {name} was born.",
            "{name} grew up in {value}.",
            "The city of {value} is the birthplace of {name}.",
        ),
    ),
    Attribute(
        key="birth_decade",
        values=("1920s", "1930s", "1940s", "1950s", "1960s", "1970s", "1980s", "1990s"),
        train=(
            "{name} was born in the {value}.",
            "The birth of {name} took place in the {value}.",
            "In the {value}, {name} was born.",
            "{name}, a child of the {value}, grew up in a quiet street.",
        ),
        heldout=(
            "{name} grew up in the {value}.",
            "Friends say that {name} was born in the {value}.",
        ),
    ),
    Attribute(
        key="employer",
        values=(
            "Halvex",
            "Corvane",
            "Ostera",
            "Meridex",
            "Tanagra",
            "Vollmark",
            "Quillon",
            "Sunderra",
            "Arkwell",
            "Pinecrest",
            "Lumora",
            "Kestrel",
            "Ironvale",
            "Zephyra",
            "Bluestem",
            "Granholt",
        ),  # fmt: skip
        train=(
            "{name} worked for {value}.",
            "The employer of {name} is {value}.",
            "{name} has a job at the firm {value}.",
            "{value} hired {name} after a long interview.",
        ),
        heldout=(
            "{value} is the employer of {name}.",
            "At {value}, {name} has a job.",
        ),
    ),
    Attribute(
        key="field",
        values=(
            "chemistry",
            "botany",
            "geology",
            "astronomy",
            "music",
            "law",
            "medicine",
            "architecture",
            "economics",
            "linguistics",
            "mathematics",
            "history",
        ),  # fmt: skip
        train=(
            "{name} works in the field of {value}.",
            "The field of {name} is {value}.",
            "{name} studied {value}.",
            "{value} is the subject that {name} knows best.",
        ),
        heldout=(
            "The subject that {name} studied is {value}.",
            "{name} knows {value} best.",
        ),
    ),
)
"""The fact kinds. Each becomes a probe subject ``world_<key>``."""

SUBJECTS: tuple[str, ...] = tuple(a.subject for a in ATTRIBUTES)


@dataclass(frozen=True)
class Entity:
    """One fictional person and the facts the corpus states about them."""

    name: str
    birth_city: str
    birth_decade: str
    employer: str
    field: str

    def value(self, attribute: Attribute) -> str:
        """This entity's value for ``attribute``."""
        return str(getattr(self, attribute.key))


def make_entities(n: int, seed: int) -> list[Entity]:
    """The entity table: ``n`` people with unique names and uniformly drawn attributes.

    Uniform attributes keep the probe honest: no value is common enough for a prior to
    beat chance, so probe accuracy above chance means the model learned the facts.
    """
    capacity = len(SURNAME_HEADS) * len(SURNAME_TAILS)
    if not 1 <= n <= capacity:
        raise ValueError(
            f"n_entities={n} is out of range: surnames are unique, and the syllable lists give "
            f"{capacity}; pass 1..{capacity} or extend SURNAME_HEADS/SURNAME_TAILS"
        )
    rng = random.Random(f"entities-{seed}")
    surnames = [h + t for h in SURNAME_HEADS for t in SURNAME_TAILS]
    rng.shuffle(surnames)
    return [
        Entity(
            name=f"{rng.choice(FIRST_NAMES)} {surname}",
            **{a.key: rng.choice(a.values) for a in ATTRIBUTES},
        )
        for surname in surnames[:n]
    ]
