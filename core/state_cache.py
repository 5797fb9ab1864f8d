"""Write-through cache of the live book: live layers, portfolio state, pyramiding state.

Only committed values enter it (the transaction publishes after COMMIT); a failed transaction
drops what it touched, so the next read goes to the database. Every key carries a generation,
bumped on each publish or drop, so a slow read-through fill can never overwrite a newer commit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.models import Layer, PortfolioState, PyramidingState

PORTFOLIO_KEY = ("portfolio",)


def layers_key(instrument: str) -> tuple[str, str]:
    return ("layers", instrument)


def pyramiding_key(instrument: str) -> tuple[str, str]:
    return ("pyramiding", instrument)


class Missing:
    """Marker for 'not cached' where None is a cached value (no pyramiding state)."""


MISSING = Missing()


@dataclass
class StateCache:
    hits: int = 0
    misses: int = 0
    _layers: dict[str, dict[int, Layer]] = field(default_factory=dict)
    _portfolio: PortfolioState | None = None
    _pyramiding: dict[str, PyramidingState | None] = field(default_factory=dict)
    _generations: dict[tuple[str, ...], int] = field(default_factory=dict)
    complete: bool = False  # every instrument with live layers is cached
    epoch: int = 0  # bumped by every publish and drop, for whole-book reloads
    # Instruments whose live layers changed since `moved_layers` was last asked (None:
    # possibly all of them, as after a whole-book load): what running totals must take up.
    _moved: set[str] | None = None

    def generation(self, key: tuple[str, ...]) -> int:
        return self._generations.get(key, 0)

    def _bump(self, key: tuple[str, ...]) -> None:
        self._generations[key] = self.generation(key) + 1
        self.epoch += 1

    def replace_all(self, layers: list[Layer], portfolio: PortfolioState | None,
                    pyramiding: list[PyramidingState], epoch: int) -> bool:
        """Swap in a whole-book load made at `epoch`; refuse it if anything changed since."""
        if epoch != self.epoch:
            return False
        self._layers = {}
        for layer in layers:
            if layer.is_live:
                self._layers.setdefault(layer.instrument, {})[layer.id] = layer
        self._portfolio = portfolio
        self._pyramiding = {state.instrument: state for state in pyramiding}
        self.complete = True
        self._moved = None
        return True

    def _count(self, found: bool) -> None:
        if found:
            self.hits += 1
        else:
            self.misses += 1

    # -- layers ---------------------------------------------------------------------------
    def live_layers(self, instrument: str) -> list[Layer] | None:
        layers = self._layers.get(instrument)
        self._count(layers is not None)
        return None if layers is None else sorted(layers.values(), key=lambda x: x.id)

    def cached_instruments(self) -> list[str]:
        return list(self._layers)

    def fill_layers(self, instrument: str, layers: list[Layer], generation: int) -> None:
        """Store what a read-through loaded, unless a commit or drop happened meanwhile."""
        if self.generation(layers_key(instrument)) == generation:
            self._layers[instrument] = {layer.id: layer for layer in layers if layer.is_live}
            self._moving(instrument)

    def moved_layers(self) -> set[str] | None:
        """Take the instruments whose live layers changed since the last call (None:
        possibly every one)."""
        moved, self._moved = self._moved, set()
        return moved

    def _moving(self, instrument: str) -> None:
        if self._moved is not None:
            self._moved.add(instrument)

    def publish_layer(self, layer: Layer) -> None:
        key = layers_key(layer.instrument)
        self._bump(key)
        self._moving(layer.instrument)
        layers = self._layers.get(layer.instrument)
        if layers is None:
            if not self.complete:
                return  # not cached: the next read loads it whole
            # The whole book is cached, so an absent instrument had no live layers.
            layers = self._layers[layer.instrument] = {}
        current = layers.get(layer.id)
        if current is not None and current.version >= layer.version:
            return
        if layer.is_live:
            layers[layer.id] = layer
        else:
            layers.pop(layer.id, None)

    def drop_layers(self, instrument: str) -> None:
        self._bump(layers_key(instrument))
        self._moving(instrument)
        self._layers.pop(instrument, None)
        self.complete = False

    # -- portfolio ------------------------------------------------------------------------
    def portfolio(self) -> PortfolioState | None:
        self._count(self._portfolio is not None)
        return self._portfolio

    def fill_portfolio(self, state: PortfolioState | None, generation: int) -> None:
        if self.generation(PORTFOLIO_KEY) == generation:
            self._portfolio = state

    def publish_portfolio(self, state: PortfolioState) -> None:
        self._bump(PORTFOLIO_KEY)
        if self._portfolio is None or self._portfolio.version < state.version:
            self._portfolio = state

    def drop_portfolio(self) -> None:
        self._bump(PORTFOLIO_KEY)
        self._portfolio = None

    # -- pyramiding -----------------------------------------------------------------------
    def pyramiding(self, instrument: str) -> PyramidingState | None | Missing:
        state = self._pyramiding.get(instrument, MISSING)
        self._count(state is not MISSING)
        return state

    def fill_pyramiding(self, instrument: str, state: PyramidingState | None,
                        generation: int) -> None:
        if self.generation(pyramiding_key(instrument)) == generation:
            self._pyramiding[instrument] = state

    def publish_pyramiding(self, instrument: str, state: PyramidingState | None) -> None:
        self._bump(pyramiding_key(instrument))
        current = self._pyramiding.get(instrument)
        if state is None or current is None or current.version < state.version:
            self._pyramiding[instrument] = state

    def drop_pyramiding(self, instrument: str) -> None:
        self._bump(pyramiding_key(instrument))
        self._pyramiding.pop(instrument, None)

    def stats(self) -> dict[str, int]:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "layers": sum(len(layers) for layers in self._layers.values()),
            "instruments": len(self._layers),
            "pyramiding": sum(1 for s in self._pyramiding.values() if s is not None),
            "portfolio": int(self._portfolio is not None),
        }
