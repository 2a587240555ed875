"""Replay methods: hand-computed values, the 2-bit TM state cache, and invariants of every method."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import Tensor
from transformers import LlamaForCausalLM

from harness.config.replay_methods import ReplayEntry
from harness.replay import (
    REGISTRY,
    ReplayBuffer,
    ReplayMethod,
    ReplayView,
    TMStates,
    combine,
    get_method,
    method_names,
    pack_codes,
    tm_loss,
    tm_loss_raw,
    unpack_codes,
)
from tests.fixtures import tiny_model

# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    return tiny_model(
        100, hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=4
    )


@pytest.fixture(scope="module")
def buffer() -> ReplayBuffer:
    gen = torch.Generator().manual_seed(1)
    lengths = [7, 3, 12, 5, 9]
    return ReplayBuffer(
        token_ids=tuple(
            tuple(torch.randint(1, 100, (n,), generator=gen).tolist()) for n in lengths
        ),
        pad_id=0,
    )


def hidden_forward(model: LlamaForCausalLM) -> Callable[[Tensor, Tensor], Tensor]:
    """The ``forward`` prepare() receives: last hidden state (after the final norm), no grad."""

    @torch.no_grad()
    def forward(ids: Tensor, mask: Tensor) -> Tensor:
        return model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[
            -1
        ]

    return forward


def make_view(
    current: LlamaForCausalLM, reference: LlamaForCausalLM, batch: dict[str, Tensor]
) -> ReplayView:
    """A ReplayView as the training loop builds it: current forward with grad, lazy reference."""
    out = current(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        output_hidden_states=True,
    )

    def ref() -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            r = reference(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                output_hidden_states=True,
            )
        return r.logits, r.hidden_states[-1]

    return ReplayView(
        logits=out.logits,
        hidden=out.hidden_states[-1],
        mask=batch["attention_mask"].bool(),
        index=batch["index"],
        reference=ref,
    )


def perturbed(model: LlamaForCausalLM, buffer: ReplayBuffer) -> LlamaForCausalLM:
    """A copy of the model after one SGD step on CE of an unrelated batch (not the replay rows)."""
    moved = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(2)
    ids = torch.randint(1, 100, (2, 8), generator=gen)
    loss = moved(input_ids=ids, labels=ids).loss
    loss.backward()
    torch.optim.SGD(moved.parameters(), lr=0.5).step()
    moved.zero_grad()
    return moved


def prepared(name: str, model: LlamaForCausalLM, buffer: ReplayBuffer) -> ReplayMethod:
    method = get_method(name)
    # batch_size = the whole buffer: the training batches below are built from the same rows with
    # the same padded length, so the frozen hidden states are bitwise reproducible.
    method.prepare(hidden_forward(model), buffer, batch_size=len(buffer))
    return method


# ---------------------------------------------------------------------------------------------
# hand-computed values


def test_tm_loss_hand_computed() -> None:
    pos = torch.tensor([1.0, 2.0, 0.5])
    neg = torch.tensor([-1.0, 0.0, -0.5])
    h0 = torch.tensor(
        [
            [
                [1.5, -0.5, 0.0],  # positive, negative, neutral
                [1.0, 1.0, -0.5],  # positive (== pos), neutral, negative (== neg)
                [9.0, 9.0, 9.0],  # padding
            ]
        ]
    )
    codes = torch.tensor([[[1, 2, 0], [1, 0, 2], [3, 3, 3]]], dtype=torch.int8)
    h = torch.tensor(
        [
            [
                [
                    0.25,
                    0.5,
                    -1.0,
                ],  # relu(1-0.25)=0.75, relu(0.5-0)=0.5, neutral below: relu(-0.5+1)=0.5
                [3.0, 2.5, -1.0],  # inside: 0, neutral above: relu(2.5-2)=0.5, inside: 0
                [100.0, -100.0, 100.0],  # padding: would dominate if not masked
            ]
        ],
        requires_grad=True,
    )
    mask = torch.tensor([[True, True, False]])
    expected = (0.75 + 0.5 + 0.5 + 0.5) / 4  # four non-zero entries
    loss = tm_loss(h, codes, pos, neg, mask)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert torch.equal(tm_loss_raw(h, h0, pos, neg, mask), loss)
    loss.backward()
    # d/dh of the mean over violating entries: -1/4 where h is below its interval, +1/4 above
    assert torch.equal(
        h.grad, torch.tensor([[[-0.25, 0.25, -0.25], [0.0, 0.25, 0.0], [0.0, 0.0, 0.0]]])
    )


def test_tm_loss_is_zero_inside_every_interval_and_survives_zero_count() -> None:
    pos, neg = torch.tensor([1.0]), torch.tensor([-1.0])
    codes = torch.tensor([[[1], [2], [0]]], dtype=torch.int8)
    h = torch.tensor([[[1.0], [-1.0], [0.0]]])  # each exactly at/inside its boundary
    loss = tm_loss(h, codes, pos, neg, torch.ones(1, 3, dtype=torch.bool))
    assert loss.item() == 0.0 and not torch.isnan(loss)


def test_tm_loss_rejects_rows_without_states() -> None:
    pos, neg = torch.tensor([1.0]), torch.tensor([-1.0])
    codes = torch.tensor([[[1], [3]]], dtype=torch.int8)  # second token has no cached state
    with pytest.raises(ValueError, match="no cached state"):
        tm_loss(torch.zeros(1, 2, 1), codes, pos, neg, torch.ones(1, 2, dtype=torch.bool))


def hand_view(**fields: Tensor) -> ReplayView:
    ref = (fields.pop("ref_logits", torch.zeros(1)), fields.pop("ref_hidden", torch.zeros(1)))
    fields.setdefault("logits", torch.zeros(1))
    fields.setdefault("hidden", None)
    return ReplayView(index=torch.tensor([0]), reference=lambda: ref, **fields)


def test_kl_hand_computed() -> None:
    t = 2.0
    # position 0: p_ref = softmax([2 ln3, 0] / 2) = (3/4, 1/4), p_cur = (1/2, 1/2)
    # position 1: identical logits -> KL 0; position 2: padding with different logits
    logits = torch.tensor([[[0.0, 0.0], [1.0, 2.0], [5.0, -5.0]]], requires_grad=True)
    ref_logits = torch.tensor([[[2 * math.log(3), 0.0], [1.0, 2.0], [-5.0, 5.0]]])
    mask = torch.tensor([[True, True, False]])
    kl_forward = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)  # KL(p_ref || p_cur)
    expected = t**2 * kl_forward / 2  # T^2 scaling, mean over the 2 real positions
    method = get_method("kl", temperature=t)
    value = method.term(hand_view(logits=logits, ref_logits=ref_logits, mask=mask))
    assert value.item() == pytest.approx(expected, rel=1e-6)
    kl_reverse = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert value.item() != pytest.approx(t**2 * kl_reverse / 2, rel=1e-3)  # direction matters
    value.backward()
    # d/dz_cur of T^2 KL = T (p_cur - p_ref), /2 positions: T/2 * (1/2-3/4, 1/2-1/4)
    assert torch.allclose(logits.grad[0, 0], torch.tensor([-0.25, 0.25]), atol=1e-6)
    assert torch.equal(logits.grad[0, 2], torch.zeros(2))


@pytest.mark.parametrize(
    ("name", "expected"), [("l1", (1 + 2 + 0 + 3) / 4), ("l2", (1 + 4 + 0 + 9) / 4)]
)
def test_feature_imitation_hand_computed(name: str, expected: float) -> None:
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [50.0, 50.0]]])
    ref_hidden = torch.tensor(
        [[[0.0, 0.0], [3.0, 1.0], [0.0, 0.0]]]
    )  # diffs 1, 2, 0, 3 (+ padding)
    mask = torch.tensor([[True, True, False]])
    value = get_method(name).term(hand_view(hidden=hidden, ref_hidden=ref_hidden, mask=mask))
    assert value.item() == pytest.approx(expected)


@pytest.mark.parametrize(
    ("weight", "total", "w"),
    [(1, 2.5, 1.0), (100, 52.0, 100.0), (100.0, 52.0, 100.0), ("dynamic", 4.0, 4.0)],
)
def test_combine(weight: float | str, total: float, w: float) -> None:
    ce = torch.tensor(2.0, requires_grad=True)
    term = torch.tensor(0.5, requires_grad=True)
    got_total, got_w = combine(ce, term, weight)
    assert got_total.item() == total and got_w.item() == w
    got_total.backward()
    assert ce.grad.item() == 1.0  # the dynamic weight is detached: no gradient through w
    assert term.grad.item() == w


def test_combine_edge_cases() -> None:
    ce = torch.tensor(2.0)
    total, w = combine(ce, None, 100)
    assert total is ce and w.item() == 0.0
    total, w = combine(ce, torch.tensor(0.0), "dynamic")  # TM at step 0
    assert total.item() == 2.0 and w.item() == 0.0
    with pytest.raises(ValueError, match="dynamic"):
        combine(ce, torch.tensor(1.0), "dynamik")
    with pytest.raises(ValueError, match=">= 0"):
        combine(ce, torch.tensor(1.0), -1.0)


# ---------------------------------------------------------------------------------------------
# buffer


def test_buffer_collate(buffer: ReplayBuffer) -> None:
    batch = buffer.collate([1, 2])
    assert batch["input_ids"].shape == (2, 12) and batch["input_ids"].dtype == torch.long
    assert batch["attention_mask"].sum(1).tolist() == [3, 12]
    assert batch["input_ids"][0, 3:].eq(0).all() and batch["labels"][0, 3:].eq(-100).all()
    assert torch.equal(batch["labels"][1], batch["input_ids"][1])
    assert batch["index"].tolist() == [1, 2]
    assert batch["input_ids"][0, :3].tolist() == list(buffer.token_ids[1])
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(token_ids=((1, 2), ()), pad_id=0)
    with pytest.raises(IndexError):
        buffer.collate([5])


# ---------------------------------------------------------------------------------------------
# the 2-bit state cache


@pytest.mark.parametrize("d", [1, 4, 5, 7, 32])
def test_pack_unpack_round_trip(d: int) -> None:
    codes = np.random.default_rng(d).integers(0, 4, size=(11, d), dtype=np.uint8)
    packed = pack_codes(codes)
    assert packed.dtype == np.uint8 and packed.shape == (11, -(-d // 4))
    assert np.array_equal(unpack_codes(packed, d), codes)


def test_states_statistics_and_codes_by_hand() -> None:
    """A fake 'model' whose hidden state is a lookup table, so h0 is known exactly."""
    table = torch.tensor([[1e6, -1e6], [0.0, 0.0], [2.0, 1.0], [0.0, 4.0], [2.0, -1.0]])

    def forward(ids: Tensor, mask: Tensor) -> Tensor:
        return table[ids]  # padding (id 0) maps to huge values: must not enter the statistics

    buf = ReplayBuffer(token_ids=((1, 2), (3,), (4,)), pad_id=0)
    states = TMStates.build(forward, buf, k=1.0, batch_size=2)  # batches [0, 1], [2]
    # dim 0: h0 = 0, 2, 0, 2 -> mean 1, population std 1 (sample std would be 1.155) -> pos 2,
    #   neg 0, and every token sits exactly on a threshold: at pos -> positive, at neg -> negative
    # dim 1: h0 = 0, 1, 4, -1 -> mean 1, var 3.5 -> pos 2.87, neg -0.87 -> neutral x2, pos, neg
    assert states.mean.tolist() == [1.0, 1.0]
    assert states.var.tolist() == [1.0, 3.5] and states.std[0].item() == 1.0
    assert states.std[1].item() == pytest.approx(math.sqrt(3.5))
    assert states.pos[0].item() == 2.0 and states.neg[0].item() == 0.0
    assert states.pos[1].item() == pytest.approx(1 + math.sqrt(3.5))
    expected = [[2, 0], [1, 0], [2, 1], [1, 2]]
    assert unpack_codes(np.asarray(states.packed), 2).tolist() == expected
    assert states.offsets.tolist() == [0, 2, 3, 4] and states.k == 1.0
    codes = states.gather(torch.tensor([2, 0]), 3)
    assert codes.dtype == torch.int8 and codes.shape == (2, 3, 2)
    assert codes[0].tolist() == [[1, 2], [3, 3], [3, 3]]
    assert codes[1].tolist() == [[2, 0], [1, 0], [3, 3]]
    with pytest.raises(ValueError, match="only 1 long"):
        states.gather(torch.tensor([0]), 1)


def test_cache_matches_raw_hidden_states_exactly(model, buffer, tmp_path) -> None:
    """Loss from 2-bit states == loss from raw fp32 h0, batch by batch, also after save/load."""
    states = TMStates.build(
        hidden_forward(model), buffer, k=1.0, batch_size=2, path=tmp_path / "tm"
    )
    assert isinstance(states.packed, np.memmap)
    assert states.nbytes_per_entry() <= 0.25
    assert states.packed.nbytes == states.n_tokens * 32 // 4  # 2 bits per entry, nothing else
    loaded = TMStates.load(tmp_path / "tm", mmap=True)
    assert isinstance(loaded.packed, np.memmap)
    assert np.array_equal(np.asarray(loaded.packed), np.asarray(states.packed))
    assert np.array_equal(loaded.offsets, states.offsets)
    for name in ("mean", "var", "std", "pos", "neg"):
        assert torch.equal(getattr(loaded, name), getattr(states, name))
    assert loaded.k == 1.0 and loaded.hidden_size == 32

    moved = perturbed(model, buffer)
    nonzero = 0
    for rows in ([0, 1], [2, 3], [4], [3, 0]):  # the build's batches, then a reordered one
        batch = buffer.collate(rows)
        ids, mask = batch["input_ids"], batch["attention_mask"]
        h0 = hidden_forward(model)(ids, mask)
        h = moved(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
        raw = tm_loss_raw(h, h0, states.pos, states.neg, mask)
        for cache in (states, loaded):
            cached = tm_loss(
                h, cache.gather(batch["index"], ids.shape[1]), cache.pos, cache.neg, mask
            )
            assert torch.equal(cached, raw)
        nonzero += raw.item() > 0
    assert nonzero > 0


def test_tm_prepare_reuses_cache_dir(model, buffer, tmp_path) -> None:
    calls = []
    inner = hidden_forward(model)

    def forward(ids: Tensor, mask: Tensor) -> Tensor:
        calls.append(ids.shape[0])
        return inner(ids, mask)

    first = get_method("tm")
    first.prepare(forward, buffer, batch_size=2, cache_dir=tmp_path)
    assert len(calls) == 6  # two passes x three batches
    calls.clear()
    second = get_method("tm")
    second.prepare(forward, buffer, batch_size=2, cache_dir=tmp_path)
    assert calls == [2]  # only the spot-check batch
    assert isinstance(second.states.packed, np.memmap)
    assert np.array_equal(np.asarray(second.states.packed), np.asarray(first.states.packed))
    # a different model under the same cache_dir fails the spot-check and is rebuilt
    calls.clear()
    other = get_method("tm")
    other.prepare(
        hidden_forward(perturbed(model, buffer)), buffer, batch_size=2, cache_dir=tmp_path
    )
    assert not torch.equal(other.states.pos, first.states.pos)


def test_tm_exactly_zero_at_step_0_then_positive(model, buffer) -> None:
    method = prepared("tm", model, buffer)
    batch = buffer.collate(range(len(buffer)))
    assert method.term(make_view(model, model, batch)).item() == 0.0
    moved = perturbed(model, buffer)
    assert method.term(make_view(moved, model, batch)).item() > 0.0


# ---------------------------------------------------------------------------------------------
# invariants of every registered method


def test_registry_round_trip_and_did_you_mean() -> None:
    assert sorted(REGISTRY) == ["ce", "kl", "l1", "l2", "none", "tm"]
    for name in REGISTRY:
        cls = REGISTRY.load(name)
        method = get_method(name)
        assert type(method) is cls and method.name == name
        assert get_method(name, **method.settings()).settings() == method.settings()
    with pytest.raises(ValueError) as err:
        get_method("tmm")
    assert (
        str(err.value)
        == "Unknown replay method 'tmm' (did you mean 'tm'?). Available: none, ce, kl, l1, l2, tm"
    )
    with pytest.raises(ValueError, match="did you mean 'temperature'"):
        get_method("kl", temp=1.0)  # an abbreviation finds its setting too
    assert get_method("tm").default_weight == 100.0 and get_method("kl").temperature == 2.0


def test_registry_order_and_settings_are_the_one_source_for_names() -> None:
    assert method_names() == ["none", "ce", "kl", "l1", "l2", "tm"]  # baseline first, GeRe last
    specs = {name: REGISTRY.entry(name).spec() for name in REGISTRY}
    assert {n: [(s.name, s.type, s.default) for s in v] for n, v in specs.items() if v} == {
        "kl": [("temperature", float, 2.0), ("t2_scale", bool, True), ("mask_padding", bool, True)],
        "tm": [("k", float, 1.0)],
    }
    undocumented = [(n, s.name) for n, v in specs.items() for s in v if not s.doc]
    assert not undocumented, f"settings without a docstring under their field: {undocumented}"
    for name in REGISTRY:  # settings() reports exactly the spec's settings
        assert list(get_method(name).settings()) == [s.name for s in specs[name]]


@dataclass(frozen=True)
class NewerSettings:
    alpha: int = 3
    """how much,
    continued on a second line."""


class Newer(ReplayMethod):
    name = "aaa-newer"

    def term(self, view: ReplayView) -> Tensor | None:
        return None


def test_a_new_method_is_listed_after_the_built_in_ones() -> None:
    entry = ReplayEntry("aaa-newer", f"{__name__}:Newer", NewerSettings, summary="A newer one.")
    REGISTRY.add(entry)
    try:
        assert method_names()[-2:] == ["tm", "aaa-newer"]
        (spec,) = entry.spec()
        assert (spec.name, spec.type, spec.default, spec.doc) == (
            "alpha",
            int,
            3,
            "how much, continued on a second line.",
        )
        method = get_method("aaa-newer", alpha=5)
        assert type(method) is Newer and method.alpha == 5 and method.settings() == {"alpha": 5}
    finally:
        REGISTRY.remove("aaa-newer")
    assert "aaa-newer" not in method_names()


@pytest.fixture(scope="module")
def moved_model(model, buffer) -> LlamaForCausalLM:
    return perturbed(model, buffer)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_method_invariants(name: str, model, moved_model, buffer) -> None:
    method = prepared(name, model, buffer)
    batch = buffer.collate(range(len(buffer)))
    adds_term = name in ("kl", "l1", "l2", "tm")
    assert method.uses_replay == (name != "none")

    # current model == reference: the term is exactly 0 (or absent)
    same = method.term(make_view(model, model, batch))
    assert (same is None) if not adds_term else (same.item() == 0.0)

    # a moved model: finite, non-negative scalar, with gradients reaching the parameters
    view = make_view(moved_model, model, batch)
    value = method.term(view)
    if not adds_term:
        assert value is None
        return
    assert value.shape == () and torch.isfinite(value) and value.item() > 0
    moved_model.zero_grad()
    value.backward()
    grads = [p.grad.abs().sum() for p in moved_model.parameters() if p.grad is not None]
    assert grads and sum(grads) > 0
    moved_model.zero_grad()

    # padding does not change the value: extra padded positions and an all-padding row, filled
    # with garbage that would change the value if it leaked in
    padded = pad_view(view, extra_positions=3)
    assert torch.equal(method.term(padded).detach(), value.detach())


def pad_view(view: ReplayView, extra_positions: int) -> ReplayView:
    gen = torch.Generator().manual_seed(3)

    def pad(x: Tensor) -> Tensor:
        r, length = x.shape[:2]
        garbage = 50 * torch.randn(r + 1, length + extra_positions, *x.shape[2:], generator=gen)
        garbage = garbage.to(x.dtype)
        garbage[:r, :length] = x.detach()
        return garbage

    mask = torch.zeros(
        view.mask.shape[0] + 1, view.mask.shape[1] + extra_positions, dtype=torch.bool
    )
    mask[: view.mask.shape[0], : view.mask.shape[1]] = view.mask
    ref_logits, ref_hidden = view.reference()
    padded_ref = (pad(ref_logits), pad(ref_hidden))
    return ReplayView(
        logits=pad(view.logits),
        hidden=pad(view.hidden),
        mask=mask,
        index=torch.cat([view.index, torch.tensor([0])]),  # the padding row points at a real row
        reference=lambda: padded_ref,
    )


@pytest.mark.parametrize("tuning", ["full", "lora"])
def test_tm_prepare_forward_is_the_hidden_state_without_the_output_head(tuning) -> None:
    """TM's prepare reads only the last hidden state: ``last_hidden`` gives the same tensor as
    the full forward's, without running the head (no [B, L, vocab] logits; 2.3 GB in bf16 for a
    batch of 16 x 563 tokens of the 8B model)."""
    from harness.config import from_dict
    from harness.models import build, last_hidden, last_hidden_and_logits

    cfg = from_dict({"model": {"name": "tiny", "tuning": tuning}})
    built = build(cfg.model, seed=0, keep_reference=False)
    model = built.model.eval()
    if tuning == "lora":  # adapters that change the output, so they must be seen
        for name, p in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.5)
    ids = torch.randint(3, 200, (3, 11))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    with torch.no_grad():
        _, expected = last_hidden_and_logits(model, ids, mask)
        calls = []
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        handle = base.get_output_embeddings().register_forward_hook(lambda *a: calls.append(1))
        got = last_hidden(model, ids, mask)
        handle.remove()
    assert calls == []
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    if tuning == "lora":
        with torch.no_grad(), model.disable_adapter():
            assert not torch.allclose(last_hidden(model, ids, mask), got)
