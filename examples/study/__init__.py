"""The pieces of ``examples/animals10_study.py``, one module per concern.

``config`` (settings, presets, command line), ``data``, ``cache`` (stage caching),
``training`` and ``evaluation`` (the stages), ``plots``, ``report`` and ``report_beyond``
(report.md), ``pipeline`` (the order of it all) and ``cli`` (the entry point).
"""
