"""The backhaul: an asyncio server agents sync with over TCP (TLS optional), its client side,
the enrolment registry and signed checkpoints."""
