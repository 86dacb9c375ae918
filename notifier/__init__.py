"""arxiv-notifier: watches arXiv and sends each subscriber the new papers that match their rules."""

__version__ = "0.1.0"
