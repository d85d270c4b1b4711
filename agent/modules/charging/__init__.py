"""EV charging management: recommend charging facilities and plan time-shifted charging.

Units are integers where exactness matters: energy in Wh, power in W, money in milli-units
of the tariff's currency (1 EUR = 1000), CO2 in grams.
"""

from agent.modules.charging.errors import ChargingError, FacilityError, VehicleError

__all__ = ["ChargingError", "FacilityError", "VehicleError"]
