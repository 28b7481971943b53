"""The garbage collector's thresholds for a process that holds tens of thousands of objects.

CPython frees almost everything by reference counting; its cycle collector runs besides, by
counts: a young collection once 700 more container objects were allocated than freed, and a
full one over the whole heap once enough objects have survived into the oldest generation.
A batch of reconciles keeps thousands of objects alive at once (each snapshot's rows, plans,
statuses) across its database round trips, so with the default threshold young collections
ran mid-batch about 11 times a second at rest, promoted the batch's objects to the older
generations, where they died soon after, and so brought on full collections over the whole
heap: two a minute, 0.44 s each, with 20,000 objects. That was 18 % of the operator's CPU at
rest and 29 % of a restart's (docs/design/performance.md, issue 15 item 5). Go's collector,
which controller-runtime operators run on, is paced by heap growth (GOGC), not by counts.
"""

from __future__ import annotations

import gc

# Young collections wait for this many more allocations than frees: more than a batch keeps
# alive at once, so that a batch's objects are freed by reference counting before any
# collection sees them. What the collector then finds is only cyclic garbage, which at rest
# (the count grew by about 130 a second with 20,000 objects) it collects every six minutes or
# so. Cyclic garbage waits that much longer to be freed: at most this many objects, megabytes.
YOUNG_THRESHOLD = 50_000


def tune_collector() -> None:
    """Raise the young generation's threshold; the older generations' stay CPython's."""
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, oldest)
