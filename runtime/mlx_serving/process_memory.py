"""This process's resident and virtual memory, for runtime/info and each distributed rank's
status."""

from __future__ import annotations

import os
import sys

from .protocol.methods import MemoryInfo


def process_memory() -> MemoryInfo:
    try:
        with open("/proc/self/statm") as statm:
            vms_pages, rss_pages = (int(x) for x in statm.read().split()[:2])
        page = os.sysconf("SC_PAGE_SIZE")
        return MemoryInfo(rss=rss_pages * page, vms=vms_pages * page)
    except OSError:
        import resource

        # ru_maxrss is bytes on macOS, KiB on Linux; only macOS lacks /proc.
        usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return MemoryInfo(rss=usage if sys.platform == "darwin" else usage * 1024, vms=0)
