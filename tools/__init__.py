"""Development and operations tooling, run from the repository root as
``python -m tools.<module>`` (the Makefile does): ``devdb``, the embedded PostgreSQL
used when DATABASE_URL is unset; ``run``, the whole service in one terminal;
``stack``, the production-shaped service that ``chaos`` (the pipeline under fire)
and ``benchmark`` (its speed) drive; ``bench``, the benchmark's Django app.

The service never imports this package: the settings install ``tools.bench`` only
under FULFILMENT_BENCH=1, which the benchmark sets for its own processes. This
file imports nothing, so that ``devdb`` keeps needing only the standard library
(it may run under a Python outside .venv).
"""
