"""Collectives under the alpha-beta model with ring algorithms.

Time = bytes moved per GPU / bandwidth + steps * latency. The bytes factors are nccl-tests'
bus-bandwidth factors (NVIDIA nccl-tests, doc/PERFORMANCE.md): all-reduce moves 2(n-1)/n of
the buffer per GPU, all-gather and reduce-scatter (n-1)/n of the full (gathered) buffer.
`link` is the (bandwidth, latency) pair of that collective on the group's tier
(`planner.cost.symbols.link`): a group that crosses nodes runs at the inter-node tier, and a
calibrated topology may give each collective its own measured pair.
"""

from __future__ import annotations

import sympy as sp


def all_reduce(n, nbytes, link, calls=1) -> sp.Expr:
    """Ring all-reduce of `nbytes` over n ranks in `calls` collectives: 2(n-1)/n * bytes / bw + calls * 2(n-1) * alpha."""
    bw, alpha = link
    return 2 * (n - 1) / n * nbytes / bw + calls * 2 * (n - 1) * alpha


def all_gather(n, nbytes, link, calls=1) -> sp.Expr:
    """Ring all-gather producing `nbytes` on every rank: (n-1)/n * bytes / bw + calls * (n-1) * alpha."""
    bw, alpha = link
    return (n - 1) / n * nbytes / bw + calls * (n - 1) * alpha


def reduce_scatter(n, nbytes, link, calls=1) -> sp.Expr:
    """Ring reduce-scatter of an `nbytes` input: the all-gather volume."""
    return all_gather(n, nbytes, link, calls)


def p2p(nbytes, link, calls=1) -> sp.Expr:
    """Point-to-point: bytes / bw + calls * alpha."""
    bw, alpha = link
    return nbytes / bw + calls * alpha


def all_to_all(n, nbytes, link, calls=1) -> sp.Expr:
    """All-to-all of an `nbytes` send buffer per rank over n ranks: (n-1)/n of it leaves the rank
    (nccl-tests' alltoall bus-bandwidth factor, (n-1)/n), one exchange with each of n-1 peers:
    (n-1)/n * bytes / bw + calls * (n-1) * alpha."""
    bw, alpha = link
    return (n - 1) / n * nbytes / bw + calls * (n - 1) * alpha
