"""``weince crosscheck --form``: the pairing forms (docs/math.md section 9) on every backend,
against the NumPy float64 core.

``weince crosscheck --form two_tower|explicit_negatives|multi_positive|two_view|all`` runs here
for every form but the two-view one (which ``weince.cli.crosscheck`` runs as before): the seeded
cases of ``weince_core.testing.form_cases``, each backend running them through its framework's
adapter where there is one, or the core otherwise (``weince.testing.run_case``), compared with the
crosscheck's tolerances, rows and table, each gradient on its own.
"""

from __future__ import annotations

import argparse
from typing import Any

from weince import testing
from weince.cli import crosscheck as cc
from weince.cli.args import choice_list
from weince.cli.output import track, write_json
from weince.testing import Backend, Row, form_row, last_step
from weince_core import WEINCEConfig
from weince_core.testing import DTYPES, FORMS, FormCase, form_cases, form_reference, form_shortfall


def reference_row(case: FormCase, preset: str) -> Row:
    """The reference's own row (NumPy float64) of a form's case and preset.

    Args:
        case: the form and its inputs.
        preset: the preset's name.

    Returns:
        The row.
    """
    row = form_row(case, preset, "numpy", "cpu", "float64", "reference")
    last_step(row, form_reference(case, WEINCEConfig.preset(preset)))
    row.delta = form_shortfall(case)
    return row


# -- the --form option of weince crosscheck --------------------------------------------------


def add_form_argument(parser: argparse.ArgumentParser) -> None:
    """``--form``: which pairing forms ``weince crosscheck`` compares.

    Args:
        parser: the command's parser, to which the options are added.
    """
    parser.add_argument(
        "--form",
        type=choice_list("form", FORMS),
        action="append",
        metavar="FORM[,FORM...]",
        help=f"pairing forms (docs/math.md section 9): {', '.join(FORMS)} or all (default: "
        "two_view); the forms other than two_view run on generated inputs, 64 rows unless "
        "--sizes says otherwise",
    )


def _describe(job: tuple[FormCase, str, str, Backend]) -> str:
    case, preset, dtype, backend = job
    return f"{backend.id} {dtype} {preset} {case.form}, {case.name}"


def selected_forms(args: argparse.Namespace) -> list[str]:
    """The forms ``--form`` selects (``two_view`` by default).

    Args:
        args: the parsed options of the command.

    Returns:
        Their names, each once.
    """
    return cc._flat(getattr(args, "form", None), ["two_view"])


def run(args: argparse.Namespace) -> int:
    """``weince crosscheck --form ...``: every selected form; 0 if all agree, 1 if any does not,
    2 on bad input. The two-view form runs through ``weince.cli.crosscheck`` as before.

    Args:
        args: the parsed options of the command.

    Returns:
        The exit status.
    """
    forms = selected_forms(args)
    others = [form for form in forms if form != "two_view"]
    if args.input is not None:
        cc.usage_error(
            "--input: only for --form two_view (the forms' inputs are generated); "
            f"got --form {','.join(forms)}"
        )
        return 2
    try:
        backends, skipped = cc._select_backends(cc._flat(args.backends, None))
    except cc.UsageError as error:
        cc.usage_error(str(error))
        return 2
    dtypes = cc._flat(args.dtype, list(DTYPES))
    presets = cc._flat(args.preset, ["paper"])
    steps, d = args.steps or 3, args.dim or 64
    sizes = cc._flat(args.sizes, [64])
    jobs = [
        (case, preset, dtype, backend)
        for form in others
        for n in sizes
        for case in form_cases(form, n, d, steps, args.seed)
        for preset in presets
        for dtype in dtypes
        for backend in backends
        if cc.compared(backend, dtype)
    ]
    if not jobs:
        cc.usage_error(f"--dtype: no selected backend has {', '.join(dtypes)}")
        return 2
    report: dict[str, Any] = {"forms": {}}
    code = 0
    if "two_view" in forms:
        code, report["forms"]["two_view"] = cc.run_two_view(args)
        if code == 2:
            return 2
    progress = track(jobs, "crosscheck", enabled=not args.no_progress, label=_describe)
    with cc.jax_float64(any(b.module == "jax" for b in backends)):
        rows = [
            testing.run_case(backend, case, preset, dtype, args.path)
            for case, preset, dtype, backend in progress
        ]
    references = [
        reference_row(case, preset)
        for form in others
        for n in sizes
        for case in form_cases(form, n, d, steps, args.seed)
        for preset in presets
    ]
    print(cc.format_table(rows, references))
    for b in skipped:
        print(f"skipped {b.id}: {b.skip_reason}")
    passed = all(r.passed for r in rows)
    if args.json is not None:
        for form in others:
            mine = [r for r in rows if r.case.startswith(f"{form}, ")]
            report["forms"][form] = {
                "passed": all(r.passed for r in mine),
                "rows": [r.as_dict() for r in mine],
            }
        report["passed"] = passed and code == 0
        write_json(args.json, report)
    return 1 if code == 1 or not passed else 0
