"""What crosses the bus, declared once: error codes, event kinds, and each service's ops."""
