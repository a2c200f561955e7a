"""Generic signed webhook destination."""
