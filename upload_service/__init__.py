"""upload_service: a hardened upload-processing service.

The request's way through the code: ``api`` (HTTP) → ``service`` (use cases) → ``ingest``
(stream → sniff → limits → spool), ``storage``, ``db``, ``jobqueue``, ``audit`` → ``settings``
and ``errors``. Workers live in the top-level ``workers`` package.
"""
