"""Sans-I/O mesh core: identity, frames, neighbours and line status, AODV routing, gateways."""

from mesh.compiled import use_compiled

use_compiled(__name__, __path__)
