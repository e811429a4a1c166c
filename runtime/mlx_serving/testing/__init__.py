"""Builders of small local models for tests, the demo and benchmarks (no network needed)."""

from .make_model import ARCHITECTURES, make_model

__all__ = ["ARCHITECTURES", "make_model"]
