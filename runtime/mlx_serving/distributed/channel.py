"""Messages between the ranks over `mx.distributed` collectives, no transport of our own.

A broadcast from rank 0 is an all_sum of a fixed-size uint8 frame (rank 0 contributes
the bytes, the others zeros) whose first 4 bytes give the message's length; a message
longer than the frame takes a second all_sum for the rest. A gather is an all_gather of
one fixed-size record per rank. Every rank calls the same methods in the same order, on
mlx-lm's generation stream, the stream the batch steps' own collectives run on: the
collectives of a step still in flight and of the next message cannot overtake each other.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
from mlx_lm.generate import generation_stream

FRAME_BYTES = 1024
RECORD_BYTES = 512
_LENGTH = 4


class Channel:
    def __init__(self, group: mx.distributed.Group) -> None:
        self.group = group
        self.rank = group.rank()
        self.size = group.size()

    def broadcast(self, message: bytes | None = None) -> bytes:
        """Rank 0 passes the message, the others None; every rank returns it."""
        if self.rank == 0:
            assert message is not None
            head = np.zeros(FRAME_BYTES, dtype=np.uint8)
            head[:_LENGTH] = np.frombuffer(len(message).to_bytes(_LENGTH, "little"), np.uint8)
            first = message[: FRAME_BYTES - _LENGTH]
            head[_LENGTH : _LENGTH + len(first)] = np.frombuffer(first, np.uint8)
            self._all_sum(head)
            rest = message[len(first) :]
            if rest:
                self._all_sum(np.frombuffer(rest, np.uint8))
            return message
        head = self._all_sum(np.zeros(FRAME_BYTES, dtype=np.uint8))
        length = int.from_bytes(head[:_LENGTH].tobytes(), "little")
        received = head[_LENGTH : _LENGTH + min(length, FRAME_BYTES - _LENGTH)].tobytes()
        if length > len(received):
            received += self._all_sum(np.zeros(length - len(received), np.uint8)).tobytes()
        return received

    def gather(self, record: bytes) -> list[bytes]:
        """Every rank's record (at most RECORD_BYTES - 2 bytes), in rank order."""
        if len(record) > RECORD_BYTES - 2:
            raise ValueError(f"record of {len(record)} bytes exceeds {RECORD_BYTES - 2}")
        padded = np.zeros(RECORD_BYTES, dtype=np.uint8)
        padded[:2] = np.frombuffer(len(record).to_bytes(2, "little"), np.uint8)
        padded[2 : 2 + len(record)] = np.frombuffer(record, np.uint8)
        with mx.stream(generation_stream):
            gathered = mx.distributed.all_gather(mx.array(padded), group=self.group)
        rows = np.array(gathered).reshape(self.size, RECORD_BYTES)
        return [row[2 : 2 + int.from_bytes(row[:2].tobytes(), "little")].tobytes() for row in rows]

    def barrier(self) -> None:
        self._all_sum(np.zeros(1, dtype=np.uint8))

    def _all_sum(self, data: np.ndarray) -> np.ndarray:
        with mx.stream(generation_stream):
            summed = mx.distributed.all_sum(mx.array(data), group=self.group)
        return np.array(summed)
