"""Retention, daily archives and their audit trail: one concern, used by the sink's schedule, the CLI
(``auditpipe archive run|list|delete``) and the query API.

- :mod:`.rules` — pure rules and types (retention bounds, which days, file names, the line checksum);
- :mod:`.store` — the ClickHouse side (candidate days, the de-duplicated export, checksum, delete);
- :mod:`.files` — the files on disk (write, read back, manifests, listing, safe name resolution);
- :mod:`.job` — the operations (archive a day, a whole run, delete a file, the schedule) and their
  audit events.
"""
