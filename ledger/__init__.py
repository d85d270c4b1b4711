"""Signed hash-chained feeds, storage, sync sessions, contracts and the backhaul server."""
