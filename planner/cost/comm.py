"""Collectives under the alpha-beta model with ring algorithms.

Time = bytes moved per GPU / bandwidth + steps * latency. The bytes factors are nccl-tests'
bus-bandwidth factors (NVIDIA nccl-tests, doc/PERFORMANCE.md): all-reduce moves 2(n-1)/n of
the buffer per GPU, all-gather and reduce-scatter (n-1)/n of the full (gathered) buffer.
`bw` is what one GPU gets on the tier its group spans (the tier's `bytes_per_s`); a group that
crosses nodes runs at the inter-node tier.
"""

from __future__ import annotations

import sympy as sp


def all_reduce(n, nbytes, bw, alpha) -> sp.Expr:
    """Ring all-reduce of `nbytes` over n ranks: 2(n-1)/n * bytes / bw + 2(n-1) * alpha."""
    return 2 * (n - 1) / n * nbytes / bw + 2 * (n - 1) * alpha


def all_gather(n, nbytes, bw, alpha) -> sp.Expr:
    """Ring all-gather producing `nbytes` on every rank: (n-1)/n * bytes / bw + (n-1) * alpha."""
    return (n - 1) / n * nbytes / bw + (n - 1) * alpha


def reduce_scatter(n, nbytes, bw, alpha) -> sp.Expr:
    """Ring reduce-scatter of an `nbytes` input: same volume as all-gather."""
    return all_gather(n, nbytes, bw, alpha)


def p2p(nbytes, bw, alpha) -> sp.Expr:
    """One point-to-point send: bytes / bw + alpha."""
    return nbytes / bw + alpha
