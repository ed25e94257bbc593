# syntax=docker/dockerfile:1
# One image for the API (`atelier serve`, the default command) and the worker
# (`atelier worker`, set as the command of the worker pool or service).

FROM python:3.11-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

# A venv is one directory to copy into the runtime stage, with console scripts that already
# point at the right interpreter.
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /app
# requirements.txt alone first: the slow dependency layer is reused until the pins change.
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt

# backend/core/migrations.py finds alembic.ini and migrations/ two levels above its own file,
# so the code must run from this tree, not from a copy in site-packages: an editable install
# at the path the runtime stage uses gives the `atelier` script without moving the package.
COPY pyproject.toml README.md alembic.ini ./
COPY migrations ./migrations
COPY backend ./backend
# Every runtime dependency is already pinned above; --no-deps keeps this layer to our own code.
RUN pip install --no-cache-dir --no-deps -e . \
    && rm -rf build ./*.egg-info


FROM python:3.11-slim AS runtime

# opencv-data ships the Haar cascades the local AI provider reads from
# /usr/share/opencv4/haarcascades; the pip OpenCV wheel does not include that path.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends opencv-data \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 atelier \
    && useradd --system --uid 10001 --gid atelier --home-dir /app --shell /usr/sbin/nologin atelier

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ATELIER_ENV=prod \
    PORT=8080

COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app /app
WORKDIR /app

# Numeric, so platforms that check runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
EXPOSE 8080

# Cloud Run's front end appends the real client to X-Forwarded-For: the app takes the client
# from the right, one hop (entries further left are written by the client and ignored).
ENV ATELIER_TRUSTED_PROXY_HOPS=1
# Exec form: uvicorn is PID 1 and receives Cloud Run's SIGTERM directly. The port comes from
# PORT through the settings.
CMD ["atelier", "serve", "--host", "0.0.0.0"]
