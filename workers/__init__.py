"""RQ workers: thin jobs that load an upload, run its processing pipeline and store the results.

The pipelines themselves (``workers.pipelines``) are pure code over local files: no S3, Redis
or database.
"""
