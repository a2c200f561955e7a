"""Splunk HTTP Event Collector destination."""
