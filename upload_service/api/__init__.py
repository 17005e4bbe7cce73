"""The HTTP layer: routers, dependencies, schemas, exception handlers and ASGI middleware.

FastAPI stays here and in ``app.py``; everything below speaks plain Python.
"""
