"""The simulated-medium link: this agent is one radio of a `sim-radio medium` server.

A thin adapter over `sim_radio.medium_client.MediumClient`: frames heard on the medium go
to the core with the sender's node index as link address; the core's transmits go to
`client.send(frame, link_dst)`. The medium decides who hears what (range, loss, mobility).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

from sim_radio.medium_client import MediumClient, MediumClientError

from agent.config import SimSection
from agent.transports import TransportError


class SimLink:
    """One MediumClient as one link of the mesh core."""

    def __init__(self, section: SimSection, node_id: bytes,
                 deliver: Callable[[bytes, str, Hashable], None]) -> None:
        self.iface = section.name
        self.section = section
        self.deliver = deliver
        self.client = MediumClient(section.host, section.port, node_id=node_id,
                                   on_frame=self._on_frame, node_index=section.node_index)
        self.rx = 0
        self.tx = 0

    def _on_frame(self, frame: bytes, link_src: int) -> None:
        self.rx += 1
        self.deliver(frame, self.iface, link_src)

    def send(self, link_dst: Hashable | None, data: bytes) -> None:
        if link_dst is not None and not isinstance(link_dst, int):
            raise TransportError(f"a sim link address is a node index, got {link_dst!r}")
        try:
            self.client.send(data, link_dst)
        except MediumClientError as exc:
            raise TransportError(str(exc)) from exc
        self.tx += 1

    def close(self) -> None:
        self.client.close()


async def open_sim_link(section: SimSection, node_id: bytes,
                        deliver: Callable[[bytes, str, Hashable], None]) -> SimLink:
    """Join the medium; raises TransportError when it refuses or does not answer."""
    link = SimLink(section, node_id, deliver)
    try:
        await link.client.connect(timeout=5.0)
    except (MediumClientError, OSError) as exc:
        link.close()
        raise TransportError(f"cannot join the medium at {section.host}:{section.port}: "
                             f"{exc}") from exc
    return link
