# log_analyser as a container. Two variants from this one file (plain Dockerfile syntax: no frontend
# image is pulled, so any builder works, BuildKit, the legacy builder or buildah/podman):
#   docker build --target runtime -t log_analyser .                                 core (PDF, HTML) + llm
#   docker build --target runtime --build-arg VARIANT=full -t log_analyser:full .   adds deep, for `train`
# (the last stage, `action`, is the GitHub Action's: GitHub builds the last stage and runs it as root).
# Run it as yourself, so that reports in the bind-mounted folder belong to you:
#   mkdir -p out && docker run --rm --user "$(id -u):$(id -g)" -v "$PWD:/logs:ro" -v "$PWD/out:/out" \
#       log_analyser -f /logs/access.log -o report.csv
# tests/test_container.py replays the install and entrypoint steps of this file in a virtual
# environment, from a clean checkout filtered by .dockerignore; tests/test_container_run.py builds
# the image with podman and runs the README's commands against it.

ARG PYTHON_VERSION=3.11.14

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV VIRTUAL_ENV=/opt/venv \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv "$VIRTUAL_ENV"
ENV PATH="$VIRTUAL_ENV/bin:$PATH"
WORKDIR /src
# default: core (PDF and HTML included) + llm, which score saved baselines (an autoencoder too) with NumPy;
# full: also the deep extra (Keras, TensorFlow: about 1.3 GB) that `log_analyser train` needs for
# the autoencoder.
ARG VARIANT=default
# Pinned dependencies first, in their own layer: rebuilt when a pin changes, not on every code edit.
COPY requirements.txt requirements-extras.txt requirements-deep.txt ./
RUN pip install --no-cache-dir -r requirements.txt -r requirements-extras.txt \
    && if [ "$VARIANT" = full ]; then pip install --no-cache-dir -r requirements-deep.txt; fi
COPY . .
# The pins above already satisfy every requirement, so this adds only log_analyser itself.
RUN extras=llm && if [ "$VARIANT" = full ]; then extras=deep,llm; fi \
    && pip install --no-cache-dir -c requirements.txt -c requirements-extras.txt -c requirements-deep.txt \
       ".[${extras}]" \
    && pip check \
    && touch "$VIRTUAL_ENV/.log_analyser-image"
# The OWASP Core Rule Set (not shipped with the project): a pinned release fetched and checked
# against its SHA-256 by `log_analyser rules update --crs`, installed system-wide for every user
# of the image. Without a pinned digest nothing is fetched and runs say there is no CRS (see
# "The Core Rule Set in the image" in the README). CRS_URL may be a template with {version}; a
# test serves a tarball on 127.0.0.1 through it. CRS_VERSION=none: no CRS.
ARG CRS_VERSION=4.28.0
ARG CRS_SHA256=""
ARG CRS_URL="https://github.com/coreruleset/coreruleset/releases/download/v{version}/coreruleset-{version}-minimal.tar.gz"
ENV CRS_SHARE=/opt/crs-share
RUN mkdir -p "$CRS_SHARE/log_analyser/crs" \
    && if [ "$CRS_VERSION" = none ] || [ -z "$CRS_SHA256" ]; then \
         echo "CRS not fetched: give --build-arg CRS_SHA256=<digest of the CRS ${CRS_VERSION} archive>"; \
       else \
         XDG_DATA_HOME="$CRS_SHARE" log_analyser rules update --crs "$CRS_VERSION" --url "$CRS_URL" \
           --sha256 "$CRS_SHA256"; \
       fi

FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
ARG VARIANT=default
ARG VERSION=0.1.0
ARG REVISION=unknown
# The repository URL; the release workflow passes the real one.
ARG SOURCE=""
LABEL org.opencontainers.image.title="log_analyser" \
      org.opencontainers.image.description="Rank the clients in web server access logs by how much they look like attackers, and say why." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.variant="${VARIANT}"
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
    XDG_DATA_DIRS=/opt/crs-share:/usr/local/share:/usr/share \
    MPLCONFIGDIR=/data/cache/matplotlib \
    KERAS_HOME=/data/keras \
    TF_CPP_MIN_LOG_LEVEL=2
# A fixed non-root user by default; run with `--user "$(id -u):$(id -g)"` (the documented way, and
# compose's `user:`) so that files in /out belong to whoever ran it. /data and /out are writable by
# any uid (mode 1777), so a named volume created from /data is too.
RUN groupadd --system --gid 10001 analyser \
    && useradd --system --uid 10001 --gid analyser --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin analyser \
    && install -d -o analyser -g analyser -m 1777 /data /out \
    && install -d -m 0755 /logs
COPY --from=build /opt/venv /opt/venv
# the CRS the build fetched (if any), in a system data dir: every user's runs find it
COPY --from=build /opt/crs-share /opt/crs-share
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
RUN pip install --no-cache-dir -r /opt/log_analyser/requirements.txt
COPY . /opt/log_analyser/
RUN pip install --no-cache-dir -c /opt/log_analyser/requirements.txt /opt/log_analyser \
    && pip check \
    && touch /usr/local/.log_analyser-image
ENTRYPOINT ["python", "-m", "log_analyser_core.cli.action"]
