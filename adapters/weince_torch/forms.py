"""The pairing forms of docs/math.md section 9 as differentiable PyTorch functions.

``two_tower`` (CLIP), ``explicit_negatives`` (a MoCo queue, a memory bank, mined negatives) and
``multi_positive`` (SupCon) return ``(loss, new_state, stats)`` like ``weince_loss`` (the
two-view form), with the state kept by the caller. One ``torch.autograd.Function``,
``_FormFunction``, serves every form: its forward is the core's ``*_value_and_grad`` of the form
(the loss and the analytic gradients of every input together) when an input needs a gradient,
keeping only the gradients, the size of the inputs, for the backward, which scales them by the
loss's upstream gradient; otherwise it is the core's forward-only form. A form is a row of
``FORMS``: its core functions, the names of its array arguments and which of them are
differentiable.

Two-tower over ``torch.distributed`` (``gather``): every process passes its own rows of both
towers. By default (``local_loss=False``, open_clip's ``gather_with_grad=True``) the towers are
gathered with gradient and every process computes the loss of the joined batch, exactly the
one-process result; ``local_loss=True`` computes only this process's rows against every
process's columns, with the statistics (``rho0``, the ``beta_t`` tail, the mean) of the global
batch, through the core's collectives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

import weince_core as wc
from weince_core import STAT_KEYS, WEINCEConfig
from weince_core.validation import check_config

from . import distributed
from .functional import _check_tensors, _distinct, _run_eagerly, _without_autocast

Stats = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Form:
    """How a pairing form is called in the core.

    Attributes:
        name: the form's name (docs/math.md section 9), also the core's function name.
        arrays: the positional array arguments, before ``state``.
        keywords: keyword array arguments (``scale``), which may be ``None``.
        differentiable: the arguments whose gradients the core returns, in its order.
    """

    name: str
    arrays: tuple[str, ...]
    keywords: tuple[str, ...] = ()
    differentiable: tuple[str, ...] = ()

    @property
    def inputs(self) -> tuple[str, ...]:
        """The form's array arguments in call order.

        Returns:
            ``arrays`` then ``keywords``.
        """
        return self.arrays + self.keywords

    def value_and_grad(self) -> Any:
        """The core's value-and-grad function of the form.

        Returns:
            ``weince_core.<name>_value_and_grad``.
        """
        return getattr(wc, f"{self.name}_value_and_grad")

    def forward_only(self) -> Any:
        """The core's forward-only function of the form.

        Returns:
            ``weince_core.<name>``.
        """
        return getattr(wc, self.name)

    def call(
        self, function: Any, inputs: tuple[Any, ...], state: Any, config: Any, **kw: Any
    ) -> Any:
        """``function(*arrays, state, config, *keywords, **kw)``.

        Args:
            function: one of the core's functions of the form.
            inputs: the array arguments in ``inputs``'s order; keyword arrays that are ``None`` are
                left out (the core's default).
            state: the state.
            config: the configuration.
            **kw: further keyword arguments.

        Returns:
            What ``function`` returns.
        """
        count = len(self.arrays)
        keywords = {k: v for k, v in zip(self.keywords, inputs[count:], strict=True)}
        keywords = {k: v for k, v in keywords.items() if v is not None}
        return function(*inputs[:count], state, config, **keywords, **kw)


FORMS = {
    "two_view": Form("two_view", ("z_i", "z_j"), differentiable=("z_i", "z_j")),
    "two_tower": Form("two_tower", ("x", "y"), ("scale",), ("x", "y", "scale")),
    "explicit_negatives": Form("explicit_negatives", ("q", "k", "n"), (), ("q", "k", "n")),
    "multi_positive": Form("multi_positive", ("z", "labels"), (), ("z",)),
}


def two_tower(
    x: torch.Tensor,
    y: torch.Tensor,
    state: torch.Tensor,
    config: WEINCEConfig | None = None,
    *,
    scale: torch.Tensor | float | None = None,
    gather: bool | str | dist.ProcessGroup = "auto",
    local_loss: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, Stats]:
    """``(loss, new_state, stats)`` of the two-tower (CLIP) form, differentiable in ``x``,
    ``y`` and ``scale`` (docs/math.md section 9).

    Args:
        x: ``(N, d)`` rows of one tower (images), ``N >= 2``.
        y: ``(N, d)`` rows of the other (texts), row ``a`` matched with ``x``'s row ``a``.
        state: ``beta_t`` from ``init_state``.
        config: the paper preset unless given.
        scale: a positive 0-d tensor, CLIP's ``logit_scale.exp()`` (the gradient reaches it),
            or a float; ``None`` means ``1 / config.temperature``.
        gather: over which processes the batch is spread, as in ``weince_loss``.
        local_loss: gathered, compute only this process's rows (its ``x`` rows against every
            ``y``, its ``y`` rows against every ``x``) with the global statistics, instead of
            the whole loss on every process; the same loss and gradients.

    Returns:
        ``(loss, new_state, stats)``; ``stats["lambda"]`` (and ``rho``, ``d_aic``) per row:
        the ``N`` rows of ``x``, then those of ``y``. Gathered without ``local_loss`` these are
        the rows of the whole batch; with ``local_loss``, this process's ``2n``.

    Gathered, every process's loss is the global loss, and the gradients of ``x`` and ``y``
    are ``world_size`` times the global loss's (see ``weince_loss``: DDP's average makes them
    exact) while ``scale``'s, replicated, is the global loss's own (DDP averages it to itself).
    """
    _check_tensors(x=x, y=y, state=state)
    config = check_config(config)
    scale = _as_scale(scale, x)
    if not isinstance(local_loss, bool):
        raise TypeError(f"local_loss must be True or False; got {type(local_loss).__name__}")
    group = distributed.resolve_group(gather)
    form = FORMS["two_tower"]
    if group is None:
        return apply_form(form, (x, y, scale), state, config)
    return _gathered_two_tower(x, y, scale, state, config, group, local_loss)


def explicit_negatives(
    q: torch.Tensor,
    k: torch.Tensor,
    n: torch.Tensor,
    state: torch.Tensor,
    config: WEINCEConfig | None = None,
    *,
    in_batch_negatives: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, Stats]:
    """``(loss, new_state, stats)`` of the explicit-negatives form (docs/math.md section 9).

    Args:
        q: ``(N, d)`` queries.
        k: ``(N, d)`` their positive keys.
        n: negatives: ``(L, d)`` shared by every query (a queue or memory bank: pass it
            detached, ``queue.detach()``, unless it should get a gradient), or ``(N, P, d)``,
            ``P`` of its own for each query (paired).
        state: ``beta_t`` from ``init_state``.
        config: the paper preset unless given.
        in_batch_negatives: the other queries' keys are negatives too.

    Returns:
        ``(loss, new_state, stats)``, the statistics per query.
    """
    _check_tensors(q=q, k=k, n=n, state=state)
    config = check_config(config)
    if not isinstance(in_batch_negatives, bool):
        raise TypeError(
            f"in_batch_negatives must be True or False; got {type(in_batch_negatives).__name__}"
        )
    options = (("in_batch_negatives", in_batch_negatives),)
    return apply_form(FORMS["explicit_negatives"], (q, k, n), state, config, options)


def multi_positive(
    z: torch.Tensor,
    labels: torch.Tensor,
    state: torch.Tensor,
    config: WEINCEConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor, Stats]:
    """``(loss, new_state, stats)`` of the multi-positive (SupCon ``L_out``) form.

    Args:
        z: ``(R, d)`` rows, several views of each sample.
        labels: ``(R,)`` integer tensor: rows with equal labels are positives of each other.
        state: ``beta_t`` from ``init_state``.
        config: the paper preset unless given.

    Returns:
        ``(loss, new_state, stats)``, the statistics per row (docs/math.md section 9: a row without
        positives adds nothing to the loss; one without negatives has ``lambda = 0``).
    """
    _check_tensors(z=z, labels=labels, state=state)
    config = check_config(config)
    return apply_form(FORMS["multi_positive"], (z, labels), state, config)


def apply_form(
    form: Form,
    inputs: tuple[torch.Tensor | None, ...],
    state: torch.Tensor,
    config: WEINCEConfig,
    options: tuple[tuple[str, Any], ...] = (),
    collectives: wc.Collectives | None = None,
) -> tuple[torch.Tensor, torch.Tensor, Stats]:
    """A pairing form through one autograd Function, ``_FormFunction``.

    Args:
        form: the form (``FORMS``).
        inputs: its array arguments in ``form.inputs``'s order (a keyword one may be ``None``).
        state: ``beta_t``.
        config: the configuration (checked).
        options: the form's non-array keyword options, as pairs.
        collectives: the core's collectives, or ``None`` for a local loss.

    Returns:
        ``(loss, new_state, stats)``.
    """
    loss, new_state, *values = _FormFunction.apply(
        form, config, options, collectives, state, *inputs
    )
    return loss, new_state, dict(zip(STAT_KEYS, values, strict=True))


def _as_scale(scale: Any, like: torch.Tensor) -> torch.Tensor | None:
    """``scale`` as a tensor (a float becomes one on ``like``'s device), or ``None``."""
    if scale is None or isinstance(scale, torch.Tensor):
        return scale
    if isinstance(scale, (int, float)) and not isinstance(scale, bool):
        dtype = torch.promote_types(like.dtype, torch.float32) if like.is_floating_point() else None
        return torch.tensor(float(scale), dtype=dtype, device=like.device)
    raise TypeError(
        f"scale must be a 0-d tensor (logit_scale.exp()), a float or None; got "
        f"{type(scale).__name__}"
    )


@_run_eagerly
def _gathered_two_tower(
    x: torch.Tensor,
    y: torch.Tensor,
    scale: torch.Tensor | None,
    state: torch.Tensor,
    config: WEINCEConfig,
    group: dist.ProcessGroup,
    local_loss: bool,
) -> tuple[torch.Tensor, torch.Tensor, Stats]:
    """``two_tower`` over ``group``: eager (a graph break under ``torch.compile``)."""
    distributed.check_inputs(x, y, group, names=("x", "y"))
    collectives = distributed.collectives(group)
    form = FORMS["two_tower"]
    if local_loss:
        return apply_form(form, (x, y, scale), state, config, collectives=collectives)
    joined = (_GatherRows.apply(x, collectives), _GatherRows.apply(y, collectives), scale)
    return apply_form(form, joined, state, config)


class _GatherRows(torch.autograd.Function):
    """Every process's rows joined in rank order; the backward sums the gradients of the
    joined rows over the processes and returns this process's block (open_clip's
    ``gather_with_grad``). Every process computes the same loss from the joined rows, so this
    process's rows get ``world_size`` times the loss's gradient: see ``two_tower``."""

    @staticmethod
    def forward(ctx: Any, rows: torch.Tensor, collectives: wc.Collectives) -> torch.Tensor:  # type: ignore[override]
        ctx.collectives = collectives
        return collectives.gather(rows)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor | None) -> tuple[torch.Tensor | None, None]:  # type: ignore[override]
        if grad is None:
            return None, None
        return ctx.collectives.sum_scatter(grad), None


class _FormFunction(torch.autograd.Function):
    """The loss of one pairing form, local or over processes (``collectives``).

    Local, with an input that needs a gradient: the forward is the core's
    ``<form>_value_and_grad`` and keeps the gradients (the inputs' size); the backward scales
    them by the loss's upstream gradient. Without one, the forward is the core's forward-only
    form. With ``collectives`` (two-tower ``local_loss``), the forward keeps the core's
    residuals and the backward computes the gradient from them, its collectives in the
    backward pass like DDP's (see ``weince_loss``), ``world_size`` times the global loss's
    for the rows (the convention of ``weince_loss``).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        form: Form,
        config: WEINCEConfig,
        options: tuple[tuple[str, Any], ...],
        collectives: wc.Collectives | None,
        state: torch.Tensor,
        *inputs: torch.Tensor | None,
    ) -> tuple[torch.Tensor, ...]:
        needs = ctx.needs_input_grad[5:]
        wanted = [needs[form.inputs.index(name)] for name in form.differentiable]
        one_pass = collectives is None and any(wanted)
        reference = inputs[0]
        assert reference is not None
        with _without_autocast(reference):
            if one_pass:
                # In the compute dtype: scaled by the upstream gradient before rounding.
                grad_dtype = torch.promote_types(reference.dtype, torch.float32)
                loss, grads, new_state, stats = form.call(
                    form.value_and_grad(), inputs, state, config, dtype=grad_dtype, **dict(options)
                )
                ctx.save_for_backward(*grads)
            elif collectives is not None:
                forward = getattr(wc, f"{form.name}_forward")
                loss, new_state, stats, residuals = form.call(
                    forward, inputs, state, config, collectives=collectives, **dict(options)
                )
                ctx.residuals = residuals
            else:
                loss, new_state, stats = form.call(
                    form.forward_only(), inputs, state, config, **dict(options)
                )
        ctx.set_materialize_grads(False)
        ctx.form, ctx.config, ctx.collectives, ctx.one_pass = form, config, collectives, one_pass
        ctx.dtypes = [None if t is None else t.dtype for t in inputs]
        ctx.device = reference.device
        outputs = _distinct([loss, new_state, *(stats[key] for key in STAT_KEYS)])
        ctx.mark_non_differentiable(*outputs[1:])
        return tuple(outputs)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(  # type: ignore[override]
        ctx: Any, grad_loss: torch.Tensor | None, *_: Any
    ) -> tuple[torch.Tensor | None, ...]:
        form: Form = ctx.form
        needs = ctx.needs_input_grad[5:]
        result: list[torch.Tensor | None] = [None] * len(form.inputs)
        if ctx.one_pass:
            if grad_loss is None:
                return (None,) * (5 + len(form.inputs))
            grads = [grad * grad_loss for grad in ctx.saved_tensors]
        else:
            collectives = ctx.collectives
            if grad_loss is None:  # zeros, still computed: every process joins the collectives
                grad_loss = torch.zeros((), dtype=torch.float64, device=ctx.device)
            grad_loss = grad_loss * collectives.world_size
            backward = getattr(wc, f"{form.name}_backward")
            with _without_autocast(grad_loss):
                grads = list(
                    backward(
                        ctx.residuals, ctx.config, grad_output=grad_loss, collectives=collectives
                    )
                )
            if "scale" in form.differentiable:  # replicated: the global loss's own gradient
                at = form.differentiable.index("scale")
                grads[at] = grads[at] / collectives.world_size
        for name, grad in zip(form.differentiable, grads, strict=True):
            at = form.inputs.index(name)
            if needs[at]:
                result[at] = grad.to(ctx.dtypes[at])
        return (None, None, None, None, None, *result)
