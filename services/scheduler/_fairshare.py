"""Fair share of a pool's capacity between running runs, weighted by priority (water-filling)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Claim:
    """One run's position in one pool: what it runs now and how much more it could start."""

    weight: float
    in_flight: int
    demand: int


def weight_of(priority: int) -> float:
    """Priority 0 weighs 1; each step of priority adds one share."""
    return float(priority + 1)


def fair_allowance(capacity: int, claims: Mapping[str, Claim]) -> dict[str, int]:
    """How many new sessions each run may start so capacity splits by weight.

    Each run is entitled to a weighted share of `capacity`; a run that wants less than its
    share (in flight + demand) leaves the rest to the others (max-min fairness). The allowance
    is the entitlement minus what the run already has in flight, never negative, and the
    allowances never add up to more than the capacity left free.
    """
    wants = {run: claim.in_flight + claim.demand for run, claim in claims.items()}
    share: dict[str, float] = dict.fromkeys(claims, 0.0)
    open_runs = {run for run, want in wants.items() if want > 0 and claims[run].weight > 0}
    left = float(capacity)
    while open_runs and left > 1e-9:
        total_weight = sum(claims[run].weight for run in open_runs)
        satisfied = set()
        for run in open_runs:
            offer = left * claims[run].weight / total_weight
            if share[run] + offer >= wants[run]:
                satisfied.add(run)
        if not satisfied:
            for run in open_runs:
                share[run] += left * claims[run].weight / total_weight
            left = 0.0
            break
        for run in satisfied:
            left -= wants[run] - share[run]
            share[run] = float(wants[run])
        open_runs -= satisfied
    free = max(0, capacity - sum(claim.in_flight for claim in claims.values()))
    allowance: dict[str, int] = {}
    # Largest shares first, so rounding never starves the bigger claims.
    for run in sorted(claims, key=lambda r: share[r] - claims[r].in_flight, reverse=True):
        claim = claims[run]
        allowed = min(claim.demand, max(0, round(share[run]) - claim.in_flight), free)
        allowance[run] = allowed
        free -= allowed
    return allowance
