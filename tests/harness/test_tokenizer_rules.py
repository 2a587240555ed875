"""What starts a tokenised text follows the tokenizer's own rule (``tokenizer(text)``, as
transformers and lm-evaluation-harness do), with 'always' / 'never' as explicit overrides,
for every input of a trial: task prompts and training rows, probe prompts, held-out texts and
replay texts. Three kinds of tokenizer, built in memory: one that puts its BOS first
(Llama-3), one with no BOS token at all (GPT-2 / NeoX style) and one whose ``bos_token`` is a
chat-turn token it never puts before plain text (SmolLM2, Qwen)."""

from __future__ import annotations

import pytest

from harness.config import ConfigError, from_dict
from harness.data import DataError, bos_ids, special_prefix, tokenize_cached
from harness.inputs import load_data, tokenize_inputs


def _tokenizer(kind: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    specials = ["<|begin|>", "<|end|>", "<|im_start|>", "<pad>"]
    vocab = {t: i for i, t in enumerate(specials + alphabet)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    kwargs = {"eos_token": "<|end|>", "pad_token": "<pad>"}
    if kind == "llama3":  # puts <|begin|> before every text
        backend.post_processor = processors.TemplateProcessing(
            single="<|begin|> $A", special_tokens=[("<|begin|>", vocab["<|begin|>"])]
        )
        kwargs["bos_token"] = "<|begin|>"
    elif kind == "chat_bos":  # a bos_token that is a chat-turn token, never put first
        kwargs["bos_token"] = "<|im_start|>"
    return PreTrainedTokenizerFast(tokenizer_object=backend, **kwargs)


KINDS = {"llama3": [0], "gpt2": [], "chat_bos": []}
"""Each kind and what its own rule puts before a text."""


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_prefix_is_what_the_tokenizer_itself_puts_first(kind, tmp_path):
    tok = _tokenizer(kind)
    assert special_prefix(tok) == KINDS[kind]
    assert bos_ids(tok, "tokenizer") == KINDS[kind] and bos_ids(tok, "never") == []
    text = ["general text"]
    plain = tok(text, add_special_tokens=False)["input_ids"][0]
    assert tokenize_cached(tok, text, max_length=99, cache_dir=tmp_path) == [KINDS[kind] + plain]
    if kind == "gpt2":
        with pytest.raises(DataError, match="has no bos_token; use 'tokenizer'"):
            bos_ids(tok, "always")
    else:
        forced = tokenize_cached(tok, text, max_length=99, add_bos="always", cache_dir=tmp_path)
        assert forced == [[tok.bos_token_id, *plain]]


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("rule", ["tokenizer", "always", "never"])
def test_every_input_of_a_trial_starts_by_the_rule(kind, rule, mini_root, tmp_path):
    tok = _tokenizer(kind)
    if kind == "gpt2" and rule == "always":
        return  # refused above
    start = {"tokenizer": KINDS[kind], "never": []}.get(rule, [tok.bos_token_id])
    cfg = from_dict(
        {
            "data": {"root": str(mini_root), "tasks": "colour,animal", "add_bos": rule},
            "replay": {"method": "ce", "size": 4, "add_bos": rule},
            "eval": {"probe": "mmlu", "heldout": "general/heldout.jsonl"},
            "out": str(tmp_path),
        }
    )
    inputs = tokenize_inputs(cfg, load_data(cfg), tok)
    n = len(start)
    firsts = [
        *(p[:n] for tt in inputs.tasks for p in tt.prompts),
        *(list(ex.ids[:n]) for tt in inputs.tasks for ex in tt.train),
        *(p[:n] for p, _ in inputs.probe[0]),
        *(t[:n] for t in inputs.heldout),
        *(list(r[:n]) for r in inputs.buffer.token_ids),
    ]
    assert firsts and all(f == start for f in firsts)
    if not n:  # nothing special first: the text's own first byte
        assert all(p[0] not in tok.all_special_ids for tt in inputs.tasks for p in tt.prompts)
    # training rows end with EOS; candidates never carry the prefix
    assert all(ex.ids[-1] == tok.eos_token_id for tt in inputs.tasks for ex in tt.train)
    assert all(c[0] != tok.bos_token_id for tt in inputs.tasks for c in tt.candidates)


def test_the_earlier_bool_spellings_read_as_the_rules_they_meant():
    assert from_dict({"replay": {"add_bos": True}}).replay.add_bos == "tokenizer"
    assert from_dict({"replay": {"add_bos": False}}).replay.add_bos == "never"
    with pytest.raises(ConfigError, match="data.add_bos"):
        from_dict({"data": {"add_bos": "sometimes"}})
    # The ids of trials run before the rule existed stay (their replay.add_bos was true/false).
    assert from_dict({}).id == "tm-ea6c3e2883"
    assert (
        from_dict({"replay": {"add_bos": "never"}}).id
        == from_dict({"replay": {"add_bos": False}}).id
    )
    assert from_dict({"data": {"add_bos": "always"}}).id != from_dict({}).id
