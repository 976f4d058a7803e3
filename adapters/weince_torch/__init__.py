"""WEINCE for PyTorch: a drop-in NT-Xent criterion with its state in a buffer.

    from weince_torch import WEINCELoss
    criterion = WEINCELoss().to(device)          # paper preset; WEINCELoss(temperature=0.2), ...
    loss = criterion(z_i, z_j)                   # (N, d) views; loss.backward() as usual
    criterion.last_stats["lambda_mean"]          # detached tensors, for logging

Functional form, state kept by the caller::

    state = weince_torch.init_state(config, device=device)
    loss, state, stats = weince_torch.weince_loss(z_i, z_j, state, config)

Both run the core's forward and analytic gradient (SPEC.md), with no host synchronisation,
under ``torch.autocast`` and under ``torch.compile(fullgraph=True)``.

Under ``torch.distributed`` (DDP, ``torchrun``), ``gather="auto"`` (the default of both) makes
the loss that of the global batch, every process passing its own rows; ``gather=False`` keeps
it local (see ``weince_torch.distributed``).
"""

from weince_core import WEINCEConfig

from . import _triton
from .functional import STAT_KEYS, init_state, weince_loss
from .module import WEINCELoss

_triton.enable_from_environment()  # the GPU kernels, where Triton and a CUDA device are present

__all__ = ["STAT_KEYS", "WEINCEConfig", "WEINCELoss", "init_state", "weince_loss"]
