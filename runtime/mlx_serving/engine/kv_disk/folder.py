"""What the block store asks of the file system and the OS, beside reading and writing
block files (block_file.py): listing a folder, moving a file's access time, and the
writer thread's priority."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path


def lowest_priority() -> None:
    """Run the calling thread at nice 19: copying, checksumming and writing blocks then
    take a core only when decode leaves one idle (about 1.5% of one under contention),
    instead of stalling the other half of a parallel matmul on a small machine. Linux
    only: there a thread id is a task that setpriority accepts; elsewhere it would name
    a process."""
    if sys.platform != "linux":
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except OSError:
        pass


def files_in(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if p.is_file()]
    except OSError:
        return []


def touch(path: Path, when: float) -> None:
    try:
        os.utime(path, (when, when))
    except OSError:
        pass  # evicted meanwhile
