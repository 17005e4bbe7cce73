# The upload service's image: the API by default; the same image runs workers, migrations and
# the nginx config renderer (see docker-compose.yml).
FROM python:3.11-slim

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
COPY pyproject.toml README.md ./
COPY upload_service ./upload_service
COPY workers ./workers
# The one nginx template ships inside the package (pyproject's package-data takes
# upload_service/nginx/*.j2), so `upload-service nginx-config` works from the installed wheel.
COPY nginx/nginx.conf.j2 ./upload_service/nginx/nginx.conf.j2
RUN pip install . \
 && upload-service nginx-config > /dev/null \
 && cd / && rm -rf /src

# Owned by the app user so named volumes mounted here start out writable by it.
RUN install -d -o app -g app -m 0700 /var/lib/upload-service /var/lib/upload-service/spool \
 && install -d -o app -g app -m 0755 /etc/upload-service /etc/upload-service/nginx

USER app
WORKDIR /var/lib/upload-service
ENV UPLOAD_SPOOL__DIR=/var/lib/upload-service/spool
EXPOSE 8080
CMD ["upload-service", "serve", "--host", "0.0.0.0"]
