"""Every sympy symbol of the cost model, declared once.

Per model (teacher `T`, student `S`) a `ModelSymbols` set; then the workload, the cluster and
the strategy (degrees and 0/1 switches). All symbols are positive or non-negative reals so that
sympy can simplify and solve; integer-ness is enforced by the search, not by sympy.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import sympy as sp


def _pos(name: str, desc: str) -> sp.Symbol:
    s = sp.Symbol(name, positive=True)
    DESCRIPTIONS[name] = desc
    return s


def _nonneg(name: str, desc: str) -> sp.Symbol:
    s = sp.Symbol(name, nonnegative=True)
    DESCRIPTIONS[name] = desc
    return s


DESCRIPTIONS: dict[str, str] = {}


@dataclass(frozen=True)
class ModelSymbols:
    """Shape symbols of one transformer; booleans are 0/1 symbols."""

    L: sp.Symbol
    h: sp.Symbol
    a: sp.Symbol
    g: sp.Symbol
    d: sp.Symbol
    f: sp.Symbol
    V: sp.Symbol
    untied: sp.Symbol
    gated: sp.Symbol
    qkv_bias: sp.Symbol
    o_bias: sp.Symbol
    mlp_bias: sp.Symbol
    norms: sp.Symbol
    norm_bias: sp.Symbol

    @classmethod
    def make(cls, tag: str, who: str) -> "ModelSymbols":
        return cls(
            L=_pos(f"L_{tag}", f"{who} layers"),
            h=_pos(f"h_{tag}", f"{who} hidden size"),
            a=_pos(f"a_{tag}", f"{who} attention heads"),
            g=_pos(f"g_{tag}", f"{who} key/value heads"),
            d=_pos(f"d_{tag}", f"{who} head dim"),
            f=_pos(f"f_{tag}", f"{who} MLP inner width"),
            V=_pos(f"V_{tag}", f"{who} vocabulary"),
            untied=_nonneg(f"untied_{tag}", f"{who}: 1 if the LM head is a separate matrix"),
            gated=_nonneg(f"gated_{tag}", f"{who}: 1 for a gated (3-matrix) MLP"),
            qkv_bias=_nonneg(f"qkvb_{tag}", f"{who}: 1 if q, k, v carry biases"),
            o_bias=_nonneg(f"ob_{tag}", f"{who}: 1 if the attention output carries a bias"),
            mlp_bias=_nonneg(f"mlpb_{tag}", f"{who}: 1 if the MLP carries biases"),
            norms=_nonneg(f"nrm_{tag}", f"{who} norm vectors per layer"),
            norm_bias=_nonneg(f"nrmb_{tag}", f"{who}: 1 if norms carry a bias"),
        )

    def values(self, shape) -> dict[sp.Symbol, int]:
        """Numbers for these symbols from a `ModelShape`."""
        v = {
            "L": shape.num_layers, "h": shape.hidden, "a": shape.num_heads, "g": shape.kv_heads,
            "d": shape.head_width, "f": shape.ffn, "V": shape.vocab, "untied": int(not shape.tied_embeddings),
            "gated": int(shape.gated_mlp), "qkv_bias": int(shape.qkv_bias), "o_bias": int(shape.o_bias),
            "mlp_bias": int(shape.mlp_bias), "norms": shape.norms_per_layer, "norm_bias": int(shape.norm_bias),
        }
        return {getattr(self, f.name): v[f.name] for f in fields(self)}


T = ModelSymbols.make("T", "teacher")
S = ModelSymbols.make("S", "student")
