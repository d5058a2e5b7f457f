# One image for every part; docker-compose.yml picks the command per service.

# Build stage: the runtime dependencies, pinned by requirements.lock, in a venv.
FROM python:3.11-slim AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY pyproject.toml requirements.lock ./
# Only the [project] dependencies (no dev tools), each resolved to its pin in the lock;
# --only-binary keeps compilers out of both stages.
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
 && pip install --only-binary=:all: -c requirements.lock -r requirements.txt

# Final stage: the venv and the code, nothing else.
FROM python:3.11-slim

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TASKS_HOST=127.0.0.1

# Loopback by default: a process reached directly has no gateway in front of it. Compose sets
# TASKS_HOST=0.0.0.0 on private networks that only the gateway (the public edge) shares.
# /var/lib/tasks-broker is where `broker-init` writes the broker's definitions (a named volume
# takes this directory's owner).
RUN groupadd --system --gid 10001 tasks \
 && useradd --system --uid 10001 --gid tasks --no-create-home --shell /usr/sbin/nologin tasks \
 && mkdir -p /var/lib/tasks-broker && chown tasks:tasks /var/lib/tasks-broker

COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY cli.py composition.py ./
COPY shared ./shared
COPY command_service ./command_service
COPY projector ./projector
COPY query_service ./query_service

USER tasks:tasks
EXPOSE 8000 8001 8002 8003
# Single-process mode by default; compose overrides this for the split services.
CMD ["python", "cli.py", "serve"]
