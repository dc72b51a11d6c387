"""Inside-the-VM side of cc-auditor: the evidence collector (standard library + cryptography only)."""
