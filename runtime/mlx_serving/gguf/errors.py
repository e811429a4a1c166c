"""The one exception the GGUF importer raises for anything wrong with its input."""

from __future__ import annotations


class GGUFImportError(Exception):
    """A GGUF file cannot be turned into an mlx-lm model directory.

    The message names the file and says what is wrong with it (not a GGUF file, truncated,
    an architecture or tokenizer this importer does not map) so a caller can show it as is.
    """
