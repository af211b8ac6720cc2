"""`orderflow bench`: end-to-end benchmarks of a running system or one it starts itself.

`load` is the open-loop HTTP load generator, `system` starts and stops `orderflow up`,
`observe` samples backlog, processes and order timings, `scenarios` runs the four scenarios
and `report` writes `result.json`, `report.md` and the plots.
"""
