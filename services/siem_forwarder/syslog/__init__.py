"""RFC 5424 syslog over TCP or TLS destination."""
