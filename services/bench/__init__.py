"""`orderflow bench`: end-to-end benchmarks of a running system or one it starts itself.

`runner` wires a run together and `options` defines the command line. `load` is the
open-loop load generator over the HTTP client in `client`, and `payload` builds its order
bodies. `system` starts and stops `orderflow up`. `observe` samples backlog, processes and
order timings, and `measures` and `stats` reduce them. `scenarios` runs the four scenarios,
and `report`, `markdown` and `targets` write `result.json`, `report.md` and the plots.
"""
