"""The pure parts of steps: URL templates and patterns, and seeded dwell times."""

from __future__ import annotations

import functools
import random
import re
from datetime import timedelta
from urllib.parse import urljoin

from services.common.spec import DwellStep


def resolve_url(template: str, *, target: str, index: int, run_id: str) -> str:
    """A goto URL: `{target}`, `{index}`, `{run_id}` filled in, relative to the target, empty = target."""
    url = (
        template.replace("{target}", target)
        .replace("{index}", str(index))
        .replace("{run_id}", run_id)
    )
    return urljoin(target, url) if url else target


def url_matches(pattern: str, url: str) -> bool:
    """A `/regular expression/` searched in the URL, or a glob matched against the whole URL.

    Globs follow Playwright's: `**` is any text, `*` any text without `/`, `{a,b}` either;
    everything else (including `?`) is literal. So `**/cart` matches any URL ending in /cart.
    """
    if len(pattern) > 2 and pattern.startswith("/") and pattern.endswith("/"):
        return re.search(pattern[1:-1], url) is not None
    return _glob(pattern).fullmatch(url) is not None


@functools.lru_cache(maxsize=256)
def _glob(pattern: str) -> re.Pattern[str]:
    out: list[str] = []
    position = 0
    while position < len(pattern):
        char = pattern[position]
        if pattern.startswith("**", position):
            out.append(".*")
            position += 2
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "{" and "}" in pattern[position:]:
            end = pattern.index("}", position)
            choices = pattern[position + 1 : end].split(",")
            out.append("(?:" + "|".join(re.escape(choice) for choice in choices) + ")")
            position = end
        else:
            out.append(re.escape(char))
        position += 1
    return re.compile("".join(out), re.DOTALL)


def dwell_duration(params: DwellStep, *, seed: int, job_index: int, step_index: int) -> timedelta:
    """Uniform between min and max, the same for the same (seed, job index, step index).

    A string seed goes through SHA-512 in `random.Random`, so it does not depend on the process
    (unlike `hash()`), and every node picks the same time for the same session.
    """
    low = params.min
    high = params.max if params.max is not None else low
    if high <= low:
        return low
    fraction = random.Random(f"smartfleet-dwell:{seed}:{job_index}:{step_index}").random()
    return low + (high - low) * fraction
