"""core.memory: freed tensors' memory is reused (no page faults on the next allocation) and
given back on request."""
import os
import subprocess
import sys

import pytest

PROBE = r"""
import resource, torch
from brushwork.core.memory import give_back_freed_memory, keep_freed_memory
applied = keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2 ** 20
counts = []
for _ in range(12):  # 64 MiB each, over glibc's largest mmap threshold
    before = faults()
    x = torch.ones(64, 512, 512)
    counts.append(faults() - before)
    del x
held = rss_mb()
give_back_freed_memory()
print(applied, min(counts[-3:]), round(held - rss_mb()))
"""


def probe(**env):
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         env={**os.environ, **env}, timeout=120, check=True)
    applied, faults, released = out.stdout.split()
    return applied == "True", int(faults), int(released)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_memory_is_reused_then_given_back_and_system_malloc_is_left_alone():
    applied, faults, released = probe(BRUSHWORK_MALLOC="")
    assert applied and faults < 1000  # the 16384 pages came back from the heap
    assert released >= 64  # malloc_trim returned at least the freed block
    applied, faults, _ = probe(BRUSHWORK_MALLOC="system")
    assert not applied and faults > 8000  # mmapped afresh: every page faulted in again
