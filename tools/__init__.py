"""Development and operations tooling, run from the repository root as
``python -m tools.<module>`` (the Makefile does): ``devdb``, the embedded PostgreSQL
used when DATABASE_URL is unset; ``run``, the whole service in one terminal;
``stack``, the production-shaped service that ``chaos`` (the pipeline under fire)
and ``benchmark`` (its speed) drive.

The service never imports this package. This file imports nothing, so that
``devdb`` keeps needing only the standard library (it may run under a Python
outside .venv).
"""
