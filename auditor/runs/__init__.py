"""Stored runs: what happens to a run directory after the scan that writes it.

`spool` (a scan's results and evidence on disk as its scopes finish), `store` (the index of
runs and `latest`), `drift` (two runs compared), `gates` (CI thresholds on a run and its drift),
`shard` and `merge` (one audit split over machines and joined), `bundle` (manifest, signature,
hash chain) and `reverify` (a sealed run's audit run again offline).
"""
