"""Run under `torchrun --nproc_per_node 2` by tests/test_distributed.py (not a test itself).

Process 1 stops answering (it sleeps); process 0 waits in a barrier, which must fail after
the group's timeout (RLHFX_TIMEOUT_S) with rlhfx's one-line message, not hang.
"""

from __future__ import annotations

import sys
import time

from rlhfx import distributed

distributed.init()
if distributed.rank() == 1:
    time.sleep(60)
    sys.exit(0)
start = time.time()
try:
    distributed.barrier()
except Exception as exc:
    lost = distributed.lost_contact(exc)
    print(f"after {time.time() - start:.1f} s: {lost}", flush=True)
    sys.exit(3)
print("the barrier returned", flush=True)
