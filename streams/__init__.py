"""The Faust side of recstream: the app, its agents, the worker runtime and its web views."""

import os

# Before numpy is imported (OpenBLAS reads it once), by whichever entry point imports this package
# first (`recstream worker`, `python -m streams.worker`, `faust -A streams.app worker`): per-event
# scoring is one small mat-vec over the item matrix, which multi-threaded OpenBLAS makes 5-10x
# *slower* when its threads spin against the event loop, the encoder thread and the broker
# (9742x384: 0.9 ms on one thread, 4.5-9 ms on two, on the 2-core reference machine). The BERT
# encoder has its own torch thread pool.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
