"""Commands people run by hand: ``auditpipe token`` (ingest and query tokens) and ``auditpipe events``
(search, details, tail and export against the query API)."""
