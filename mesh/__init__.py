"""Sans-I/O mesh core: identity, frames, neighbours and line status, AODV routing, gateways."""
