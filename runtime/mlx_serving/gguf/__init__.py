"""Import llama-family GGUF files (llama.cpp's format) as mlx-lm model directories.

    from mlx_serving.gguf import cached_import
    model_dir = cached_import(Path("SmolLM2-135M-Instruct.Q4_1.gguf"), cache_root)
    model, tokenizer = mlx_lm.load(str(model_dir))

Q4_0/Q4_1/Q8_0 weights stay quantized (MLX affine, group size 32, bit for bit); the
tokenizer is rebuilt from the GGUF metadata so token ids match llama.cpp's.
"""

from __future__ import annotations

from .architectures import SUPPORTED_ARCHITECTURES
from .cache import cached_import
from .convert import import_gguf
from .errors import GGUFImportError

__all__ = ["SUPPORTED_ARCHITECTURES", "GGUFImportError", "cached_import", "import_gguf"]
