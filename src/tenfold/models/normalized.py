"""Small networks with a normalization before every activation, the models of the NaP experiments
(Lyle et al., "Normalization and effective learning rates in reinforcement learning", NeurIPS 2024,
arXiv 2407.01800): :class:`NormMLP` and :class:`NormCNN`, plain when ``norm="none"``. They are built
by :func:`tenfold.nn.normalized.add_norm_before_activations` (see docs/methods/nap.md).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from tenfold.nn.normalized import (NORM_KINDS, NaPGroups, add_norm_before_activations, find_nap_groups, he_init_,
                                   make_activation)
from tenfold.utils.checks import check_choice

__all__ = ["NormMLP", "NormCNN"]


class _NormSequential(nn.Sequential):
    """A plain layer list turned into its normalized form (a norm before every activation, unless
    ``norm="none"``), He-initialised, with the last layer as the head."""

    def __init__(self, plain: list[nn.Module], norm: str, norm_eps: float, bias_before_norm: bool):
        layers = nn.Sequential(*plain)
        if norm != "none":
            layers = add_norm_before_activations(layers, norm=norm, eps=norm_eps, bias_before_norm=bias_before_norm)
        super().__init__(*layers)
        self.norm_kind = norm
        he_init_(self)

    @property
    def head(self) -> nn.Linear:
        return self[-1]

    def nap_groups(self) -> NaPGroups:
        return find_nap_groups(self)


class NormMLP(_NormSequential):
    """MLP ``in → hidden... → out`` with a normalization before every activation (NaP, Lyle et al. 2024).

    ``norm="none"`` gives the plain MLP ``Linear(bias) → act → ... → Linear``; ``"layer"``/``"rms"``
    give ``Linear(bias=bias_before_norm) → Norm → act → ... → Linear(bias=head_bias)``. He init
    N(0, 2/fan_in) for all weights including the head, zero biases, γ = 1, β = 0.
    """

    def __init__(self, *, in_features: int, hidden_features: Sequence[int], out_features: int,
                 norm: str = "layer", norm_eps: float = 1e-5, bias_before_norm: bool = False,
                 head_bias: bool = True, activation: str = "relu"):
        check_choice("norm", norm, NORM_KINDS)
        sizes = [in_features, *hidden_features, out_features]
        if any(not isinstance(s, int) or s < 1 for s in sizes):
            raise ValueError(f"in_features, hidden_features and out_features must be positive ints, got {sizes}")
        if norm_eps < 0:
            raise ValueError(f"norm_eps must be >= 0, got {norm_eps}")
        plain: list[nn.Module] = []
        for fan_in, fan_out in zip(sizes[:-2], sizes[1:-1]):
            plain += [nn.Linear(fan_in, fan_out), make_activation(activation)]
        plain.append(nn.Linear(sizes[-2], out_features, bias=head_bias))
        super().__init__(plain, norm, norm_eps, bias_before_norm)


class NormCNN(_NormSequential):
    """Small CNN ``[Conv3x3 → (Norm) → ReLU → MaxPool2] × len(channels) → global avg pool → Linear``.

    With ``norm="layer"`` the norm is ``GroupNorm(1, C)`` (LayerNorm over the feature map), with
    ``"rms"`` :class:`ChannelRMSNorm`; the convs before a norm are bias-free unless
    ``bias_before_norm``. He init for all weights, zero biases.
    """

    def __init__(self, *, in_channels: int, channels: Sequence[int], num_classes: int, norm: str = "layer",
                 norm_eps: float = 1e-5, bias_before_norm: bool = False, pool: bool = True):
        check_choice("norm", norm, NORM_KINDS)
        sizes = [in_channels, *channels, num_classes]
        if any(not isinstance(s, int) or s < 1 for s in sizes) or not channels:
            raise ValueError(f"in_channels, channels (non-empty) and num_classes must be positive ints, got {sizes}")
        plain: list[nn.Module] = []
        for c_in, c_out in zip(sizes[:-2], sizes[1:-1]):
            plain += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU()]
            if pool:
                plain.append(nn.MaxPool2d(2))
        plain += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(sizes[-2], num_classes)]
        super().__init__(plain, norm, norm_eps, bias_before_norm)
