import numpy as np
import pytest
import torch

from tenfold.models.lram import LRAM, ActionTokenizer, LRAMAgent, LRAMConfig, allowed_vocab


def test_tokenizer_round_trip_within_half_a_bin():
    tok = ActionTokenizer()
    actions = torch.linspace(-1, 1, 1001)
    ids = tok.encode_continuous(actions)
    assert ids.min() >= 18 and ids.max() <= 273
    assert (tok.decode_continuous(ids) - actions).abs().max() <= 1 / 256 + 1e-6
    centres = tok.decode_continuous(torch.arange(18, 274))
    assert torch.equal(tok.encode_continuous(centres), torch.arange(18, 274))  # centres round-trip exactly
    lower = ActionTokenizer(decode="lower_edge")
    assert torch.allclose(centres - lower.decode_continuous(torch.arange(18, 274)), torch.full((256,), 1 / 256))
    with pytest.raises(ValueError, match="continuous action ids"):
        tok.decode_continuous(torch.tensor([3]))
    with pytest.raises(ValueError, match="decode"):
        ActionTokenizer(decode="middle")


def test_allowed_vocab_restricts_each_domain():
    tok = ActionTokenizer()
    assert allowed_vocab(tok, True, 3).nonzero().flatten().tolist() == [0, 1, 2]
    assert allowed_vocab(tok, False).sum() == 256 and not allowed_vocab(tok, False)[:18].any()
    with pytest.raises(ValueError, match="n_actions"):
        allowed_vocab(tok, True, 19)


def make_batch(model, batch=3, steps=5, act_dim=2):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(18, 274, (batch, steps, model.cfg.max_act_dim), generator=g)
    mask = torch.zeros(batch, steps, model.cfg.max_act_dim, dtype=torch.bool)
    mask[:, :, :act_dim] = True
    mask[0, 3:] = False  # padded timesteps of the first sequence
    return {"states": torch.randn(batch, steps, 7, generator=g), "returns": torch.randn(batch, steps, generator=g),
            "rewards": torch.randn(batch, steps, generator=g), "actions": ids, "action_mask": mask, "scale": 10.0,
            "timesteps": torch.arange(steps).expand(batch, steps)}


@pytest.mark.parametrize("backbone", ["xlstm", "transformer"])
def test_masked_action_dims_and_timesteps_get_no_loss_or_gradient(backbone):
    torch.manual_seed(0)
    model = LRAM(LRAMConfig(backbone=backbone, dim=16, num_layers=2, num_heads=2, max_act_dim=4, context=5))
    batch = make_batch(model)
    loss = model.loss(batch)
    changed = dict(batch, actions=batch["actions"].clone())
    changed["actions"][:, :, 2:] = 18  # padded dims
    changed["actions"][0, 3:] = 19  # padded timesteps
    assert torch.equal(model.loss(changed), loss)
    loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "image" not in n and "action_embed" not in n)


def test_loss_is_the_mean_cross_entropy_over_the_valid_ids():
    torch.manual_seed(0)
    model = LRAM(LRAMConfig(backbone="xlstm", dim=16, num_layers=2, num_heads=2, max_act_dim=4, context=5))
    batch = make_batch(model)
    mask = batch["action_mask"]
    context = batch["actions"].masked_fill(~mask, model.tokenizer.vocab_size)
    logits = model(batch["states"], batch["returns"], batch["rewards"], batch["scale"],
                   context if model.cfg.actions_in_context else None, batch["timesteps"])
    gathered = torch.nn.functional.cross_entropy(logits[mask], batch["actions"][mask])  # 26 valid ids of 60
    assert torch.allclose(model.loss(batch), gathered, rtol=1e-6, atol=0)


@pytest.mark.parametrize("backbone", ["xlstm", "transformer"])
@pytest.mark.parametrize("actions_in_context", [False, True])
def test_agent_stepping_equals_the_training_forward(backbone, actions_in_context):
    torch.manual_seed(0)
    cfg = LRAMConfig(backbone=backbone, dim=16, num_layers=2, num_heads=2, max_act_dim=4, max_state_dim=7,
                     context=6, actions_in_context=actions_in_context)
    model = LRAM(cfg).double().eval()
    steps, scale, act_dim = 6, 10.0, 2
    states = torch.randn(1, steps, 7, dtype=torch.float64)
    rewards = torch.randn(1, steps, dtype=torch.float64)
    returns = 5.0 - torch.cat([torch.zeros(1, 1, dtype=torch.float64), rewards.cumsum(1)[:, :-1]], 1)
    agent = LRAMAgent(model, scale=scale, discrete=False, act_dim=act_dim)
    agent.reset(5.0)
    ids = []
    for t in range(steps):
        agent.act(states[0, t])
        ids.append(agent._last_ids)
        agent.observe(float(rewards[0, t]))
    action_ids = torch.full((1, steps, 4), model.tokenizer.vocab_size)
    action_ids[0, :, :act_dim] = torch.stack(ids)
    logits = model(states, returns, rewards, scale, action_ids if actions_in_context else None,
                   torch.arange(steps)[None])
    allowed = agent.allowed
    expected = logits[0, :, :act_dim].masked_fill(~allowed, float("-inf")).argmax(-1)
    assert torch.equal(torch.stack(ids), expected)


def test_image_states_go_through_the_cnn():
    model = LRAM(LRAMConfig(dim=16, num_layers=1, num_heads=2))
    assert model.embed_states(torch.rand(2, 5, 3, 16, 16)).shape == (2, 5, 16)
    with pytest.raises(ValueError, match="max_state_dim"):
        model.embed_states(torch.randn(2, 40))


def test_agent_standardizes_observations_with_the_given_statistics():
    torch.manual_seed(0)
    model = LRAM(LRAMConfig(backbone="xlstm", dim=16, num_layers=1, num_heads=2, max_state_dim=3)).eval()
    mean, std = np.array([1.0, -2.0, 0.5]), np.array([0.1, 3.0, 2.0])
    raw = LRAMAgent(model, scale=1.0, discrete=False, act_dim=2, state_stats=(mean, std))
    plain = LRAMAgent(model, scale=1.0, discrete=False, act_dim=2)
    observations = np.random.default_rng(0).normal(size=(5, 3)) * std + mean
    raw.reset(1.0)
    plain.reset(1.0)
    for obs in observations:
        assert np.allclose(raw.observation(obs), (obs - mean) / std, atol=1e-6)
        assert torch.equal(raw.act(obs), plain.act((obs - mean) / std))
        raw.observe(0.1)
        plain.observe(0.1)


def test_window_positions_ignore_episode_timesteps_and_episode_positions_use_them():
    torch.manual_seed(0)
    states, returns, rewards = torch.randn(2, 5, 3), torch.randn(2, 5), torch.randn(2, 5)
    early, late = torch.arange(5).expand(2, 5), torch.arange(40, 45).expand(2, 5)
    logits = {}
    for positions in ("window", "episode"):
        cfg = LRAMConfig(backbone="transformer", dim=16, num_layers=1, num_heads=2, max_state_dim=3, context=5,
                         positions=positions, max_timesteps=64)
        model = LRAM(cfg).eval()
        logits[positions] = [model(states, returns, rewards, 1.0, timesteps=t) for t in (early, late)]
    assert torch.equal(*logits["window"])  # token indices 0..S-1, whatever the episode timesteps
    assert not torch.allclose(*logits["episode"])
    with pytest.raises(ValueError, match="positions"):
        LRAMConfig(positions="global")


def test_transformer_agent_keeps_stepping_past_the_context_with_window_positions():
    torch.manual_seed(0)
    model = LRAM(LRAMConfig(backbone="transformer", dim=16, num_layers=1, num_heads=2, max_state_dim=3,
                            context=4)).eval()
    agent = LRAMAgent(model, scale=1.0, discrete=True, n_actions=3)
    agent.reset(1.0)
    for _ in range(3 * model.cfg.context):  # positions stay inside the window's 12 learned ones
        assert 0 <= int(agent.act(np.zeros(3))) < 3
        agent.observe(0.0)
