"""Pure enrichment rules: no I/O, no clock, no globals. ``enrich.Enricher`` composes them."""
