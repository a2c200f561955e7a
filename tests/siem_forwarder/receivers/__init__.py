"""Local receivers that speak each destination's protocol as the vendor documents it (tests, benchmark).

Each validates the request the way the vendor does (auth header, body shape, limits) and answers with the
vendor's status codes and bodies; the OTLP receiver parses with ``opentelemetry-proto``'s generated
classes, the syslog receiver is Debian's real rsyslog. All record what they accepted and when.
"""

POISON_ACTION = "poison:reject"
