"""A fake Kite Connect v3 HTTP server, driven in tests by the real `kiteconnect` client.

It follows /work/shared/docs/KITE.md (cited as §n): the routes, form encoding and parsing of
pykiteconnect 5.2.2 (§1, §2.3), the envelope and error types (§2), order states and fields (§3),
limits (§4) and the fake-server recommendations (§6.1). Where KITE.md marks a detail as
unverified, the choice made here says "unverified" in a comment.

Modules, from the bottom up: `config` (what the fake starts with), `wire` (errors, times,
numbers, form fields), `instruments` (the dump), `market` (prices, quotes), `orders` (records),
`validation`, `positions` (and margins), `book` (the order book), `sessions`, `faults` (and rate
limits), `persistence` (the state file), `fake` (`FakeKite`, all of it together), `gateway`
(what runs in front of every handler), `api_routes`, `control_routes`, `server` (the app,
in-process and the command line) and `process` (`FakeKiteProcess`). Tests import it all from
`tests.fakes.kite_server`.
"""
