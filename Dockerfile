# The upload service's image: the API by default; the same image runs workers, migrations and
# the nginx config renderer (see docker-compose.yml). Production dependencies only, installed
# from the hash-pinned lock file (requirements.lock): no dev or test tools, no local S3 server.
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# python-magic needs the system libmagic; nothing else comes from apt.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libmagic1 \
 && rm -rf /var/lib/apt/lists/*

RUN groupadd --system app \
 && useradd --system --gid app --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin app

WORKDIR /src
# Dependencies first (their layer survives code changes), exactly as locked, hashes checked.
COPY requirements.lock ./
RUN pip install --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY upload_service ./upload_service
COPY workers ./workers
# The one nginx template ships inside the package (pyproject's package-data takes
# upload_service/nginx/*.j2), so `upload-service nginx-config` works from the installed wheel.
COPY nginx/nginx.conf.j2 ./upload_service/nginx/nginx.conf.j2
# --no-deps: everything the project needs came from the lock above; a dependency missing from
# it fails the import check below instead of being fetched unpinned.
RUN pip install --no-deps . \
 && python -c "import upload_service.app, workers.entry" \
 && upload-service nginx-config > /dev/null \
 && ! command -v weed \
 && cd / && rm -rf /src

# Owned by the app user so named volumes mounted here start out writable by it.
RUN install -d -o app -g app -m 0700 /var/lib/upload-service /var/lib/upload-service/spool \
      /var/lib/upload-service/journal \
 && install -d -o app -g app -m 0755 /etc/upload-service /etc/upload-service/nginx

USER app
WORKDIR /var/lib/upload-service
# serve listens where ServerSettings.port says (8081); compose and the healthcheck agree
# (tests/unit/test_compose.py).
ENV UPLOAD_SPOOL__DIR=/var/lib/upload-service/spool \
    UPLOAD_AUDIT__JOURNAL_PATH=/var/lib/upload-service/journal/audit-journal.jsonl \
    UPLOAD_SERVER__HOST=0.0.0.0 \
    UPLOAD_SERVER__PORT=8081
EXPOSE 8081
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=6 \
  CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8081/livez', timeout=3)"]
CMD ["upload-service", "serve"]
