# syntax=docker/dockerfile:1.7
# log_analyser as a container: the full product, the core (PDF and HTML reports included) plus the deep and llm extras.
#   docker build -t log_analyser .
#   docker run --rm -v "$PWD:/logs:ro" -v "$PWD/out:/out" log_analyser -f /logs/access.log -o /out/report.csv
# tests/test_container.py replays the install and entrypoint steps of this file in a virtual
# environment, from a clean checkout filtered by .dockerignore.

ARG PYTHON_VERSION=3.11.14

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV VIRTUAL_ENV=/opt/venv \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv "$VIRTUAL_ENV"
ENV PATH="$VIRTUAL_ENV/bin:$PATH"
WORKDIR /src
# Pinned dependencies first, in their own layer: rebuilt when a pin changes, not on every code edit.
COPY requirements.txt requirements-extras.txt ./
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install -r requirements.txt -r requirements-extras.txt
COPY . .
ARG EXTRAS=deep,llm
# The pins above already satisfy every requirement, so this adds only log_analyser itself.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install -c requirements.txt -c requirements-extras.txt ".[${EXTRAS}]" \
    && pip check \
    && touch "$VIRTUAL_ENV/.log_analyser-image"

FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
# The repository URL; the release workflow passes the real one.
ARG SOURCE=""
LABEL org.opencontainers.image.title="log_analyser" \
      org.opencontainers.image.description="Rank the clients in web server access logs by how much they look like attackers, and say why." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="MIT"
# /logs: input, mounted read-only; /out: reports (the working directory, so -o report.csv lands
# there); /data: the volume for caches, models and an optional config (the XDG directories).
ENV VIRTUAL_ENV=/opt/venv \
    PATH="/opt/venv/bin:$PATH" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/data \
    XDG_CACHE_HOME=/data/cache \
    XDG_CONFIG_HOME=/data/config \
    XDG_DATA_HOME=/data/share \
    MPLCONFIGDIR=/data/cache/matplotlib \
    KERAS_HOME=/data/keras \
    TF_CPP_MIN_LOG_LEVEL=2
# A fixed non-root user; the directories stay writable for `docker run --user "$(id -u)"` too.
RUN groupadd --system --gid 10001 analyser \
    && useradd --system --uid 10001 --gid analyser --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin analyser \
    && install -d -o analyser -g analyser -m 1777 /data /out \
    && install -d -m 0755 /logs
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
WORKDIR /out
VOLUME ["/data"]
ENTRYPOINT ["log_analyser"]
CMD ["--help"]

# The GitHub Action (action.yml) builds this file's last stage, so it comes last: the core install
# only (no TensorFlow: the step builds in a minute or two), run as root, as GitHub requires of
# container actions (they write to the workspace and $GITHUB_OUTPUT, owned by the runner's user).
# The published image is the `runtime` stage above: docker build --target runtime -t log_analyser .
FROM python:${PYTHON_VERSION}-slim-bookworm AS action
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp/matplotlib
COPY requirements.txt /opt/log_analyser/
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install -r /opt/log_analyser/requirements.txt
COPY . /opt/log_analyser/
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install -c /opt/log_analyser/requirements.txt /opt/log_analyser \
    && pip check \
    && touch /usr/local/.log_analyser-image
ENTRYPOINT ["python", "-m", "log_analyser_core.cli.action"]
