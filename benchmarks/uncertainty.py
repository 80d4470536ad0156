"""Why the planes take a master's variance from the noise model, not from its samples' scatter.

Usage: python benchmarks/uncertainty.py

Stacks of unit-normal samples (200x200 pixels, truth 0) are combined as a master is
(``sigma_clip_combine``: clipped about the median, at most 10 iterations, the mean of what
is left) with the variance measured from the used samples (``variance=True``). Prints, per
threshold and number of frames, the standard deviation of (value - truth) / uncertainty for
three uncertainties: the samples' scatter as measured, the same widened for the clipping's
cut of a normal distribution, and the noise model's (1 / n_used). An honest uncertainty
gives 1. Prints a Markdown table.
"""

from __future__ import annotations

import math

import numpy as np

from ccdred.combine import sigma_clip_combine


def cut_normal_variance(sigma: float) -> float:
    """The variance of a unit normal distribution cut to [-sigma, sigma]."""
    density = math.exp(-sigma * sigma / 2) / math.sqrt(2 * math.pi)
    return 1.0 - 2 * sigma * density / math.erf(sigma / math.sqrt(2))


def main() -> None:
    rng = np.random.default_rng(0)
    print("| threshold | frames | samples' scatter | scatter, widened for the cut | noise model |\n"
          "| ---: | ---: | ---: | ---: | ---: |")
    for threshold in (2.5, 3.0):
        for n_frames in (5, 10, 16, 30, 100):
            stack = rng.standard_normal((n_frames, 200, 200)).astype(np.float32)
            result = sigma_clip_combine(stack, threshold=threshold, cenfunc="median",
                                        maxiters=10, variance=True)
            spreads = [np.nanstd(result.data / np.sqrt(variance)) for variance in (
                result.variance, result.variance / cut_normal_variance(threshold),
                1.0 / result.n_used)]
            print(f"| {threshold} | {n_frames} | " + " | ".join(f"{s:.3f}" for s in spreads) + " |")


if __name__ == "__main__":
    main()
