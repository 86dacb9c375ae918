"""embeddings: papers' vectors from an OpenAI-compatible ``/v1/embeddings`` endpoint, for ranking, fail-open.

``client`` asks for a batch of texts' vectors through the official ``openai`` client (errors typed as the
summaries' are), and ``stage`` embeds, after each poll, what ranking needs and the store has no vector for.
"""
