"""Max retrieval (Veličković et al., 2024, "softmax is not enough", §3): each item of a set has a
priority x_i ~ U(0, 1) and a class c_i in {0, ..., n_classes - 1}; the target is the class of the item
with the largest priority. A model reads the set through one attention head with a learned query, so
its sharpness (the weight on the max item) can be measured as the set grows beyond the training size
(the model: :class:`tenfold.models.max_retrieval.MaxRetrievalNet`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sample_max_retrieval(batch: int, n: int, *, n_classes: int = 10, generator: torch.Generator | None = None):
    """Draw ``batch`` sets of ``n`` items.

    Returns ``feats`` (batch, n, 1 + n_classes) = [priority, one-hot class], ``target`` (batch,) the class
    of the max-priority item and ``argmax`` (batch,) its index. Sets whose top priority is tied are
    redrawn, so the max item is unique.
    """
    if batch < 1 or n < 1 or n_classes < 2:
        raise ValueError(f"need batch >= 1, n >= 1 and n_classes >= 2; got batch={batch}, n={n}, "
                         f"n_classes={n_classes}")
    priority = torch.rand(batch, n, generator=generator)
    while True:
        top2 = priority.topk(min(2, n), dim=-1).values  # (batch, 2)
        tied = top2[:, 0] == top2[:, -1] if n > 1 else torch.zeros(batch, dtype=torch.bool)
        if not tied.any():
            break
        priority[tied] = torch.rand(int(tied.sum()), n, generator=generator)
    classes = torch.randint(n_classes, (batch, n), generator=generator)
    argmax = priority.argmax(-1)
    target = classes.gather(1, argmax[:, None]).squeeze(1)
    feats = torch.cat([priority.unsqueeze(-1), F.one_hot(classes, n_classes).float()], dim=-1)  # (batch, n, 1 + C)
    return feats, target, argmax
