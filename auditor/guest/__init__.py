"""Inside-the-VM side of cc-auditor: the evidence collector.

Imports only the standard library and `cryptography`, so it runs in a bare guest.
"""
