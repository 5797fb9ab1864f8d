"""The keeper's newest broker stop of each layer, findable by layer and by instrument.

The keeper walks one instrument's stops on every decision, fill and check: with thousands of
layers a scan of the whole book each time would make a startup round quadratic.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from core.broker_stops import StopRecord


class LatestStops:
    def __init__(self, records: Iterable[StopRecord] = ()) -> None:
        self._by_layer: dict[int, StopRecord] = {}
        self._by_instrument: dict[str, dict[int, StopRecord]] = {}
        for record in records:
            self[record.position_id] = record

    def get(self, layer_id: int) -> StopRecord | None:
        return self._by_layer.get(layer_id)

    def __getitem__(self, layer_id: int) -> StopRecord:
        return self._by_layer[layer_id]

    def __setitem__(self, layer_id: int, record: StopRecord) -> None:
        self._by_layer[layer_id] = record
        self._by_instrument.setdefault(record.instrument, {})[layer_id] = record

    def pop(self, layer_id: int) -> StopRecord | None:
        record = self._by_layer.pop(layer_id, None)
        if record is not None:
            held = self._by_instrument.get(record.instrument, {})
            held.pop(layer_id, None)
            if not held:
                self._by_instrument.pop(record.instrument, None)
        return record

    def of(self, instrument: str) -> list[StopRecord]:
        """The instrument's stops, by layer id (a copy: the caller may write as it goes)."""
        return list(self._by_instrument.get(instrument, {}).values())

    def values(self) -> Iterator[StopRecord]:
        return iter(list(self._by_layer.values()))
