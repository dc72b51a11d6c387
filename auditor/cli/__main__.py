"""`python -m auditor.cli`: the same as `ccaudit`."""

from auditor.cli import main

main()
