"""Benchmarks of the upload service next to their anchors, measured in one run (``python -m bench``).

Not tests: they print figures and ratios and assert nothing. See ``bench/README.md``.
"""
