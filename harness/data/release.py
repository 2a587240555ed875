"""The pinned public release of the Long-Sequence benchmark, and a checksum for every file.

The 15 tasks of the Long-Sequence continual-learning benchmark as O-LoRA (Wang et al., 2023)
formatted them and SAPT (Zhao et al., ACL 2024) republished them flat, in
``CL_Benchmark/Long_Sequence/<task>/`` of https://github.com/circle-hit/SAPT, pinned here to
one commit. ``python -m harness data prepare long-sequence`` (harness/data/prepare.py) fetches
``train.json``, ``test.json`` and ``labels.json`` of each task; the release's ``dev.json`` is
byte-identical to ``test.json`` in every task at this commit (the same git blob) and is not
fetched, since the harness scores on ``test.json`` only.

Checksums: the SHA-256 of each file was computed from the blobs of :data:`COMMIT` in a clone
of the repository (``git show <commit>:<path> | sha256sum``) and checked against the commit's
own blob ids. :data:`FILES` keeps the blob id (git's SHA-1 of ``"blob <size>\\0" + bytes``)
of every file as well: six files (:data:`NO_SHA256`) were not present in that clone, so for
them the commit's tree entry is the checksum, verified the same way. Both are public metadata
of the commit, not data.
"""

from __future__ import annotations

from typing import NamedTuple

REPOSITORY = "circle-hit/SAPT"
COMMIT = "52a52b920324c656bdb6dac08e43dc600ba22f21"
"""The pinned commit (2025-01-13, the repository's head when pinned; the data was last changed
in eeed2872428e96b1516ffd44a2ca0536dd1cb3b7, 2024-05-28)."""
PATH = "CL_Benchmark/Long_Sequence"
BASE_URL = f"https://raw.githubusercontent.com/{REPOSITORY}/{COMMIT}/{PATH}"
"""Where ``<task>/<file>`` is fetched from by default."""

TASK_FILES = ("train.json", "test.json", "labels.json")
"""The files of one task, as the harness loader reads them (harness/data/benchmark.py)."""


class Checksum(NamedTuple):
    """What one file must be: its size, SHA-256 and git blob id (None: not known)."""

    size: int | None = None
    sha256: str | None = None
    git_blob: str | None = None


_ROWS: tuple[tuple[str, int | None, str | None, str], ...] = (
    ("agnews/labels.json", 56, "d44ba5236490d6ae5c8689fcaaae4067d95dc13b14ab41d820634ca714a44e10", "a5da0b793e0b85cf8997b717c71a16c4836a5c7b"),
    ("agnews/test.json", 2376067, "4d90e394f5b104975a3cabde454703c304fcc3357dac8cdc8028a72ad1ff83b2", "8b2c36d5ff3bb2bc5735fc1272f920765265c7b6"),
    ("agnews/train.json", 1251334, "678313041bd5902c29e071f295da445ca5d6ff141f6ec00670e9d6e8cfb78fe2", "2fa116b5c7258a3a365e1fb60f1fbc4ff9b533ef"),
    ("amazon/labels.json", 69, "dfe3dbf501f9643d7f3fa24df096f925fb149fb299c1c088f802aaf1ba79050b", "647f8e328a233a091faa548b0dc6fd3d7cf94d6b"),
    ("amazon/test.json", 3948407, "2b28eee25eedf943371ef6996d36bd63ef7cd8a29ebd3ac3c036017cef9248e3", "9ce9bc87021bb34bcb61e574e74eb1c212dbb148"),
    ("amazon/train.json", 2562744, "1fcfee2bbe2be6e5b9d27833f2ed2acc5dec06f1ac0814e70e2ccbecc0fa1c38", "1642b5c09f8d26d117c4a40982908fe7863f8ec7"),
    ("boolq/labels.json", 17, "698feb4a00d84d31f33686a729253ee3d70e18709216f67bc4db96d484a2434c", "c94cbaa2fc1f2f45808d8ce54752125e58a7f3f8"),
    ("boolq/test.json", 2301059, "e249e082bea8a7854ad833930b1122db9ad416a14f2ed2c97a4e97e26db87c68", "35d5f512487bdd698fbc3ca1e308086af2684b7c"),
    ("boolq/train.json", 1416449, "2f23a8ed6e99c55d9f5b5fc0e34410b16765920f654aa98cebf7cbba60a830b2", "c9a3d8fe3521906154f063a5e0dd8c1b04f01a61"),
    ("cb/labels.json", 42, "e19ac29e726b7564078e455bd27913400d17ab3d068fb62fca061f8b8aeb79c3", "e35c6f5565e71c4029f1a1676eeb9382b741f427"),
    ("cb/test.json", 25853, "a3505192b525d18b5dfb5ace157d0dda1dedb14dfa75ecd353bb230b06fe123c", "7e10b51fb8bb5a3945bb1197fdf5177837a8e6d2"),
    ("cb/train.json", 104290, "e424952af1c964d99691f39ad20eccdbef8a5f08a524aa605fe82fb065eb686b", "b36d114678865cf74c336a038df0a87167038bc5"),
    ("copa/labels.json", 10, "f2314439597c11e286fd3c2fdf8eb70d3739e136f83e9533249ce3ecc43ece3e", "21df2a72953868047e8c360a5cfaf21b920e52dd"),
    ("copa/test.json", 21876, "005901bfe5d3b6d9e0105e9c8ff8a428fe8d89566fe62d96b895ec297c9e8b50", "2376fc72d1f01048f1d2eecbb9cec6547f90afd9"),
    ("copa/train.json", 86530, "537a7e353e938b879e093ff467c6be80157ac64bf2d713154a676c106de7c095", "668fe2c100dff1c9cb0fee7dc424f19c6f075b93"),
    ("dbpedia/labels.json", 194, "240b2344560e4d0736888d74332f78932525343a053149dfdc131ec1fc604a61", "4c2c58499965cf20eea9374496b19610c34b63de"),
    ("dbpedia/test.json", 2883338, "6e47734533555eeb5c98b46e9cf317e00297b9fb7d1c89604a051224656f70eb", "d8e3bf9783dc6656d75ef78a072292f0c4bfef13"),
    ("dbpedia/train.json", None, None, "d4305f326ce524dcca03ad4884d5d79f7b3ddb64"),
    ("imdb/labels.json", 15, "5fc1ea677de281f32c30ffa8101bc071d9a521f7f21ba416692a79f08ceee7bb", "b6a488522912d3f3003d3f490561d6d2528273a5"),
    ("imdb/test.json", None, None, "6ac0e4a4cf7973ae946b0592e0d82290ab73dc7e"),
    ("imdb/train.json", 2788059, "1f870ce516e810412afa4f4e5932467652c95e64e51a656bd1f458ee12e9f304", "2aa924de4d21d95f9cdde5bab0ad65cfc5221ccf"),
    ("mnli/labels.json", 42, "fe22829f991f10a7be226c2fc44446cd80efb151b8874d448440c521ad34165d", "35b498247fffa71bf7be5413a4425535b5f89465"),
    ("mnli/test.json", 1935720, "d429132bef85567b186f1d067fb33c4205d40ff22a190690f24d88e15ea683ff", "71445b7b02cd7e40771d9487152db36b2b46f447"),
    ("mnli/train.json", 774003, "70db5d1b299a9fb978a46df0b46145451aff7ebd2f855b8ddae56c30a48ad0bc", "0c4862bf6f08c14c0ccbb08d5e5dbcb77c909b92"),
    ("multirc/labels.json", 17, "8b6e3c014c9ce3c8658be14eca6e51e7f274f79e906b70151ec389d50060211b", "464cc7f4820eb5def8282fef5ad3ed74e54b0e21"),
    ("multirc/test.json", None, None, "f39fc9c6187da2f9dcc916b4b22e0f387834cfc3"),
    ("multirc/train.json", 3572042, "0f51139f5e8138429a0b6b221f4384e3d839d00e61a781d151f71854b28bff0f", "6cad36884f3d2b49c7bfc08c5eb872b246101597"),
    ("qqp/labels.json", 17, "8b6e3c014c9ce3c8658be14eca6e51e7f274f79e906b70151ec389d50060211b", "464cc7f4820eb5def8282fef5ad3ed74e54b0e21"),
    ("qqp/test.json", 1583999, "3544f6899eb53330d3f311edbb7eb14173167da46eb4ab7e3cf83c91733f9d5b", "b0e93e3aa70cafc844da57e534f13c161fe139b0"),
    ("qqp/train.json", 417821, "c0c310510bc4d50cdac08d93be49a156bcd985085fc7fc12d0f2ead4984bfa2b", "ed3ba3fb21254f73a4563f94ec08e5e373dd2b75"),
    ("rte/labels.json", 31, "e87b79b0429b22ac06160e2ad128a161f2f4de3f4886d2725743ed6b5ff0db76", "bfad21d93775c46f579cdc987ad2c1087401a043"),
    ("rte/test.json", 110012, "7a844be123b87309cf0effd14403c959e118b5b1586e348bdeafa1b2f822f41c", "bafc1265b439391b67c9e611947c17f902544468"),
    ("rte/train.json", 823236, "b191c42fa5839a8d258b54b3a146a43fdb97c0140aa17d4c4af4a7b3d2a4f6aa", "0c000f5220b517f90b9f177469420b459cf2a58e"),
    ("sst2/labels.json", 15, "5fc1ea677de281f32c30ffa8101bc071d9a521f7f21ba416692a79f08ceee7bb", "b6a488522912d3f3003d3f490561d6d2528273a5"),
    ("sst2/test.json", 145225, "2d85b5e289b07ae79ef8281e3492962f171bfbfb7019f2f83060fd7a7a4e0e5e", "0559617be534bdd3cdc1caa58caf5a94696604fa"),
    ("sst2/train.json", 228016, "d2ec1c985fae9942d24412c73bb3e7edc88e5947df0fcebcd3aab09fb22eb63b", "d75664a4cf3433b6e8cae5c4c493e510cc49c84c"),
    ("wic/labels.json", 17, "698feb4a00d84d31f33686a729253ee3d70e18709216f67bc4db96d484a2434c", "c94cbaa2fc1f2f45808d8ce54752125e58a7f3f8"),
    ("wic/test.json", 98299, "da8806440c0927e3f9a319748656e13abf16237d06d47ab5b43af22ab208bdf6", "5b6fd5d6d63e56c2f94ff0f94af3c1ccfb4fd189"),
    ("wic/train.json", 293843, "9b769374c084f7927ea3fe0a0cbd9d6abe366ab1eea7d8612e752ee66df10c69", "042b49d0c3d9217749c79f30bea592f4fd3c3733"),
    ("yahoo/labels.json", 213, "6cc0d1cc3efe693ab76778216b04c51728ca9a305a3d0b4128a88b965f7003d4", "ed2fb4c33d1f88d4647431feebe9086070d13045"),
    ("yahoo/test.json", None, None, "36c67bb3cb1844a32501499238bd69be90675cde"),
    ("yahoo/train.json", None, None, "b1b4857f3be1d1ae37155333406bc6b491acbe79"),
    ("yelp/labels.json", 69, "dfe3dbf501f9643d7f3fa24df096f925fb149fb299c1c088f802aaf1ba79050b", "647f8e328a233a091faa548b0dc6fd3d7cf94d6b"),
    ("yelp/test.json", None, None, "5cf8c1319aca2b60926b69bfe31f2d0f646aa05f"),
    ("yelp/train.json", 4071666, "ff67a309574e7064b1a0d196bd097c35f531e8bd40210f1b2120789759a5b5d4", "b8fe6418890e6de07f48768bf2a6d27beb0555e1"),
)  # fmt: skip

FILES: dict[str, Checksum] = {path: Checksum(*rest) for path, *rest in _ROWS}
"""``"<task>/<file>"`` -> :class:`Checksum`, for the 15 tasks' three files at :data:`COMMIT`."""

NO_SHA256 = tuple(path for path, c in FILES.items() if c.sha256 is None)
"""Files checked by their git blob id only (absent from the clone the SHA-256s came from)."""

LICENCE = """\
Licence: the files are the O-LoRA / SAPT research releases of public benchmarks, for research
use. SAPT's repository states no licence; O-LoRA's (github.com/cmnfriend/O-LoRA, which SAPT
credits) is MIT-licensed as a repository. Each task keeps the terms of its source dataset:
Yelp, Amazon, DBpedia, Yahoo Answers and AG News (Zhang et al., 2015, from the Yelp Dataset
Challenge, Amazon reviews, DBpedia, Yahoo! Answers and AG's corpus), IMDB (Maas et al., 2011),
GLUE's MNLI, QQP (Quora's terms), RTE and SST-2, SuperGLUE's CB, COPA, BoolQ, MultiRC and WiC.
Check those licences before redistributing the data or any use beyond research."""


def how_to_get(directory: object) -> str:
    """The sentence every missing-task error ends with: where the tasks come from."""
    return (
        f"the Long-Sequence tasks come from the O-LoRA / SAPT public release "
        f"(github.com/{REPOSITORY}, {PATH}); fetch all 15 with "
        f"`python -m harness data prepare long-sequence --dest {directory}`"
    )
