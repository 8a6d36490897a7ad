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
    ledger.reset([("run-a", "chromium", 4), ("run-b", "chromium", 3)])
    assert ledger.credit("chromium", 10) == 3
    assert ledger.run_outstanding("run-a", "chromium") == 4


def test_per_run_outstanding_follows_took_and_returned() -> None:
    """Each run's outstanding per pool is tracked, and a run cannot return another's credit."""
    ledger = CreditLedger()
    ledger.took("chromium", 3, run_id="a")
    ledger.took("chromium", 2, run_id="b")
    ledger.returned("chromium", 5, run_id="a")
    assert (ledger.run_outstanding("a", "chromium"), ledger.run_outstanding("b", "chromium")) == (
        0,
        2,
    )
    assert ledger.outstanding("chromium") == 2


def test_negative_counts_are_refused() -> None:
    """Negative amounts are programming errors."""
    with pytest.raises(ValueError):
        CreditLedger().took("chromium", -1)
