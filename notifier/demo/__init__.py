"""``notifier demo``: one cycle against a captured day of arXiv, offline, into a folder of its own.

:mod:`notifier.demo.stand_in` serves the day bundled in ``data/`` (real papers; see ``data/SOURCES.md``) like
rss.arxiv.org and the export API; :mod:`notifier.demo.run` runs one cycle of the real notifier against it, with the
bundled ``data/subscribers.yaml``, and writes a browsable ``index.html`` beside the outbox.
"""
