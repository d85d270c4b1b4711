"""Link transports: each a thin asyncio edge over the same mesh core."""


class TransportError(Exception):
    """A link cannot be opened or used: no such interface, no address, medium refused us."""
