"""mlx-serving: an MLX model runtime driven over JSON-RPC 2.0 on stdio."""

__version__ = "0.1.0"
