"""WEINCE for PyTorch: a drop-in NT-Xent criterion with its state in a buffer.

    from weince_torch import WEINCELoss
    criterion = WEINCELoss().to(device)          # paper preset; WEINCELoss(temperature=0.2), ...
    loss = criterion(z_i, z_j)                   # (N, d) views; loss.backward() as usual
    criterion.last_stats["lambda_mean"]          # detached tensors, for logging

Functional form, state kept by the caller::

    state = weince_torch.init_state(config, like=z_i)   # beta_t, on z_i's device
    loss, state, stats = weince_torch.weince_loss(z_i, z_j, state, config)

Every function returns the core's forward form, ``(loss, new_state, stats)`` (autograd gives
the gradients); ``config=None`` is the paper preset; ``stats`` has the keys ``STAT_KEYS``.

The pairing forms of docs/math.md section 9, each a criterion and a function (same arguments)::

    WEINCEClipLoss()(image_features, text_features, logit_scale.exp())   # CLIP, two-tower
    WEINCEQueueLoss()(q, k, queue.detach())      # a queue (L, d) or paired negatives (N, P, d)
    WEINCESupConLoss()(z, labels)                # supervised contrastive, several positives
    weince_torch.two_tower(x, y, state, config, scale=scale)  # -> (loss, new_state, stats)

All run the core's forward and analytic gradient (docs/math.md), with no host synchronisation,
under ``torch.autocast`` and under ``torch.compile(fullgraph=True)``.

Under ``torch.distributed`` (DDP, ``torchrun``), ``gather="auto"`` (the default of both) makes
the loss that of the global batch, every process passing its own rows; ``gather=False`` keeps
it local (see ``weince_torch.distributed``).
"""

from weince_core import STAT_KEYS, WEINCEConfig

from . import _triton
from .forms import explicit_negatives, multi_positive, two_tower
from .functional import init_state, weince_loss
from .module import WEINCEClipLoss, WEINCELoss, WEINCEQueueLoss, WEINCESupConLoss

_triton.enable_from_environment()  # the GPU kernels, where Triton and a CUDA device are present

two_view = weince_loss  # the two-view form under the name the other forms follow

__all__ = [
    "STAT_KEYS",
    "WEINCEClipLoss",
    "WEINCEConfig",
    "WEINCELoss",
    "WEINCEQueueLoss",
    "WEINCESupConLoss",
    "explicit_negatives",
    "init_state",
    "multi_positive",
    "two_tower",
    "two_view",
    "weince_loss",
]
