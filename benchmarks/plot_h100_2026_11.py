"""Plot the H100 figures of docs/performance.md (docs/assets/bench-h100.png).

The numbers below are typed from the table on that page: `weince bench --devices cuda` on an
NVIDIA H100 80GB in November 2026 (torch 2.11 + CUDA 13, jax 0.11.2, cupy-cuda13x 14.2),
forward + backward, fp32, d = 128. Each is a median time divided by the median time of the same
framework's minimal InfoNCE (the floor), measured in the same process. No JSON of that run was
kept, so this is not `weince bench --plot`; rerun the benchmark on a GPU for fresh figures.

    .venv/bin/python benchmarks/plot_h100_2026_11.py [PATH]
"""

from __future__ import annotations

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

SIZES = (512, 2048, 8192)
RATIOS = {  # method: ratio to the same framework's floor at each 2N
    "PyTorch infonce": (2.16, 2.13, 1.42),
    "PyTorch blend": (3.55, 3.71, 3.27),
    "PyTorch paper": (5.18, 5.43, 3.97),
    "JAX paper (before 8d7fe94)": (1.74, 2.50, 3.45),
    "CuPy paper (vs CuPy's floor)": (14.7, 15.8, 20.8),
}
STYLES = {"PyTorch": ("tab:red", "-"), "JAX": ("tab:blue", "--"), "CuPy": ("tab:green", ":")}
GOALS = {  # goal lines: the CuPy goal is against PyTorch's floor, so it is not drawn
    "goal: JAX paper (2.0x)": (2.0, "--"),
    "goal: PyTorch paper at 8192 (1.5x)": (1.5, "-"),
    "goal: infonce (1.1x)": (1.1, ":"),
}


def main(path: str = "docs/assets/bench-h100.png") -> None:
    figure, axes = plt.subplots(figsize=(9.5, 4.8))
    for name, ratios in RATIOS.items():
        color, style = STYLES[name.split()[0]]
        marker = {"infonce": "s", "blend": "^"}.get(name.split()[1], "o")
        axes.plot(SIZES, ratios, marker=marker, linestyle=style, color=color, label=name)
    for name, (goal, style) in GOALS.items():
        axes.axhline(goal, color="grey", linewidth=0.8, linestyle=style, label=name)
    axes.axhline(1.0, color="black", linewidth=1.0, label="floor (minimal InfoNCE)")
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xticks(SIZES, [str(s) for s in SIZES])
    axes.set_xlabel("2N (batch of both views)")
    axes.set_ylabel("time / same framework's floor")
    axes.set_title(
        "NVIDIA H100 80GB, fp32, d = 128, forward + backward (measured 2026-11)", fontsize=10
    )
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    main(*sys.argv[1:2])
