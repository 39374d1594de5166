"""The benchmark's own tasks: procrastinate's ceiling on this machine, measured
with the service's worker settings. Installed only when FULFILMENT_BENCH=1
(tools/benchmark.py sets it); never part of the running service."""
