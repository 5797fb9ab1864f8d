"""Per-client token buckets: a burst up to the per-minute limit, refilled evenly."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RateLimiter:
    per_minute: int
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)  # tokens, at

    def allow(self, client: str, now: float) -> bool:
        """Take one token for `client` at monotonic time `now`; False when none is left."""
        tokens, at = self._buckets.get(client, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + (now - at) * self.per_minute / 60.0)
        allowed = tokens >= 1.0
        self._buckets[client] = (tokens - 1.0 if allowed else tokens, now)
        if len(self._buckets) > 10_000:  # forget idle clients, bounded memory
            self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < 60}
        return allowed
