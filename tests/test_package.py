"""The package's public surface: lazy modules list their exports."""

import pytest

import tenfold.nn
import tenfold.optim


@pytest.mark.parametrize("module, names", [
    (tenfold.nn, {"Attention", "RotaryEmbedding", "RGLRU", "XLSTMStack", "BlockDiagonalLinear"}),
    (tenfold.optim, {"TAM", "AdaTAM", "NaP", "SoftReset"}),
])
def test_dir_lists_the_lazy_exports(module, names):
    listed = dir(module)
    assert names <= set(listed) and set(module.__all__) <= set(listed)
    assert listed == sorted(listed)
