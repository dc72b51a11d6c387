"""cc-auditor: who can still read the data on a confidential VM."""
