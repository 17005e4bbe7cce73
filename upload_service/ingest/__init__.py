"""Ingest: the framework-free path from body bytes to an accepted spool file.

stream (count + hash + sniff + write in one loop) → sniff (magic bytes vs declared type and
extension) → limits → spool (temp file, fsync, atomic commit). multipart feeds file parts of a
multipart body into the same loop. Nothing here knows HTTP frameworks, the DB or S3.
"""
