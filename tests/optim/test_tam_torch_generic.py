"""TAM and AdaTAM under PyTorch's own generic optimizer tests (``TestOptimRenewed`` in torch's
``test/test_optim.py``), on the CPU.

torch's test file is not ours and is not committed: place a copy at
``.tenfold-cache/torch/test_optim.py`` (git-ignored) or point ``TENFOLD_TORCH_TEST_OPTIM`` at one.
Without it this module is skipped. It is marked slow (out of the default run):

    PYTHONPATH=src python -m pytest -m slow tests/optim/test_tam_torch_generic.py

This harness registers ``OptimizerInfo`` entries for TAM and AdaTAM in place of torch's own
``optim_db`` while the file is imported, so every ``@optims(optim_db)`` test is generated for them.
The pass counts are in ``docs/methods/tam.md``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
import unittest
from pathlib import Path

import pytest
import torch

from tenfold.optim import TAM, AdaTAM

pytestmark = pytest.mark.slow

TORCH_TEST_FILE = Path(os.environ.get(
    "TENFOLD_TORCH_TEST_OPTIM", Path(__file__).resolve().parents[2] / ".tenfold-cache" / "torch" / "test_optim.py"))
if not TORCH_TEST_FILE.is_file():
    pytest.skip(f"torch's test_optim.py not found at {TORCH_TEST_FILE} (not committed; see the docstring)",
                allow_module_level=True)


def _stub_modules() -> None:
    """torch's test file imports sibling test modules and ``expecttest`` that the wheel lacks."""
    if importlib.util.find_spec("expecttest") is None:
        expecttest = types.ModuleType("expecttest")
        expecttest.TestCase = unittest.TestCase
        sys.modules["expecttest"] = expecttest
    for name, cls in (("test_lrscheduler", "TestLRScheduler"), ("test_optim", "TestDifferentiableOptimizer"),
                      ("test_swa_utils", "TestSWAUtils")):
        module = types.ModuleType(f"optim.{name}")
        setattr(module, cls, type(cls, (), {}))  # not a TestCase: nothing collected
        sys.modules[f"optim.{name}"] = module
    sys.modules.setdefault("optim", types.ModuleType("optim"))


def _infos() -> list:
    from torch.testing._internal.common_methods_invocations import DecorateInfo
    from torch.testing._internal.common_optimizers import (
        ErrorOptimizerInput, OptimizerInfo, OptimizerInput, get_error_inputs_for_all_optims)

    def tam_inputs(device, dtype=None):
        return [OptimizerInput(params=None, kwargs=kwargs, desc=desc) for desc, kwargs in (
            ("default", {}), ("non-default lr", {"lr": 1e-2}), ("tensor lr", {"lr": torch.tensor(0.001)}),
            ("non-zero weight_decay", {"weight_decay": 0.5}),
            ("maximize", {"weight_decay": 0.1, "maximize": True}),
            ("decoupled weight_decay", {"weight_decay": 0.1, "decoupled_weight_decay": True}),
            ("momentum", {"momentum": 0.5, "decay": 0.5}), ("global", {"granularity": "global"}),
            ("damping off", {"damping": False}))]

    def adatam_inputs(device, dtype=None):
        return [OptimizerInput(params=None, kwargs=kwargs, desc=desc) for desc, kwargs in (
            ("default", {}), ("non-default lr", {"lr": 1e-2}), ("tensor lr", {"lr": torch.tensor(0.001)}),
            ("non-zero weight_decay", {"weight_decay": 0.1}),
            ("coupled weight_decay", {"weight_decay": 0.1, "decoupled_weight_decay": False}),
            ("maximize", {"weight_decay": 0.1, "maximize": True}), ("betas", {"betas": (0.8, 0.95)}),
            ("global", {"granularity": "global"}), ("damping off", {"damping": False}))]

    def error_inputs(extra):
        def make(device, dtype):
            errors = get_error_inputs_for_all_optims(device, dtype)
            for kwargs, regex in extra:
                errors.append(ErrorOptimizerInput(OptimizerInput(params=None, kwargs=kwargs, desc=regex),
                                                  error_type=ValueError, error_regex=regex))
            return errors
        return make

    common = dict(supported_impls=("foreach",), not_og_supported_flags=("foreach", "maximize", "skip_nonfinite"),
                  supports_complex=True)
    return [
        # By design, not a defect: test_complex_2d splits a complex tensor into a real and an
        # imaginary tensor, which gives TAM two cosines where the complex tensor has one.
        OptimizerInfo(TAM, optim_inputs_func=tam_inputs, **common, skips=(
            DecorateInfo(unittest.expectedFailure, "TestOptimRenewed", "test_complex_2d"),),
            optim_error_inputs_func=error_inputs([
            ({"lr": -1.0}, "Invalid learning rate: -1.0"), ({"momentum": -0.5}, "Invalid momentum value: -0.5")])),
        OptimizerInfo(AdaTAM, optim_inputs_func=adatam_inputs, **common, optim_error_inputs_func=error_inputs([
            ({"lr": -1.0}, "Invalid learning rate: -1.0"),
            ({"betas": (1.0, 0.99)}, "Invalid beta parameter at index 0: 1.0")])),
    ]


def _load_torch_tests():
    """Import torch's file with ``optim_db`` replaced by our entries; return its module."""
    _stub_modules()
    import torch.testing._internal.common_optimizers as common_optimizers

    saved = list(common_optimizers.optim_db)
    common_optimizers.optim_db[:] = _infos()
    try:
        spec = importlib.util.spec_from_file_location("_torch_test_optim", TORCH_TEST_FILE)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        common_optimizers.optim_db[:] = saved
    return module


TestOptimRenewedCPU = _load_torch_tests().TestOptimRenewedCPU
