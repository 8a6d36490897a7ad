"""Credit-based dispatch arithmetic."""

from __future__ import annotations

import pytest

from services.scheduler._credit import CreditLedger


def test_credit_is_capacity_minus_outstanding() -> None:
    """Publishing takes credit, results give it back, per pool."""
    ledger = CreditLedger()
    assert ledger.credit("chromium", 8) == 8
    ledger.took("chromium", 5)
    assert ledger.credit("chromium", 8) == 3
    assert ledger.credit("firefox", 2) == 2
    ledger.returned("chromium", 2)
    assert ledger.credit("chromium", 8) == 5


def test_credit_never_negative_when_capacity_drops() -> None:
    """A node leaving (capacity below outstanding) gives zero credit, not negative."""
    ledger = CreditLedger()
    ledger.took("chromium", 10)
    assert ledger.credit("chromium", 4) == 0


def test_outstanding_never_below_zero() -> None:
    """A duplicate return cannot create credit out of nothing."""
    ledger = CreditLedger()
    ledger.took("chromium", 1)
    ledger.returned("chromium", 3)
    assert ledger.outstanding("chromium") == 0
    assert ledger.credit("chromium", 2) == 2


def test_reset_restores_outstanding_after_restart() -> None:
    """After a scheduler restart the ledger starts from the jobs still dispatched."""
    ledger = CreditLedger()
    ledger.reset({"chromium": 7})
    assert ledger.credit("chromium", 10) == 3


def test_negative_counts_are_refused() -> None:
    """Negative amounts are programming errors."""
    with pytest.raises(ValueError):
        CreditLedger().took("chromium", -1)
