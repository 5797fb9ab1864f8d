"""The exposure an entry sizes against, kept by instrument, is to the paisa what a sum over the
whole book gives, whatever moved in between."""

from __future__ import annotations

import random
from dataclasses import replace
from decimal import Decimal as D

from core.exposure import RunningExposure, exposure
from core.models import Layer, LayerStatus, PortfolioState
from tests.unit.test_booking import INSTRUMENTS, make_layer

NAMES = ["GOLD_MINI", "BANK_NIFTY", "COPPER", "SILVER_MINI"]
PORTFOLIO = PortfolioState(initial_capital=D("5000000"), closed_equity=D("5012345.67"),
                           equity_high=D("5100000"), version=3)


def random_layer(rng: random.Random, number: int) -> Layer:
    entry = D(rng.randint(50_000, 90_000)) + D(rng.randint(0, 99)) / 100
    layer = make_layer(number, rng.randint(1, 40), str(entry),
                       instrument=rng.choice(NAMES), layer=f"Long_{rng.randint(1, 6)}",
                       status=rng.choice([LayerStatus.OPEN, LayerStatus.CLOSING]))
    return replace(layer, current_stop=entry + D(rng.randint(-3000, 500)),
                   atr=D(rng.randint(100, 2000)) / 10)


def test_kept_by_instrument_it_equals_the_whole_books_sum_after_every_change():
    rng = random.Random(7)
    book = {n: random_layer(rng, n) for n in range(60)}
    prices: dict[str, D] = {}
    running = RunningExposure(INSTRUMENTS)
    running.reset(book.values(), prices.get)
    for number in range(60, 400):
        instrument = rng.choice(NAMES)
        change = rng.random()
        if change < 0.4:
            prices[instrument] = D(rng.randint(50_000, 90_000)) + D(rng.randint(0, 9)) / 10
        elif change < 0.7:
            layer = random_layer(rng, number)
            book[layer.id] = layer
            instrument = layer.instrument
        elif book:  # a layer closes, or its stop trails
            layer = book[rng.choice(sorted(book))]
            instrument = layer.instrument
            if rng.random() < 0.5:
                del book[layer.id]
            else:
                book[layer.id] = replace(layer, current_stop=layer.current_stop + 100)
        running.update(instrument, [x for x in book.values() if x.instrument == instrument],
                       prices.get(instrument))
        assert running.exposure(PORTFOLIO) == exposure(PORTFOLIO, book.values(), INSTRUMENTS,
                                                       prices.get)
    assert running.exposure(PORTFOLIO).layers == len(book)


def test_an_instrument_with_no_price_is_marked_at_its_entries():
    layer = make_layer(1, 5, "78500", status=LayerStatus.OPEN)
    running = RunningExposure(INSTRUMENTS)
    running.reset([layer], {}.get)
    book = running.exposure(PORTFOLIO)
    assert book.equity.unrealised == 0 and book.layers == 1
    running.update("GOLD_MINI", [layer], D("78600"))
    assert running.exposure(PORTFOLIO).equity.unrealised == D("5000.00")  # 100 × 5 × pv 10
