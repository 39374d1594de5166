# The fulfilment service's image: one image for `migrate`, `web` and `worker`
# (see docker-compose.yml). Configuration comes from the environment (CONTRACT §2).
#
# Static files: collected at build (below) and served by WhiteNoise from the web
# process, since gunicorn serves none.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# An unprivileged user owns and runs the app.
RUN groupadd --system app \
    && useradd --system --gid app --home-dir /app --shell /usr/sbin/nologin app \
    && chown app:app /app

# Dependencies first, so a code change does not reinstall them.
COPY requirements.txt /app/requirements.txt
RUN pip install --no-cache-dir -r /app/requirements.txt

COPY --chown=app:app . /app

USER app

# The console's CSS and JS, hashed and compressed, where WhiteNoise serves them
# (STATIC_ROOT, /app/.data/static). With DEBUG off the settings insist on secrets;
# these placeholders exist only for this step, never in the image's environment.
RUN DJANGO_DEBUG=0 \
    DJANGO_SECRET_KEY=collectstatic-build-only \
    STRIPE_WEBHOOK_SECRET=collectstatic-build-only \
    FULFILMENT_API_TOKEN=collectstatic-build-only \
    python manage.py collectstatic --noinput --verbosity 0

EXPOSE 8000

# 3 sync workers suit a 2-core host; a bigger one can raise --workers in its own
# `command:`. Access and error logs go to stdout/stderr (`docker compose logs`).
CMD ["gunicorn", "kcproject.wsgi:application", \
     "--bind", "0.0.0.0:8000", \
     "--workers", "3", \
     "--timeout", "30", \
     "--graceful-timeout", "20", \
     "--access-logfile", "-", \
     "--error-logfile", "-"]
