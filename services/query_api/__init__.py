"""Query API and web viewer over ``audit.events`` (read-only; Kafka only for audit events)."""
