"""Launchers for the real local services: redis-server and a SeaweedFS S3 server.

Used by the project's local run (``make run``) and by the test fixtures alike, so tests exercise
the services the way developers run them, and can stop, kill and restart them for fault tests.
Each launcher returns a not-yet-started ``ManagedProcess`` plus the address to connect to;
nothing here starts, connects or reads the environment at import time.

- ``process``: ``ManagedProcess`` (start with readiness probe, stop, kill, restart) and
  ``free_port``.
- ``redis``: ``redis_process(workdir)`` -> ``unix://.../redis.sock``.
- ``seaweed``: ``seaweed_process(workdir, access_key, secret_key)`` -> ``http://127.0.0.1:PORT``.
"""
