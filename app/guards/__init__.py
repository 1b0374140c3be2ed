"""The adapter stack: what stands between the platform's real adapters and their callers.

Innermost, with ``SHOAL_ENABLE_FAULTS``, the fault drills (:mod:`app.guards.drills`, consulting
the registry of :mod:`app.guards.faults`); around them the guards of
:mod:`retrieval.resilience` (the vector store's breaker and timeouts, a breaker per LLM
endpoint). :mod:`app.guards.stack` builds the stack; :mod:`app.platform` asks it for each
wrapped adapter.

Every layer has its adapter's whole interface, ``ping`` and ``close`` included, and delegates
them: callers (readiness, shutdown) speak to the outermost layer and never unwrap one.
"""
