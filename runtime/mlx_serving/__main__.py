"""Entry point for `python -m mlx_serving` and for compat clients that spawn this file by
path (`python .../mlx_serving/__main__.py`), where there is no package context."""

import os
import sys

if not __package__:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mlx_serving.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
