"""Elasticsearch / OpenSearch ``_bulk`` destination."""
