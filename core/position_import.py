"""Bringing an existing book of open layers in (a legacy import): what each row of the file
must say, and what the book becomes. Pure: standard library, decimal and `core` only.

An import writes nothing unless every row is right, so `check_import` names every rejection
(row, field, why) rather than stopping at the first. Each instrument of the file becomes one
new trade: a base `Long_1` and the pyramids on top of it, in an instrument the book holds
nothing of (joining a trade the daemon is already pyramiding would guess at its state).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation

from core.accounting import CENT
from core.models import BASE_LAYER, ContractRef, Layer, LayerStatus
from core.signals import normalise_timestamp
from core.specs import InstrumentSpec

REQUIRED = ("instrument", "layer", "lots", "entry_price", "initial_stop", "entry_time",
            "tradingsymbol")
OPTIONAL = ("current_stop", "atr", "highest_close")
FIELDS = REQUIRED + OPTIONAL
MAX_ROWS = 500
IMPORTED = "imported"  # the limiter of an imported layer: no sizing decision made it
PRICE_PLACES = 4  # portfolio_positions keeps prices as numeric(18, 4)
MAX_LOTS = 1_000_000
_LAYER = re.compile(r"long_([1-6])", re.IGNORECASE)
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_PRICE_CEILING = Decimal(10) ** 14


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why one row (numbered from 1, in file order) cannot be imported."""

    row: int
    field: str
    reason: str

    def describe(self) -> str:
        return f"row {self.row}, {self.field}: {self.reason}"


@dataclass(frozen=True, slots=True)
class ImportedLayer:
    """One valid row: an open layer as the book will hold it."""

    row: int
    instrument: str
    layer: str
    lots: int
    quantity: int  # in the broker's units, as the book keeps it
    entry_price: Decimal
    initial_stop: Decimal
    current_stop: Decimal
    highest_close: Decimal
    atr: Decimal
    entry_timestamp: datetime  # UTC
    contract: ContractRef
    risk: Decimal  # max(0, entry − current stop) × lots × pv, as the portfolio cap counts it

    @property
    def number(self) -> int:
        return int(self.layer.removeprefix("Long_"))


@dataclass(frozen=True, slots=True)
class ImportedTrade:
    """One instrument's layers of the file: the trade they form and its pyramiding state."""

    instrument: str
    layers: tuple[ImportedLayer, ...]  # the base first, then the pyramids by number

    @property
    def base(self) -> ImportedLayer:
        return self.layers[0]

    @property
    def pyramid_count(self) -> int:
        """Pyramids taken in the trade: layers are numbered in the order they were taken,
        so `Long_4` open means three were (a gap is one closed since)."""
        return self.layers[-1].number - 1

    @property
    def last_pyramid_price(self) -> Decimal:
        """Where the ATR spacing of the next pyramid is measured from."""
        return self.layers[-1].entry_price


@dataclass(frozen=True, slots=True)
class ImportCheck:
    layers: tuple[ImportedLayer, ...]  # the valid rows, in file order
    rejections: tuple[Rejection, ...]
    warnings: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.rejections and bool(self.layers)

    @property
    def risk(self) -> Decimal:
        return sum((x.risk for x in self.layers), Decimal(0))

    def trades(self) -> list[ImportedTrade]:
        """The file's trades, one per instrument, in instrument order."""
        by_instrument: dict[str, list[ImportedLayer]] = {}
        for layer in self.layers:
            by_instrument.setdefault(layer.instrument, []).append(layer)
        return [ImportedTrade(name, tuple(sorted(held, key=lambda x: x.number)))
                for name, held in sorted(by_instrument.items())]


class _Bad(Exception):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


def check_import(rows: Sequence[object], *, instruments: Mapping[str, InstrumentSpec],
                 contracts: Mapping[str, Sequence[ContractRef]], book: Sequence[Layer],
                 now: datetime) -> ImportCheck:
    """Check every row of an import against the configuration, the contracts each instrument
    lists now, the live `book`, and the other rows; return the layers and every rejection."""
    if not rows:
        return ImportCheck((), (Rejection(0, "rows", "the file holds no rows"),), ())
    if len(rows) > MAX_ROWS:
        return ImportCheck((), (Rejection(0, "rows", f"{len(rows)} rows: at most {MAX_ROWS} "
                                                     "in one import"),), ())
    layers: list[ImportedLayer] = []
    rejections: list[Rejection] = []
    for number, raw in enumerate(rows, start=1):
        layer, problems = _row(number, raw, instruments, contracts, now)
        rejections += problems
        if layer is not None:
            layers.append(layer)
    rejections += _against_each_other(layers, _named_bases(rows)) + _against_book(layers, book)
    rejections.sort(key=lambda r: r.row)
    return ImportCheck(tuple(layers), tuple(rejections), _warnings(layers, instruments))


def preview_layer(layer: ImportedLayer) -> Layer:
    """The book's view of an imported layer before it is written (for the exposure a dry
    run shows)."""
    return Layer(id=0, trade_id=0, instrument=layer.instrument, layer=layer.layer,
                 status=LayerStatus.OPEN, lots=layer.lots, quantity=layer.quantity,
                 entry_price=layer.entry_price, entry_timestamp=layer.entry_timestamp,
                 initial_stop=layer.initial_stop, current_stop=layer.current_stop,
                 highest_close=layer.highest_close, atr=layer.atr, limiter=IMPORTED,
                 tradingsymbol=layer.contract.tradingsymbol, signal_id=None, exit_price=None,
                 exit_timestamp=None, exit_reason=None, realized_pnl=None, version=0,
                 exchange=layer.contract.exchange, expiry=layer.contract.expiry)


# -- one row --------------------------------------------------------------------------------
def _row(number: int, raw: object, instruments: Mapping[str, InstrumentSpec],
         contracts: Mapping[str, Sequence[ContractRef]], now: datetime
         ) -> tuple[ImportedLayer | None, list[Rejection]]:
    if not isinstance(raw, Mapping):
        return None, [Rejection(number, "row", "not an object of fields")]
    values = {str(k).strip().lower(): _blank_to_none(v) for k, v in raw.items()}
    problems = [Rejection(number, name, f"unknown field (the fields are {', '.join(FIELDS)})")
                for name in values if name not in FIELDS]
    problems += [Rejection(number, name, "missing") for name in REQUIRED
                 if values.get(name) is None]
    parsed: dict[str, object] = {}
    for name, parse in _PARSERS.items():
        if values.get(name) is None:
            continue
        try:
            parsed[name] = parse(values[name])
        except _Bad as bad:
            problems.append(Rejection(number, name, bad.reason))
    spec = instruments.get(str(parsed.get("instrument", "")))
    if "instrument" in parsed and spec is None:
        problems.append(Rejection(number, "instrument", f"unknown instrument "
                                  f"{parsed['instrument']} (configured: "
                                  f"{', '.join(sorted(instruments))})"))
    problems += _stops(number, parsed)
    if "entry_time" in parsed and _after(parsed["entry_time"], now):
        problems.append(Rejection(number, "entry_time", f"{values['entry_time']} is in the "
                                  "future"))
    contract = None
    if spec is not None and "tradingsymbol" in parsed:
        contract, problem = _contract(number, spec.name, str(parsed["tradingsymbol"]),
                                      contracts)
        problems += problem
    if problems or spec is None or contract is None:
        return None, problems
    return _layer(number, parsed, spec, contract), []


def _layer(number: int, parsed: Mapping[str, object], spec: InstrumentSpec,
           contract: ContractRef) -> ImportedLayer:
    entry, initial = _dec(parsed["entry_price"]), _dec(parsed["initial_stop"])
    current = _dec(parsed.get("current_stop", initial))
    lots = parsed["lots"]
    assert isinstance(lots, int)
    at = parsed["entry_time"]
    assert isinstance(at, datetime)
    risk = (max(Decimal(0), entry - current) * lots * spec.point_value).quantize(CENT)
    return ImportedLayer(
        row=number, instrument=spec.name, layer=str(parsed["layer"]), lots=lots,
        quantity=spec.broker_quantity(lots), entry_price=entry, initial_stop=initial,
        current_stop=current, highest_close=_dec(parsed.get("highest_close", entry)),
        atr=_dec(parsed.get("atr", Decimal(0))), entry_timestamp=at, contract=contract,
        risk=risk)


def _stops(number: int, parsed: Mapping[str, object]) -> list[Rejection]:
    """Stops of a long layer sit below its entry, and only ratchet up from the initial one."""
    problems = []
    entry, initial = parsed.get("entry_price"), parsed.get("initial_stop")
    current, high = parsed.get("current_stop"), parsed.get("highest_close")
    if isinstance(entry, Decimal) and isinstance(initial, Decimal) and initial >= entry:
        problems.append(Rejection(number, "initial_stop", f"{initial} is not below the entry "
                                  f"price {entry} (the book holds long layers only)"))
    if isinstance(initial, Decimal) and isinstance(current, Decimal) and current < initial:
        problems.append(Rejection(number, "current_stop", f"{current} is below the initial "
                                  f"stop {initial}: a stop only ratchets up from it"))
    if isinstance(entry, Decimal) and isinstance(high, Decimal) and high < entry:
        problems.append(Rejection(number, "highest_close", f"{high} is below the entry price "
                                  f"{entry}: the highest close starts at the entry"))
    if isinstance(high, Decimal) and isinstance(current, Decimal) and current > high:
        problems.append(Rejection(number, "current_stop", f"{current} is above the highest "
                                  f"close {high}: the stop would have been hit"))
    return problems


def _contract(number: int, instrument: str, symbol: str,
              contracts: Mapping[str, Sequence[ContractRef]]
              ) -> tuple[ContractRef | None, list[Rejection]]:
    """A layer is held in one of its instrument's listed contracts (DOMAIN.md §9): every
    later order of it — exit, stop, roll — trades that contract."""
    listed = list(contracts.get(instrument, ()))
    for contract in listed:
        if contract.tradingsymbol == symbol:
            return contract, []
    owner = next((name for name, refs in contracts.items()
                  if any(c.tradingsymbol == symbol for c in refs)), None)
    if owner is not None:
        why = f"{symbol} is a contract of {owner}, not of {instrument}"
    else:
        names = ", ".join(c.tradingsymbol for c in listed) or "none loaded"
        why = f"{symbol} is not a listed contract of {instrument} (listed: {names})"
    return None, [Rejection(number, "tradingsymbol", why)]


# -- rows together, and against the book --------------------------------------------------
def _named_bases(rows: Sequence[object]) -> set[str]:
    """The instruments with a base row in the file, valid or not: a pyramid whose base row
    is rejected is not rejected again for it."""
    named = set()
    for raw in rows:
        if isinstance(raw, Mapping):
            instrument, layer = raw.get("instrument"), raw.get("layer")
            if isinstance(instrument, str) and isinstance(layer, str) and (
                    _LAYER.fullmatch(layer.strip()) and layer.strip()[-1] == "1"):
                named.add(instrument.strip().upper())
    return named


def _against_each_other(layers: Sequence[ImportedLayer], named_bases: set[str]
                        ) -> list[Rejection]:
    problems = []
    first: dict[tuple[str, str], int] = {}
    bases = {x.instrument: x for x in layers if x.layer == BASE_LAYER}
    for layer in layers:
        key = (layer.instrument, layer.layer)
        if key in first:
            problems.append(Rejection(layer.row, "layer", f"{layer.instrument} {layer.layer} "
                                      f"is in the file twice (first in row {first[key]})"))
            continue
        first[key] = layer.row
        if layer.layer == BASE_LAYER:
            continue
        base = bases.get(layer.instrument)
        if base is None and layer.instrument in named_bases:
            continue  # its base row is rejected for what it says: nothing is imported
        if base is None:
            problems.append(Rejection(layer.row, "layer", f"pyramid {layer.layer} of "
                                      f"{layer.instrument} without its base {BASE_LAYER} in "
                                      "the file"))
        elif layer.entry_timestamp < base.entry_timestamp:
            problems.append(Rejection(layer.row, "entry_time", f"pyramid {layer.layer} entered "
                                      f"before its base {BASE_LAYER} (row {base.row})"))
    return problems


def _against_book(layers: Sequence[ImportedLayer], book: Sequence[Layer]) -> list[Rejection]:
    live: dict[str, list[Layer]] = {}
    for existing in book:
        if existing.is_live:
            live.setdefault(existing.instrument, []).append(existing)
    problems = []
    for layer in layers:
        held = live.get(layer.instrument, [])
        same = next((x for x in held if x.layer == layer.layer), None)
        if same is not None:
            problems.append(Rejection(layer.row, "layer", f"{layer.instrument} {layer.layer} is "
                                      f"already open in the book (position {same.id})"))
        elif held:
            names = ", ".join(x.layer for x in held)
            problems.append(Rejection(layer.row, "instrument", f"{layer.instrument} already "
                                      f"holds open layers in the book ({names}): an import "
                                      "starts a new trade, into an instrument that is flat"))
    return problems


def _warnings(layers: Sequence[ImportedLayer], instruments: Mapping[str, InstrumentSpec]
              ) -> tuple[str, ...]:
    """What is allowed but worth saying: the book holds it, whatever the configuration."""
    notes = []
    pyramids: dict[str, int] = {}
    for layer in layers:
        if layer.layer != BASE_LAYER:
            pyramids[layer.instrument] = max(pyramids.get(layer.instrument, 0),
                                             layer.number - 1)
    for name, count in sorted(pyramids.items()):
        allowed = instruments[name].max_pyramids
        if count > allowed:
            notes.append(f"{name}: {count} pyramids taken, more than max_pyramids {allowed}; "
                         "no further pyramid will be added")
    no_atr = sorted({x.instrument for x in layers if x.atr == 0})
    if no_atr:
        notes.append(f"no atr for {', '.join(no_atr)}: counted as 0 in the volatility cap")
    return tuple(notes)


# -- field parsers --------------------------------------------------------------------------
def _blank_to_none(value: object) -> object:
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _instrument(raw: object) -> str:
    return _named("instrument", raw).upper()


def _named(field: str, raw: object) -> str:
    if not isinstance(raw, str):
        raise _Bad(field, f"{raw!r} is not text")
    return raw.strip()


def _layer_name(raw: object) -> str:
    text = _named("layer", raw)
    match = _LAYER.fullmatch(text)
    if match is None:
        raise _Bad("layer", f"{text!r} is not a layer name: Long_1 (the base) to Long_6 "
                            "(the book holds long layers only)")
    return f"Long_{match.group(1)}"


def _lots(raw: object) -> int:
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        raise _Bad("lots", f"{raw!r} is not a positive whole number of lots")
    text = str(raw).strip()
    if not re.fullmatch(r"[+-]?\d+", text):
        raise _Bad("lots", f"{text!r} is not a positive whole number of lots")
    lots = int(text)
    if not 0 < lots <= MAX_LOTS:
        raise _Bad("lots", f"{lots} is not a positive whole number of lots (1 to {MAX_LOTS})")
    return lots


def _price(field: str, *, zero: bool = False) -> Callable[[object], Decimal]:
    def parse(raw: object) -> Decimal:
        value = _decimal(raw)
        what = "a decimal of at least 0" if zero else "a positive decimal"
        if value is None or not value.is_finite() or value >= _PRICE_CEILING:
            raise _Bad(field, f"{raw!r} is not {what}")
        if value < 0 or (value == 0 and not zero):
            raise _Bad(field, f"{raw!r} is not {what}")
        exponent = value.as_tuple().exponent
        if isinstance(exponent, int) and -exponent > PRICE_PLACES:
            raise _Bad(field, f"{raw!r} has more than {PRICE_PLACES} decimal places")
        return value
    return parse


def _decimal(raw: object) -> Decimal | None:
    if isinstance(raw, bool):  # an int subclass: `true` is not 1 rupee
        return None
    if isinstance(raw, Decimal):
        return raw
    if isinstance(raw, int):
        return Decimal(raw)
    if isinstance(raw, str) and _NUMBER.fullmatch(raw.strip()):
        try:
            return Decimal(raw.strip())
        except InvalidOperation:  # pragma: no cover - the pattern admits only numbers
            return None
    return None


def _entry_time(raw: object) -> datetime:
    text = raw.strip() if isinstance(raw, str) else ""
    usage = "give ISO-8601 such as 2026-11-02T10:15:00 (India time without an offset)"
    # A bare date names a day, not the moment of the fill.
    if not any(separator in text for separator in "Tt "):
        raise _Bad("entry_time", f"{raw!r} is not a date and time: {usage}")
    try:
        return normalise_timestamp(datetime.fromisoformat(text))
    except (ValueError, OverflowError):
        raise _Bad("entry_time", f"{raw!r} is unparsable: {usage}") from None


def _symbol(raw: object) -> str:
    text = _named("tradingsymbol", raw)
    if not re.fullmatch(r"[A-Za-z0-9_&-]{1,40}", text):
        raise _Bad("tradingsymbol", f"{text!r} is not a tradingsymbol")
    return text.upper()


def _after(moment: object, now: datetime) -> bool:
    return isinstance(moment, datetime) and moment > now


def _dec(value: object) -> Decimal:
    assert isinstance(value, Decimal)
    return value


_PARSERS: dict[str, Callable[[object], object]] = {
    "instrument": _instrument,
    "layer": _layer_name,
    "lots": _lots,
    "entry_price": _price("entry_price"),
    "initial_stop": _price("initial_stop"),
    "current_stop": _price("current_stop"),
    "highest_close": _price("highest_close"),
    "atr": _price("atr", zero=True),
    "entry_time": _entry_time,
    "tradingsymbol": _symbol,
}
