"""Typed errors of the contract model.

A `ContractError` raised while a transaction is applied is not a crash: the engine records
the failure (code and message) in the history and in the state, so every node shows the same
failure, and the transaction's writes are dropped.
"""

from __future__ import annotations


class ContractError(Exception):
    """Base class: a contract transaction was refused. `code` names the reason for machines."""

    code = "contract_error"


class InvalidTransaction(ContractError):
    """The payload is not a well-formed contract transaction (bad CBOR, missing or bad field)."""

    code = "invalid"


class UnknownContract(ContractError):
    """The transaction names a contract id or template that does not exist."""

    code = "unknown_contract"


class UnknownMethod(ContractError):
    """The template has no such method."""

    code = "unknown_method"


class PermissionDenied(ContractError):
    """The author does not hold a role that may call this method."""

    code = "permission_denied"


class WrongStatus(ContractError):
    """The contract is not in a status that allows the call (provisional, rejected, superseded)."""

    code = "wrong_status"


class StepBudgetExceeded(ContractError):
    """The call used more steps than the engine's budget allows."""

    code = "step_budget"


class InsufficientFunds(ContractError):
    """A transfer or fee would make an available balance negative."""

    code = "insufficient_funds"


class FeeMismatch(ContractError):
    """A fee transaction does not cover the fee that the schedule computes."""

    code = "fee_mismatch"


class StoreError(Exception):
    """The contract store refused input: forged signature, bad checkpoint, corrupt row."""
