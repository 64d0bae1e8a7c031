import math

import pytest
import torch

from tenfold.train.loop import fit, online_updates, warmup_cosine


def test_warmup_then_cosine_hand_values():
    # warm-up 2 steps, then cosine over 4 steps to a floor of 0.1
    values = [warmup_cosine(s, warmup=2, decay_steps=4, floor=0.1) for s in range(7)]
    assert values[:2] == [0.5, 1.0]
    assert values[2] == pytest.approx(1.0)
    assert values[4] == pytest.approx(0.1 + 0.9 * 0.5)
    assert values[6] == pytest.approx(0.1)


def test_overlapping_warmup_multiplies_a_cosine_that_starts_at_step_zero():
    for step in range(12):
        expected = min(1.0, (step + 1) / 4) * 0.5 * (1 + math.cos(math.pi * min(1.0, step / 10)))
        assert warmup_cosine(step, warmup=4, decay_steps=10, overlap=True) == expected


def test_no_warmup_is_a_plain_cosine_and_clamps_past_the_end():
    assert warmup_cosine(0, warmup=0, decay_steps=5) == 1.0
    assert warmup_cosine(50, warmup=0, decay_steps=5) == 0.0


def test_warmup_cosine_rejects_bad_arguments():
    with pytest.raises(ValueError, match="warmup"):
        warmup_cosine(0, warmup=-1, decay_steps=3)
    with pytest.raises(ValueError, match="floor"):
        warmup_cosine(0, warmup=1, decay_steps=3, floor=1.5)


def _problem():
    torch.manual_seed(0)
    x, w_true = torch.randn(32, 3), torch.randn(3, 1)
    model = torch.nn.Linear(3, 1, bias=False)
    return model, (lambda step: ((model(x) - x @ w_true) ** 2).mean())


def test_fit_equals_the_hand_written_loop():
    model, loss_fn = _problem()
    reference = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    losses = fit(model, opt, loss_fn, 5, schedule=lambda s: 1 / (s + 1), clip=0.5)

    model2, loss_fn2 = _problem()
    with torch.no_grad():
        for p, r in zip(model2.parameters(), reference):
            p.copy_(r)
    opt2 = torch.optim.AdamW(model2.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt2, lambda s: 1 / (s + 1))
    expected = []
    for step in range(5):
        loss = loss_fn2(step)
        opt2.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model2.parameters(), 0.5)
        opt2.step()
        sched.step()
        expected.append(loss.item())
    assert losses == expected
    assert torch.equal(model.weight, model2.weight)


def test_fit_with_gradients_accumulated_by_the_loss_function():
    model, loss_fn = _problem()

    def two_halves(step):
        total = 0.0
        for _ in range(2):
            loss = loss_fn(step) / 2
            loss.backward()
            total = total + loss.detach()
        return total

    losses = fit(model, torch.optim.SGD(model.parameters(), lr=0.1), two_halves, 3, backward=False)
    assert len(losses) == 3 and losses[2] < losses[0]


def test_online_updates_measure_before_updating_and_make_that_many_updates():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 4)
    x, y = torch.randn(8, 3), torch.randint(0, 4, (8,))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    expected = model(x).detach()
    calls = []
    logits, loss = online_updates(model, opt, x, y, 3, before=lambda: calls.append("b"),
                                  after=lambda: calls.append("a"))
    assert torch.equal(logits, expected) and not logits.requires_grad
    assert torch.allclose(loss, torch.nn.functional.cross_entropy(expected, y))
    assert calls == ["b", "a"] * 3
    torch.manual_seed(0)
    reference = torch.nn.Linear(3, 4)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.5)
    for _ in range(3):
        ref_opt.zero_grad()
        torch.nn.functional.cross_entropy(reference(x), y).backward()
        ref_opt.step()
    assert torch.equal(model.weight, reference.weight)
    with pytest.raises(ValueError, match="updates"):
        online_updates(model, opt, x, y, 0)
