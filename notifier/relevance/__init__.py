"""Ranking papers by how much they look like a subscriber's own papers (pure: no I/O).

:meth:`Corpus.fit` learns TF-IDF weights from recent papers; :meth:`Corpus.matrix` turns a batch of papers (a day)
into vectors once; :meth:`Corpus.profile` makes a subscriber's :class:`Profile` from the papers they like and
dislike; :meth:`Profile.rank` gives every paper of a batch its :class:`~notifier.models.Similarity`.
"""

from __future__ import annotations

from notifier.relevance.corpus import Corpus
from notifier.relevance.matrix import PaperMatrix
from notifier.relevance.profile import DISLIKE_SHARE, MIN_TRAINED, Profile, Scores

__all__ = ["DISLIKE_SHARE", "MIN_TRAINED", "Corpus", "PaperMatrix", "Profile", "Scores"]
