"""Inflection points between splitting regimes: closed-form crossings, memory boundaries, regime maps."""
