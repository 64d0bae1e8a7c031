import pytest
import torch

from tenfold.models.radt import (RADT, AlgorithmDistillation, CrossAttention, DecisionTransformer, decode_actions,
                                 sample_above_quantile, sample_top_p)


def _steps(batch, length, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {"states": torch.randint(0, 6, (batch, length, 2), generator=gen),
            "actions": torch.randint(0, 5, (batch, length), generator=gen),
            "rewards": torch.randint(0, 2, (batch, length), generator=gen),
            "rtg": torch.randint(0, 12, (batch, length), generator=gen),
            "timesteps": torch.arange(length).expand(batch, length).clone(),
            "mask": torch.ones(batch, length, dtype=torch.bool)}


def _radt():
    torch.manual_seed(0)
    return RADT(size=(6, 6), horizon=12, max_rtg=12, context=5, memory_steps=8, dim=32, num_layers=2, num_heads=4).eval()


def test_empty_memory_equals_self_attention_only_path():
    model, ctx, mem = _radt(), _steps(3, 5), _steps(3, 8, seed=1)
    a_none, r_none = model(ctx, None)
    masked = dict(mem, mask=torch.zeros(3, 8, dtype=torch.bool))
    a_masked, _ = model(ctx, masked)
    assert torch.allclose(a_none, a_masked, atol=1e-6)
    a_mem, _ = model(ctx, mem)
    assert not torch.allclose(a_none, a_mem, atol=1e-4)
    for block in model.blocks:
        torch.nn.init.zeros_(block.cross.out.weight)
    assert torch.allclose(model(ctx, mem)[0], a_none, atol=1e-6)
    action = model.act(ctx, torch.tensor([4, 4, 4]), None)  # the policy runs with an empty memory
    assert action.shape == (3,) and ((0 <= action) & (action < 5)).all()


def test_self_attention_is_causal_and_memory_is_not():
    model, ctx, mem = _radt(), _steps(2, 5), _steps(2, 8, seed=1)
    base, _ = model(ctx, mem)
    later = {k: v.clone() for k, v in ctx.items()}
    later["states"][:, 3:] = (later["states"][:, 3:] + 1) % 6
    later["actions"][:, 2:] = (later["actions"][:, 2:] + 1) % 5
    out, _ = model(later, mem)
    assert torch.allclose(out[:, :2], base[:, :2], atol=1e-6)  # a_0, a_1 depend only on earlier tokens
    assert not torch.allclose(out[:, 3:], base[:, 3:], atol=1e-4)
    mem2 = {k: v.clone() for k, v in mem.items()}
    mem2["states"][:, -1] = (mem2["states"][:, -1] + 2) % 6
    out2, _ = model(ctx, mem2)
    assert not torch.allclose(out2[:, 0], base[:, 0], atol=1e-6)  # the first step sees the memory's end


def test_losses_are_masked_on_padding():
    model, ctx, mem = _radt(), _steps(2, 5), _steps(2, 8, seed=1)
    ctx["mask"][:, 3:] = False
    changed = {k: v.clone() for k, v in ctx.items()}
    changed["actions"][:, 3:] = (changed["actions"][:, 3:] + 1) % 5
    changed["rtg"][:, 3:] = 0
    assert torch.allclose(model.loss(ctx, mem), model.loss(changed, mem))
    dt = DecisionTransformer(size=(6, 6), horizon=12, max_rtg=12, context=5, dim=32).eval()
    assert torch.allclose(dt.loss(ctx), dt.loss(changed))
    ad = AlgorithmDistillation(size=(6, 6), horizon=12, max_rtg=12, context=5, dim=32).eval()
    assert torch.allclose(ad.loss(ctx), ad.loss(changed))
    assert ad(ctx)[0].shape == (2, 5, 5)


def test_dt_causal_and_gradients_flow():
    dt = DecisionTransformer(size=(6, 6), horizon=12, max_rtg=12, context=5, dim=32).eval()
    ctx = _steps(2, 5)
    base, rtg = dt(ctx)
    assert rtg.shape == (2, 5, 13)
    later = {k: v.clone() for k, v in ctx.items()}
    later["rtg"][:, 4] = 0
    assert torch.allclose(dt(later)[0][:, :4], base[:, :4], atol=1e-6)
    dt.train().loss(ctx).backward()
    assert all(p.grad is not None for p in dt.parameters() if p.requires_grad)
    with pytest.raises(ValueError, match="context"):
        dt(_steps(1, 6))


def test_top_p_sampling():
    logits = torch.tensor([[0.0, 3.0, 1.0, -1.0, 0.5]]).repeat(200, 1)
    gen = torch.Generator().manual_seed(0)
    assert (sample_top_p(logits, 0.0, gen) == 1).all()
    assert (sample_top_p(logits, 0.5, gen) == 1).all()  # the top action alone holds > 0.5
    full = sample_top_p(logits, 1.0, gen)
    assert len(set(full.tolist())) > 2
    with pytest.raises(ValueError, match="top-p"):
        sample_top_p(logits, 1.5)


def test_argument_validation():
    with pytest.raises(ValueError, match="memory_steps"):
        RADT(size=(6, 6), horizon=12, max_rtg=12, context=5, memory_steps=0)
    with pytest.raises(ValueError, match="divisible"):
        CrossAttention(dim=10, num_heads=4)


def test_shared_memory_embedding_option():
    torch.manual_seed(0)
    kw = dict(size=(6, 6), horizon=12, max_rtg=12, context=5, memory_steps=8, dim=32)
    separate, shared = RADT(**kw), RADT(**kw, separate_memory_embed=False)
    assert separate.memory_embed is not separate.embed and shared.memory_embed is shared.embed
    n_embed = sum(p.numel() for p in separate.embed.parameters())
    assert sum(p.numel() for p in separate.parameters()) - sum(p.numel() for p in shared.parameters()) == n_embed
    a, _ = shared(_steps(2, 5), _steps(2, 8, seed=1))
    assert torch.isfinite(a).all()


def test_load_decision_transformer_equals_dt_without_memory():
    torch.manual_seed(3)
    dt = DecisionTransformer(size=(6, 6), horizon=12, max_rtg=12, context=5, dim=32, num_layers=2, num_heads=4).eval()
    model = _radt()
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    missing = model.load_decision_transformer(dt)
    ctx = _steps(3, 5)
    a_dt, r_dt = dt(ctx)
    a_radt, r_radt = model(ctx, None)
    assert torch.allclose(a_dt, a_radt, atol=1e-6) and torch.allclose(r_dt, r_radt, atol=1e-6)
    # cross-attention, memory embeddings and memory positions keep their fresh weights
    assert missing and all(k.startswith(("memory_", "blocks.")) for k in missing)
    assert all(".cross." in k or "norm_cross" in k for k in missing if k.startswith("blocks."))
    for k in missing:
        assert torch.equal(model.state_dict()[k], fresh[k])
    a_mem, _ = model(ctx, _steps(3, 8, seed=1))
    assert not torch.allclose(a_dt, a_mem, atol=1e-4)
    with pytest.raises(ValueError, match="dt"):
        model.load_decision_transformer(_radt())


def test_official_decoding_keeps_the_logits_above_the_median():
    logits = torch.tensor([[0.0, 3.0, 1.0, -1.0, 0.5]]).repeat(4000, 1)
    gen = torch.Generator().manual_seed(0)
    picks = sample_above_quantile(logits, 0.5, generator=gen)
    assert set(picks.tolist()) == {1, 2}  # strictly above the median 0.5: actions 1 and 2
    share = (picks == 1).float().mean()
    expected = 1 / (1 + torch.exp(torch.tensor(-2.0)))  # softmax over (3, 1) at T = 1
    assert abs(share - expected) < 0.03
    # a quantile equal to the maximum keeps every action (the official guard)
    tied = torch.tensor([[1.0, 1.0, 1.0, 0.0, 0.0]]).repeat(4000, 1)
    assert set(sample_above_quantile(tied, 0.5, generator=gen).tolist()) == {0, 1, 2, 3, 4}
    assert (decode_actions(logits, "argmax") == 1).all()
    assert (decode_actions(logits, "nucleus", top_p=0.5, generator=gen) == 1).all()  # greedy where p_top >= 0.5
    assert set(decode_actions(logits, "official", generator=gen).tolist()) == {1, 2}
    with pytest.raises(ValueError, match="decode"):
        decode_actions(logits, "greedy")
    with pytest.raises(ValueError, match="quantile"):
        sample_above_quantile(logits, 1.5)


def test_default_decoding_per_model():
    kw = dict(size=(6, 6), horizon=12, max_rtg=12, context=5, dim=32)
    assert DecisionTransformer(**kw).default_decode == "argmax"
    assert AlgorithmDistillation(**kw).default_decode == "argmax"
    assert RADT(**kw, memory_steps=8).default_decode == "official"


def test_timestep_embedding_option():
    kw = dict(size=(6, 6), horizon=12, max_rtg=12, context=5, dim=32)
    torch.manual_seed(0)
    ctx = _steps(2, 5)
    shifted = dict(ctx, timesteps=ctx["timesteps"] + 3)
    timed = DecisionTransformer(**kw).eval()  # official Dark-Room policy: use_time_embds defaults to True
    assert timed.embed.time is not None and not torch.allclose(timed(ctx)[0], timed(shifted)[0])
    plain = DecisionTransformer(**kw, time_embed=False).eval()
    assert plain.embed.time is None and torch.equal(plain(ctx)[0], plain(shifted)[0])
    radt = RADT(**kw, memory_steps=8, time_embed=False)
    assert radt.memory_embed.time is None


def test_dropout_is_official_by_default_and_off_in_eval():
    kw = dict(size=(6, 6), horizon=12, max_rtg=12, context=5, dim=32, memory_steps=8)
    torch.manual_seed(0)
    model, ctx, mem = RADT(**kw), _steps(2, 5), _steps(2, 8, seed=1)
    assert model.drop.p == 0.1 and all(block.drop.p == 0.1 for block in model.blocks)
    assert not torch.allclose(model.train()(ctx, mem)[0], model(ctx, mem)[0])
    model.eval()
    assert torch.equal(model(ctx, mem)[0], model(ctx, mem)[0])
    with pytest.raises(ValueError, match="dropout"):
        RADT(**kw, dropout=1.0)
