"""Bridges from the runtime to native code that is optional at install time.

Nothing here imports mlx: ``blas.preload_optimized_blas`` must run before ``mlx.core`` is.
"""
