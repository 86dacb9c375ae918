"""summaries: per-paper LLM summaries (a TL;DR and tags) from any OpenAI-compatible server, fail-open.

``prompt`` builds the request, ``answer`` validates what comes back, ``client`` makes one request through the
official ``openai`` client, and ``summariser`` runs many within a budget, a concurrency and a deadline.
"""
