"""The client SDK: bnlab in a user's own training loop (`bnlab.init`, `Run`, `Api`, `sync`).

It stands on bnlab.core only; `Run.watch` also uses the engine's probe (bnlab.engine.probes),
and imports it, with torch, when called: torch is the user's, never a dependency of the client.
"""
