"""Typed errors of the charging module: each says which input was wrong and why."""

from __future__ import annotations


class ChargingError(Exception):
    """Base class: bad input to the charging module (never a silent coercion)."""


class VehicleError(ChargingError):
    """An unknown or ambiguous vehicle model, or an impossible battery state."""


class FacilityError(ChargingError):
    """A facility file that cannot be read at all (single bad records are reported, not raised)."""


class TariffError(ChargingError):
    """A tariff that cannot be priced (unknown component type, malformed restriction)."""


class PreferenceError(ChargingError):
    """A user preference that makes no sense (unknown preset, negative weight, SoC out of range)."""


class ScheduleError(ChargingError):
    """A time-shift request that is malformed (slots out of order, departure before now)."""
