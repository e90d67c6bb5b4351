"""The online side of caprank: what the KServe predictor (``serving/``) runs per request.

Plain library code with no HTTP in it: the ranker protocol and the dense fallback, the
served catalog and its features, the intent-embedding cache and batcher, request parsing,
business rules, the engine that routes between a primary and a canary model, and the
durable feedback sink (a local write-ahead log, or PostgreSQL shared by the replicas, with
served rankings in Redis) that turns served rankings into interaction events.
"""
