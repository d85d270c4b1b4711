"""On-device modules hosted by the agent: EV charging management and power interchange.

Each module is a library of pure, deterministic planning functions plus a `cli.register`
that adds its `manet-agent` subcommand; the module host and the ledger wiring live elsewhere.
"""
