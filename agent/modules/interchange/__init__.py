"""Power interchange between aggregators: detect consumers' deficits and surpluses, plan which
electric vehicles carry energy between them and when, and send the signed plan to the vehicles.

Energy is in Wh per slot, power in W, prices in milli-units per kWh, money in milli-units.
"""

from agent.modules.interchange.model import InterchangeError, Scenario, Site, Vehicle

__all__ = ["InterchangeError", "Scenario", "Site", "Vehicle"]
