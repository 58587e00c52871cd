# The pixgrep daemon for docker-compose.yml. The systemd extra is left out: in a container
# the compose file supervises the daemon, not systemd.
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/pixgrep
COPY pyproject.toml README.md ./
COPY daemon ./daemon
COPY cli ./cli
RUN pip install '.[postgres]'

RUN useradd --create-home --uid 10001 --user-group pixgrep
USER pixgrep
WORKDIR /home/pixgrep
VOLUME ["/home/pixgrep/.local/state/pixgrep"]

CMD ["pixgrep", "daemon"]
