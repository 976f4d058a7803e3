"""The WEINCE criteria as ``nn.Module``s that keep their own state: ``WEINCELoss`` (two-view),
``WEINCEClipLoss`` (two-tower), ``WEINCEQueueLoss`` (explicit negatives), ``WEINCESupConLoss``
(multi-positive)."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from weince_core import WEINCEConfig
from weince_core.validation import check_config

from . import forms
from .distributed import check_gather
from .functional import _check_tensors, init_state, weince_loss


class _StatefulCriterion(nn.Module):
    """A criterion holding ``config``, the ``beta_t`` buffer and ``last_stats`` (see
    ``WEINCELoss`` for the rules every WEINCE criterion follows)."""

    beta_t: torch.Tensor

    def __init__(self, config: WEINCEConfig | None, overrides: dict[str, Any]) -> None:
        super().__init__()
        config = check_config(config)
        self.config = config.replace(**overrides) if overrides else config
        self.register_buffer("beta_t", init_state(self.config).reshape(1))
        self.last_stats: dict[str, torch.Tensor] = {}

    def _check_device(self, name: str, value: torch.Tensor) -> None:
        if value.device != self.beta_t.device:
            raise ValueError(
                f"{name} is on {value.device} but the criterion's state (beta_t) is on "
                f"{self.beta_t.device}: move the criterion with "
                f"criterion.to({str(value.device)!r})"
            )

    def _step(self, loss: torch.Tensor, new_state: torch.Tensor, stats: Any) -> torch.Tensor:
        """Keep ``new_state`` in a training step (training mode, grad enabled) and ``stats``."""
        if self.training and torch.is_grad_enabled():
            self.beta_t.copy_(new_state)
        self.last_stats = stats
        return loss

    def reset_state(self) -> None:
        """``beta_t <- config.beta_init``, as at construction."""
        self.beta_t.fill_(self.config.beta_init)

    def _apply(self, fn: Any, recurse: bool = True) -> _StatefulCriterion:
        state = self.beta_t
        super()._apply(fn, recurse)
        if self.beta_t.dtype != torch.float64:
            # A dtype cast (.half(), .to(torch.bfloat16)): keep the state's float64 value, moved.
            self.beta_t = state.to(device=self.beta_t.device)
        return self


class WEINCELoss(_StatefulCriterion):
    """Drop-in NT-Xent criterion: ``loss = criterion(z_i, z_j)`` for ``(N, d)`` views
    (docs/math.md).

    ``WEINCELoss()`` is the paper preset; ``WEINCELoss(config=WEINCEConfig.blend())`` another
    one; keyword arguments override fields (``WEINCELoss(temperature=0.2)``). Gradients reach
    both inputs through the core's analytic gradient (see ``weince_loss``).

    State. The online slope ``beta_t`` (docs/math.md section 4) is the buffer ``beta_t``: it moves
    with ``.to(device)``, is saved by ``state_dict()`` and restored by ``load_state_dict()``, so a
    resumed run continues bit for bit. It is float64, shape ``(1,)``:

    - float64 so that float64 runs carry the state exactly, and ``.half()`` or
      ``.to(torch.bfloat16)`` on a model holding the criterion does not round it (this module
      keeps the buffer float64 through dtype casts; device moves apply as usual);
    - shape ``(1,)`` rather than 0-d because torch.compile (2.13) silently drops in-place
      updates of a 0-d float64 CPU tensor, which it takes for a Python float.

    When the state moves. A call advances ``beta_t`` only when ``self.training`` and
    ``torch.is_grad_enabled()``: a training step, once per call (each micro-batch of gradient
    accumulation is a step, as in the published implementation). Under ``criterion.eval()``,
    ``torch.no_grad()`` or ``torch.inference_mode()`` (a validation pass) the loss and statistics
    are exactly those a training step would compute on that batch, but ``beta_t`` is not written.

    Logging. ``last_stats`` holds the last call's statistics as detached tensors on the inputs'
    device (``lambda``, ``d_aic``, ``rho`` per anchor; ``lambda_mean``, ``beta_t``,
    ``loss_blend``, ... as scalars), so reading them costs no host synchronisation. Collect
    them on the device and read them back only when you log, e.g. every 100 steps::

        history.append(torch.stack([criterion.last_stats[k] for k in ("lambda_mean", "beta_t")]))
        if step % 100 == 0:
            print(torch.stack(history).float().mean(0).tolist())  # the one sync
            history.clear()

    Several processes. With ``torch.distributed`` initialised (DDP, ``torchrun``), the default
    ``gather="auto"`` makes the batch global: each process passes its own ``n`` rows (the same
    ``n`` everywhere) and every process gets the loss, ``beta_t`` and summary statistics of all
    processes' rows joined in rank order, as one process holding the whole batch would. Each
    process's ``z.grad`` is ``world_size`` times the gradient of that global loss with respect
    to its own rows, so that DDP's average of the parameter gradients over the processes is the
    gradient of the global loss (exactly the single-process gradients; gradient accumulation
    with ``no_sync()`` works as usual). ``last_stats["lambda"]`` (and ``rho``, ``d_aic``) holds
    the process's own ``2n`` anchors: its ``z_i`` rows, then its ``z_j`` rows. ``beta_t`` stays
    equal on every process as long as it starts equal (construction, or ``load_state_dict``
    from one checkpoint). ``gather=False`` keeps the loss local to each process;
    ``gather=group`` uses a ``torch.distributed.ProcessGroup``; ``gather=True`` requires an
    initialised default group. See ``weince_loss`` for the checks (unequal row counts raise a
    ``ValueError`` on every process).

    The module works under ``torch.autocast`` (the loss runs in float32 or float64 inside), on
    the outputs of a DDP-wrapped model, and, local (``gather=False``, or no process group),
    under ``torch.compile(criterion, fullgraph=True)``, which fuses the loss's elementwise work
    and is the fast way to run it (each new batch shape compiles once more).
    """

    def __init__(
        self,
        config: WEINCEConfig | None = None,
        *,
        gather: bool | str | dist.ProcessGroup = "auto",
        **overrides: Any,
    ) -> None:
        super().__init__(config, overrides)
        check_gather(gather)
        self.gather = gather

    def forward(self, z_i: torch.Tensor, z_j: torch.Tensor) -> torch.Tensor:
        """The loss of the views; updates ``beta_t`` (see the class).

        Args:
            z_i: ``(N, d)`` embeddings of the first view.
            z_j: ``(N, d)`` embeddings of the second view, rows paired with ``z_i``'s.

        Returns:
            The 0-d loss; the statistics go to ``last_stats``.
        """
        _check_tensors(z_i=z_i, z_j=z_j)
        self._check_device("z_i", z_i)
        loss, new_state, stats = weince_loss(
            z_i, z_j, self.beta_t[0], self.config, gather=self.gather
        )
        return self._step(loss, new_state, stats)

    def extra_repr(self) -> str:
        gather = "" if isinstance(self.gather, str) else f", gather={self.gather!r}"
        return f"config={self.config!r}{gather}"


class WEINCEClipLoss(_StatefulCriterion):
    """Drop-in for open_clip's ``ClipLoss``: ``criterion(image_features, text_features,
    logit_scale.exp())``, the two-tower form of docs/math.md section 9 (see ``forms.two_tower``).

    ``logit_scale`` (here its exponential, the ``scale``) multiplies the similarities where
    ``1 / temperature`` does in the two-view form; the gradient reaches it. With the preset
    ``WEINCEConfig.infonce()`` the loss is CLIP's symmetric cross-entropy. State
    (``beta_t``), ``last_stats`` and training-step rules as in ``WEINCELoss``;
    ``last_stats["lambda"]`` holds the image rows, then the text rows.

    Several processes (``gather``, as in ``WEINCELoss``): each process passes its own rows of
    both towers, gathered like open_clip's ``gather_with_grad=True``; the loss is exactly that
    of one process holding the whole batch. ``local_loss=True`` computes only the process's
    own rows against every column (less work, the same loss and gradients: the statistics
    are those of the global batch). Local, it works under ``torch.compile(fullgraph=True)``.
    """

    def __init__(
        self,
        config: WEINCEConfig | None = None,
        *,
        local_loss: bool = False,
        gather: bool | str | dist.ProcessGroup = "auto",
        **overrides: Any,
    ) -> None:
        super().__init__(config, overrides)
        check_gather(gather)
        if not isinstance(local_loss, bool):
            raise TypeError(f"local_loss must be True or False; got {type(local_loss).__name__}")
        self.gather, self.local_loss = gather, local_loss

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor | float | None = None,
        output_dict: bool = False,
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        """The loss of matched rows; updates ``beta_t``.

        Args:
            image_features: ``(N, d)`` rows of one tower.
            text_features: ``(N, d)`` rows of the other, row ``a`` matched with
                ``image_features``'s.
            logit_scale: the scale, ``exp`` of CLIP's parameter; ``None``:
                ``1 / config.temperature``.
            output_dict: as open_clip's: ``{"contrastive_loss": loss}``.

        Returns:
            The 0-d loss, or the dict; the statistics go to ``last_stats``.
        """
        _check_tensors(image_features=image_features, text_features=text_features)
        self._check_device("image_features", image_features)
        loss, new_state, stats = forms.two_tower(
            image_features,
            text_features,
            self.beta_t[0],
            self.config,
            scale=logit_scale,
            gather=self.gather,
            local_loss=self.local_loss,
        )
        loss = self._step(loss, new_state, stats)
        return {"contrastive_loss": loss} if output_dict else loss


class WEINCEQueueLoss(_StatefulCriterion):
    """``criterion(q, k, negatives)``: queries against their keys and explicit negatives, the
    explicit-negatives form of docs/math.md section 9 (see ``forms.explicit_negatives``).

    ``negatives`` is a queue or memory bank ``(L, d)`` shared by every query (MoCo; pass
    ``queue.detach()`` or a buffer), or ``(N, P, d)``: ``P`` negatives of each query's own
    (mined negatives, info-nce-pytorch's ``negative_mode="paired"``). ``in_batch_negatives``:
    the other queries' keys are negatives too. State, ``last_stats`` and training-step rules
    as in ``WEINCELoss``. Works under ``torch.compile(fullgraph=True)``.
    """

    def __init__(
        self,
        config: WEINCEConfig | None = None,
        *,
        in_batch_negatives: bool = False,
        **overrides: Any,
    ) -> None:
        super().__init__(config, overrides)
        if not isinstance(in_batch_negatives, bool):
            raise TypeError(
                f"in_batch_negatives must be True or False; got {type(in_batch_negatives).__name__}"
            )
        self.in_batch_negatives = in_batch_negatives

    def forward(self, q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """The loss of queries against their keys and explicit negatives; updates ``beta_t``.

        Args:
            q: ``(N, d)`` queries.
            k: ``(N, d)`` their keys.
            negatives: ``(L, d)`` shared (a queue: detach it) or ``(N, P, d)`` paired.

        Returns:
            The 0-d loss; the statistics go to ``last_stats``.
        """
        _check_tensors(q=q, k=k, negatives=negatives)
        self._check_device("q", q)
        loss, new_state, stats = forms.explicit_negatives(
            q, k, negatives, self.beta_t[0], self.config, in_batch_negatives=self.in_batch_negatives
        )
        return self._step(loss, new_state, stats)


class WEINCESupConLoss(_StatefulCriterion):
    """``criterion(z, labels)``: supervised contrastive (SupCon ``L_out``), the multi-positive
    form of docs/math.md section 9 (see ``forms.multi_positive``).

    ``z`` ``(R, d)`` (every view of every sample as a row), ``labels`` ``(R,)`` integers: rows
    with one label are positives of each other, as pytorch-metric-learning's
    ``SupConLoss()(embeddings, labels)``. State, ``last_stats`` and training-step rules as in
    ``WEINCELoss``. Works under ``torch.compile(fullgraph=True)``.
    """

    def __init__(self, config: WEINCEConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, overrides)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss of rows with their labels; updates ``beta_t``.

        Args:
            z: ``(R, d)`` rows.
            labels: ``(R,)`` integers; rows with equal labels are positives of each other.

        Returns:
            The 0-d loss; the statistics go to ``last_stats``.
        """
        _check_tensors(z=z, labels=labels)
        self._check_device("z", z)
        loss, new_state, stats = forms.multi_positive(z, labels, self.beta_t[0], self.config)
        return self._step(loss, new_state, stats)
