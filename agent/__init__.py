"""The asyncio edge of the field agent: config, CLI, transports, discovery, line monitor."""
