"""runtime/state's restart_count is what the supervising client says it is, not always 0."""

from __future__ import annotations

import pytest

from mlx_serving.testing.client import RuntimeClient


@pytest.mark.parametrize(("value", "expected"), [("3", 3), ("", 0), ("many", 0), ("-2", 0)])
def test_restart_count_comes_from_the_supervisor(value: str, expected: int) -> None:
    with RuntimeClient(env={"MLX_SERVING_RESTART_COUNT": value}) as client:
        assert client.call("runtime/state")["restart_count"] == expected
