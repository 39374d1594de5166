"""What operators and monitors read about the running service: the health
checks behind ``/healthz`` and ``manage.py doctor``, and ``/metrics``."""
