"""The compositional experiment's wiring: the control's two supports share one OOD set, the arms per
support, and clear errors for settings it cannot run."""

import dataclasses

import pytest
import torch

from tenfold.experiments import compositional as C
from tenfold.models.hypernet import BilinearSetEncoder, ContextEncoder, HypernetBottleneck, SetEncoder
from tenfold.tasks.hyperteacher import co_occurrence_components

SMALL = dataclasses.replace(C.PRESETS["smoke"], n_modules=8)


def test_supports_share_teacher_statistics_and_ood_set():
    samplers = C.make_samplers(SMALL, seed=3)
    conn, disc = samplers["connected"], samplers["disconnected"]
    assert conn.teacher is disc.teacher and torch.equal(conn.y_std, disc.y_std)
    assert conn.split.ood == disc.split.ood and len(conn.split.ood) == 10
    assert len(co_occurrence_components(conn.split.id, 8)) == 1
    assert len(co_occurrence_components(disc.split.id, 8)) == 2
    a, b = (s.sample(8, "ood", torch.Generator().manual_seed(0)) for s in (conn, disc))
    assert torch.equal(a.y_q, b.y_q)


def test_arms_per_support_and_encoders():
    cfg = dataclasses.replace(SMALL, ablations=("transformer", "deepset"))
    assert C.arm_names(cfg, "connected") == ("transformer", "bottleneck", "oracle", "bottleneck_transformer",
                                             "bottleneck_deepset")
    assert C.arm_names(cfg, "disconnected") == ("bottleneck", "oracle", "bottleneck_transformer", "bottleneck_deepset")
    kinds = {arm: type(C.build_model(arm, cfg).encoder) for arm in ("bottleneck", "bottleneck_transformer",
                                                                      "bottleneck_deepset")}
    assert kinds == {"bottleneck": BilinearSetEncoder, "bottleneck_transformer": ContextEncoder,
                     "bottleneck_deepset": SetEncoder}
    deep = C.build_model("bottleneck", dataclasses.replace(cfg, teacher_layers=3))
    assert isinstance(deep, HypernetBottleneck) and deep.hypernet.n_layers == 3
    with pytest.raises(ValueError, match="arm"):
        C.build_model("bottleneck_bilinear", cfg)


@pytest.mark.parametrize("field, value, match", [("n_modules", 7, "even"), ("n_modules", 4, "n_modules"),
                                                 ("teacher_layers", 2, "teacher_layers"),
                                                 ("encoder", "mlp", "encoder"),
                                                 ("ablations", ("bilinear",), "ablations")])
def test_bad_settings_name_the_field(field, value, match):
    with pytest.raises(ValueError, match=match):
        C.validate(dataclasses.replace(SMALL, **{field: value}))
