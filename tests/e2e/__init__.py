"""End-to-end tests: clients talk to a real nginx (rendered from the app's settings) in front of
the real API, with real Redis, S3 and databases behind it; fixtures in tests/fixtures/nginx.py."""
