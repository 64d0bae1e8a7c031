import pytest

from tenfold.experiment import fill_claims
from tenfold.experiments.structured_ffn import CLAIMS, EXPERIMENT, PRESETS, flop_ratio, premise_gap
from tenfold.compute_matched import matched_steps

CONDITIONAL = ("structured-ffn.sgt-gap", "structured-ffn.sgt-vs-more-tokens")


def _measured(premise: float) -> dict:
    return {"structured-ffn.premise": premise, "structured-ffn.dense-beats-63": 0.01,
            "structured-ffn.63-beats-32": 0.01, "structured-ffn.sgt-gap": 0.5,
            "structured-ffn.sgt-vs-more-tokens": 0.01, "structured-ffn.speedup": 2.0}


def test_sgt_claim_is_conditional_on_the_premise():
    assert EXPERIMENT.claim_ids[0] == "structured-ffn.premise"
    spec = {c.id: c for c in CLAIMS}
    assert all(spec[claim].requires == "structured-ffn.premise" for claim in CONDITIONAL)
    assert all(c.requires is None for c in CLAIMS if c.id not in CONDITIONAL)
    held = {c.id: c for c in fill_claims(CLAIMS, _measured(0.05))}
    assert all(held[claim].status == "pass" for claim in CONDITIONAL)
    absent = {c.id: c for c in fill_claims(CLAIMS, _measured(0.01))}
    assert absent["structured-ffn.premise"].status == "fail"
    for claim in CONDITIONAL:
        assert absent[claim].status == "n/a" and absent[claim].note.startswith("n/a: premise absent")
    assert absent["structured-ffn.dense-beats-63"].status == "pass"


def test_premise_gap_is_the_first_quarter_mean_difference():
    cfg = PRESETS["smoke"].__class__(steps=8)
    records = {0: {"dense": {"losses": [3.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]},
                   "lowrank32": {"losses": [3.0, 2.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]}},
               1: {"dense": {"losses": [2.0] * 8}, "lowrank32": {"losses": [2.0] * 8}}}
    gap = premise_gap(cfg, records)
    assert gap["steps"] == 2 and gap["per_seed"] == [0.25, 0.0] and gap["mean"] == pytest.approx(0.125)


def test_more_tokens_arm_gets_the_sgt_runs_counted_flops():
    record = {"lowrank32": {"train_flops": 1.0e12}, "lowrank32_sgt": {"train_flops": 1.104e12}}
    assert flop_ratio(record) == pytest.approx(1.104)
    assert matched_steps(800, flop_ratio(record)) == 883
