"""Link transports: each a thin asyncio edge over the same mesh core."""
