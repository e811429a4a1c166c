"""The single writer of protocol frames, over a real pipe: frames from many threads arrive
whole (never a partial line, never two interleaved), each sender's in its order and each
batch together; a reader that stops reading holds the senders back, a deadline lets them
go, a reader that is gone never blocks them."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator

import pytest

from mlx_serving.transport import FrameWriter

WAIT_S = 10


class Reader:
    """Reads the pipe on its own thread once started, until EOF."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.data = bytearray()
        self.thread = threading.Thread(target=self._read, daemon=True)

    def start(self) -> Reader:
        self.thread.start()
        return self

    def lines(self) -> list[bytes]:
        self.thread.join(WAIT_S)
        assert not self.thread.is_alive()
        assert self.data.endswith(b"\n") or not self.data
        return bytes(self.data).split(b"\n")[:-1]

    def _read(self) -> None:
        while chunk := os.read(self.fd, 1 << 16):
            self.data += chunk


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_fd, write_fd = os.pipe()
    yield read_fd, write_fd
    for fd in (read_fd, write_fd):
        try:
            os.close(fd)
        except OSError:
            pass


def frame(sender: int, seq: int, size: int) -> bytes:
    head = f"{sender}:{seq}:".encode()
    return head + b"x" * max(size - len(head), 0)


def test_frames_from_many_threads_arrive_whole_and_in_order(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    reader = Reader(read_fd).start()
    # A small queue, so that senders wait on it, write directly and queue, all mixed.
    writer = FrameWriter(write_fd, max_queued_bytes=32 * 1024, burst_bytes=8 * 1024)
    senders, per_sender = 8, 300
    batches: list[list[bytes]] = []
    lock = threading.Lock()

    def send(sender: int) -> None:
        rng = random.Random(sender)
        seq = 0
        while seq < per_sender:
            count = rng.choice([1, 1, 3])
            # Mostly small frames (a token's chunk), some beyond PIPE_BUF.
            sizes = [rng.choice([40, 120, 600, 5000]) for _ in range(count)]
            batch = [frame(sender, seq + i, size) for i, size in enumerate(sizes)]
            seq += count
            with lock:
                batches.append(batch)
            if count == 1:
                writer.send(batch[0])
            else:
                writer.send_many(batch)

    threads = [threading.Thread(target=send, args=(s,)) for s in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    writer.close(WAIT_S)
    os.close(write_fd)
    lines = reader.lines()

    sent = {f for batch in batches for f in batch}
    assert len(lines) == len(sent) and set(lines) == sent  # each line is one whole frame
    last: dict[bytes, int] = {}
    for line in lines:
        sender, seq, _ = line.split(b":", 2)
        assert last.get(sender, -1) < int(seq)  # each sender's frames in its order
        last[sender] = int(seq)
    position = {line: index for index, line in enumerate(lines)}
    for batch in batches:  # a batch arrives together
        at = [position[f] for f in batch]
        assert at == list(range(at[0], at[0] + len(batch)))


def test_a_reader_that_stops_reading_holds_the_senders_back(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    writer = FrameWriter(write_fd, max_queued_bytes=16 * 1024)
    sent = threading.Event()
    frames = [frame(0, seq, 1000) for seq in range(400)]  # well beyond pipe and queue

    def send() -> None:
        for each in frames:
            writer.send(each)
        sent.set()

    threading.Thread(target=send, daemon=True).start()
    assert not sent.wait(0.5)  # blocked: nobody reads
    assert writer.queued_bytes <= 16 * 1024
    reader = Reader(read_fd).start()
    assert sent.wait(WAIT_S)
    writer.close(WAIT_S)
    os.close(write_fd)
    assert reader.lines() == frames


def test_at_the_deadline_blocked_senders_give_up(pipe: tuple[int, int]) -> None:
    _, write_fd = pipe
    writer = FrameWriter(write_fd, max_queued_bytes=8 * 1024)
    gave_up = threading.Event()

    def send() -> None:
        for seq in range(500):
            writer.send(frame(0, seq, 1000))
        gave_up.set()

    threading.Thread(target=send, daemon=True).start()
    assert not gave_up.wait(0.3)
    started = time.monotonic()
    writer.set_deadline(0.3)
    assert gave_up.wait(WAIT_S)
    writer.close()
    assert time.monotonic() - started < 2


def test_a_batch_larger_than_the_whole_queue_still_goes_through(
    pipe: tuple[int, int],
) -> None:
    read_fd, write_fd = pipe
    reader = Reader(read_fd).start()
    writer = FrameWriter(write_fd, max_queued_bytes=1000)
    writer.send(frame(0, 0, 500))
    big = [frame(0, seq, 3000) for seq in range(1, 4)]
    writer.send_many(big)
    writer.close(WAIT_S)
    os.close(write_fd)
    assert reader.lines() == [frame(0, 0, 500), *big]


def test_an_empty_batch_writes_nothing(pipe: tuple[int, int]) -> None:
    # A step that ended nothing still emits its (empty) batch; a blank line would be a
    # frame that is not JSON.
    read_fd, write_fd = pipe
    reader = Reader(read_fd).start()
    writer = FrameWriter(write_fd, max_queued_bytes=1000)
    writer.send_many([])
    writer.send(frame(0, 0, 10))
    writer.send_many([])
    writer.close(WAIT_S)
    os.close(write_fd)
    assert reader.lines() == [frame(0, 0, 10)]


def test_a_reader_that_is_gone_never_blocks_a_sender(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    os.close(read_fd)
    writer = FrameWriter(write_fd, max_queued_bytes=8 * 1024)
    started = time.monotonic()
    for seq in range(1000):
        writer.send(frame(0, seq, 1000))
    writer.close(WAIT_S)
    assert time.monotonic() - started < 5
