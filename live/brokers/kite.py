"""Zerodha through Kite Connect: contracts from the daily dump, LIMIT orders chased with the
market then converted to protected MARKET, freeze slicing, tracking, and the daily session."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import structlog

from config.kite import KiteConfig, KiteOrderPolicy
from core.calendar import TradingCalendar
from core.models import ContractRef, Side
from core.roll_schedule import entry_contract
from core.signals import INDIA
from core.specs import InstrumentSpec
from live.brokers.base import (
    BrokerAuthExpired,
    BrokerOrder,
    BrokerTrade,
    OrderRejected,
    OrderRequest,
    OrderStatus,
    StopOrder,
    VenueStop,
    VenueTrade,
)
from live.brokers.kite_client import KiteCalls
from live.brokers.kite_contracts import (
    Contract,
    futures,
    round_to_tick,
    slice_quantity,
)
from live.brokers.kite_session import KiteSession, next_expiry
from live.brokers.kite_stops import KiteStops
from live.metrics import Metrics
from live.waiting import woken

SESSION_CHECK_S = 5.0
OWN_TAG = re.compile(r"PM[0-9]+")  # the tags order intents give their orders
CHASED = frozenset({"LIMIT", "SL"})
log = structlog.get_logger(__name__)


@dataclass
class Working:
    """What the adapter remembers about one of its resting orders."""

    last_action: float
    modifications: int = 0
    partial_since: float | None = None


class KiteBroker:
    name = "zerodha"
    price_check = True

    def __init__(self, calls: KiteCalls, session: KiteSession, config: KiteConfig,
                 instruments: dict[str, InstrumentSpec], *, api_secret: str,
                 clock: Callable[[], datetime], metrics: Metrics,
                 session_check_s: float = SESSION_CHECK_S,
                 calendar: TradingCalendar | None = None):
        self._calls = calls
        self._session = session
        self._config = config
        self._instruments = instruments
        self._api_secret = api_secret
        self._clock = clock
        self._metrics = metrics
        self._session_check_s = session_check_s
        self._calendar = calendar or TradingCalendar({})
        self._contracts: dict[str, list[Contract]] = {}
        self._by_symbol: dict[str, Contract] = {}
        self._contracts_day: date | None = None
        self._working: dict[str, Working] = {}
        self._authenticated = asyncio.Event()
        self._updated = asyncio.Event()
        self._postbacks: dict[str, str] = {}  # order id → last status seen, for idempotence
        self._watcher: asyncio.Task[None] | None = None
        self._warned_for: datetime | None = None
        self.problems: list[str] = []
        self._stops = KiteStops(self._call, config, self.quote)
        # Told of every postback for an order the adapter is not working itself: a broker
        # stop that fired, an order placed outside the daemon.
        self.foreign_order_listeners: list[Callable[[], None]] = []

    # -- lifecycle and session ------------------------------------------------------------
    async def start(self) -> None:
        self._use_token()
        try:
            await self._load_contracts()
        except BrokerAuthExpired:
            log.error("kite_session_invalid_at_start")
        self._watcher = asyncio.create_task(self._watch(), name="kite-session")

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)

    @property
    def unavailable_reason(self) -> str | None:
        if not self._authenticated.is_set():
            return "token_expired"
        return "; ".join(self.problems) or None

    async def wait_available(self) -> None:
        await self._authenticated.wait()

    def _use_token(self) -> bool:
        token = self._session.token()
        self._calls.set_access_token(token)
        if token:
            self._authenticated.set()
        else:
            self._authenticated.clear()
        return token is not None

    async def _call(self, category: str, method: str, *args: Any, placing: bool = False,
                    **kwargs: Any) -> Any:
        token = self._calls.client.access_token
        try:
            return await self._calls.call(category, method, *args, placing=placing, **kwargs)
        except BrokerAuthExpired:
            self._session.mark_expired(token)
            self._authenticated.clear()
            self._metrics.ready.set(0)
            log.error("kite_session_expired", method=method)
            raise

    async def _watch(self) -> None:
        """Pick up a new session, refresh contracts daily, warn before the 06:00 expiry."""
        while True:
            await asyncio.sleep(self._session_check_s)
            try:
                await self._check_session()
                if self._contracts_day != self._today():
                    await self._load_contracts()
            except BrokerAuthExpired:
                continue
            except Exception:  # the watcher must outlive any one failure
                log.exception("kite_watch_failed")

    async def _check_session(self) -> None:
        expiry = next_expiry(self._clock())
        remaining = (expiry - self._clock()).total_seconds()
        self._metrics.token_expiry.set(remaining)
        warning_s = self._config.token_expiry_warning_minutes * 60
        if remaining <= warning_s and self._warned_for != expiry:
            self._warned_for = expiry
            log.warning("kite_token_expiring", expires_at=expiry.isoformat(),
                        minutes_left=round(remaining / 60))
        if not self._authenticated.is_set() and self._use_token():
            try:
                await self._call("other", "profile")
            except BrokerAuthExpired:
                return
            log.info("kite_session_restored")
            await self._load_contracts()

    # -- contracts ------------------------------------------------------------------------
    def _today(self) -> date:
        return self._clock().astimezone(INDIA).date()

    async def _load_contracts(self) -> None:
        rows: list[dict[str, Any]] = []
        for exchange in sorted({c.exchange for c in self._config.instruments.values()}):
            rows += await self._call("other", "instruments", exchange)
        found = futures(rows)
        problems: list[str] = []
        for name, spec in self._instruments.items():
            mapping = self._config.instruments.get(name)
            contracts = found.get((mapping.exchange, mapping.name), []) if mapping else []
            if not contracts:
                problems.append(f"{name}: no Kite future")
                continue
            self._contracts[name] = contracts
            for contract in contracts:
                self._by_symbol[contract.tradingsymbol] = contract
            problems += _disagreements(name, spec, contracts[0])
        self.problems = problems
        self._contracts_day = self._today()
        for problem in problems:
            log.error("kite_contract_problem", detail=problem)

    def contracts(self, instrument: str, now: datetime) -> list[ContractRef]:
        return [ContractRef(c.tradingsymbol, c.exchange, c.expiry)
                for c in self._contracts.get(instrument, [])]

    def contract(self, instrument: str, now: datetime) -> ContractRef:
        listed = self.contracts(instrument, now)
        if not listed:
            raise OrderRejected(f"{instrument}: no Kite contract loaded")
        try:
            return entry_contract(listed, self._instruments[instrument], self._calendar, now)
        except LookupError as exc:
            raise OrderRejected(str(exc)) from None

    async def roll_quotes(self, old: ContractRef, new: ContractRef,
                          alert_price: Decimal) -> tuple[Decimal, Decimal]:
        old_quote = await self.quote(old.tradingsymbol) or alert_price
        new_quote = await self.quote(new.tradingsymbol) or old_quote
        return old_quote, new_quote

    # -- orders ---------------------------------------------------------------------------
    async def place(self, request: OrderRequest) -> list[str]:
        contract = self._by_symbol.get(request.tradingsymbol)
        if contract is None:
            raise OrderRejected(f"unknown contract {request.tradingsymbol}")
        mapping = self._config.instruments[request.instrument]
        lot = contract.lot_size if contract.exchange == "NFO" else 1
        ids: list[str] = []
        for quantity in slice_quantity(request.quantity, lot, mapping.freeze_quantity):
            params = await self._order_params(request, contract, mapping.policy, quantity)
            try:
                order_id = await self._call("order", "place_order", placing=True, **params)
            except OrderRejected:
                if not ids:
                    raise
                # Earlier slices stand: the intent books what they fill.
                log.error("slice_rejected", tag=request.tag, placed=ids)
                break
            ids.append(str(order_id))
            self._working[str(order_id)] = Working(last_action=time.monotonic())
        return ids

    async def _order_params(self, request: OrderRequest, contract: Contract,
                            policy: KiteOrderPolicy, quantity: int) -> dict[str, Any]:
        params: dict[str, Any] = {
            "variety": self._config.variety, "exchange": contract.exchange,
            "tradingsymbol": contract.tradingsymbol, "transaction_type": request.side,
            "quantity": quantity, "product": self._config.product, "tag": request.tag}
        if policy.order_type == "MARKET" or request.urgent:
            return {**params, "order_type": "MARKET",
                    "market_protection": str(policy.market_protection)}
        # An entry checked against the quote a moment ago carries it (Zerodha allows one
        # quote call a second); anything else is priced from a fresh quote.
        reference = request.price if request.quoted else (
            await self.quote(contract.tradingsymbol) or request.price)
        if reference is None:
            raise OrderRejected(f"no price to place a LIMIT for {contract.tradingsymbol}")
        return {**params, "order_type": "LIMIT",
                "price": str(self._limit_price(reference, request.side, contract, policy))}

    @staticmethod
    def _limit_price(reference: Decimal, side: str, contract: Contract,
                     policy: KiteOrderPolicy) -> Decimal:
        buffer = contract.tick_size * policy.limit_buffer_ticks
        price = reference + buffer if side == Side.BUY else reference - buffer
        return round_to_tick(price, contract.tick_size, side)

    async def find_by_tag(self, tag: str) -> list[BrokerOrder]:
        return await self._orders_where(
            lambda o: o.get("tag") == tag or tag in (o.get("tags") or []))

    async def _orders_where(self, keep: Callable[[dict[str, Any]], bool]) -> list[BrokerOrder]:
        """The day's orders `keep` selects, with their trades (one read of the book)."""
        book = await self._call("other", "orders")
        return [await self._with_trades(raw) for raw in book if keep(raw)]

    async def resting_orders(self) -> list[BrokerOrder]:
        return await self._orders_where(
            lambda o: OWN_TAG.fullmatch(str(o.get("tag") or "")) is not None
            and _status(str(o["status"])) is OrderStatus.OPEN)

    async def cancel(self, order: BrokerOrder) -> None:
        await self._call("order", "cancel_order", variety=self._config.variety,
                         order_id=order.order_id)

    async def order(self, order_id: str) -> BrokerOrder:
        history = await self._call("other", "order_history", order_id)
        return await self._with_trades(history[-1])

    async def _with_trades(self, raw: dict[str, Any]) -> BrokerOrder:
        trades: list[dict[str, Any]] = []
        if int(raw.get("filled_quantity") or 0) > 0:
            trades = await self._call("other", "order_trades", raw["order_id"])
        return _order(raw, trades)

    async def manage(self, order: BrokerOrder, request: OrderRequest) -> BrokerOrder:
        current = await self.order(order.order_id)
        if current.is_final:
            self._working.pop(current.order_id, None)
            return current
        now = time.monotonic()
        working = self._working.setdefault(current.order_id, Working(last_action=now))
        if 0 < current.filled_quantity < current.quantity:
            working.partial_since = working.partial_since or now
            if now - working.partial_since >= self._config.partial_fill_wait_s:
                log.warning("partial_fill_cancelling_rest", order_id=current.order_id,
                            filled=current.filled_quantity, quantity=current.quantity)
                await self._call("order", "cancel_order", self._config.variety,
                                 current.order_id)
            return current
        policy = self._config.policy(request.instrument)
        # A fired broker stop rests as its LIMIT (an SL order's, once triggered, too) when the
        # price gapped through it: it is chased like any exit, never left to wait.
        if current.order_type in CHASED and now - working.last_action >= policy.chase_interval_s:
            await self._chase(current, request, policy, working)
            working.last_action = now
        return current

    async def _chase(self, order: BrokerOrder, request: OrderRequest, policy: KiteOrderPolicy,
                     working: Working) -> None:
        """Move a resting LIMIT to the market, N times at most, then make it MARKET."""
        contract = self._by_symbol[order.tradingsymbol]
        if working.modifications < policy.max_modifications:
            quote = await self.quote(order.tradingsymbol)
            if quote is None:
                return
            price = self._limit_price(quote, order.side, contract, policy)
            await self._call("order", "modify_order", self._config.variety, order.order_id,
                             price=str(price))
            working.modifications += 1
            log.info("order_chased", order_id=order.order_id, price=str(price),
                     modification=working.modifications)
        else:
            await self._call("order", "modify_order", self._config.variety, order.order_id,
                             order_type="MARKET",
                             market_protection=str(policy.market_protection))
            log.info("order_made_market", order_id=order.order_id)

    async def wait_for_update(self, timeout_s: float) -> None:
        self._updated.clear()
        await woken(self._updated, timeout_s)

    def accept_postback(self, payload: dict[str, Any]) -> bool:
        """Verify a postback's checksum (constant time); wake the trackers. Repeats are fine."""
        order_id = str(payload.get("order_id", ""))
        stamp = str(payload.get("order_timestamp", ""))
        expected = hashlib.sha256((order_id + stamp + self._api_secret).encode()).hexdigest()
        if not hmac.compare_digest(expected, str(payload.get("checksum", ""))):
            return False
        status = str(payload.get("status", ""))
        if self._postbacks.get(order_id) != status:
            self._postbacks[order_id] = status
            self._updated.set()
            if order_id not in self._working:
                for listener in self.foreign_order_listeners:
                    listener()
        return True

    # -- broker-resident stops ------------------------------------------------------------
    def stop_kind(self, instrument: str) -> str | None:
        return self._stops.kind(instrument)

    async def place_stop(self, stop: StopOrder) -> str:
        return await self._stops.place(stop)

    async def modify_stop(self, ref: str, stop: StopOrder) -> None:
        await self._stops.modify(ref, stop)

    async def cancel_stop(self, kind: str, ref: str) -> None:
        await self._stops.cancel(kind, ref)

    async def stop_state(self, kind: str, ref: str) -> VenueStop:
        return await self._stops.state(kind, ref)

    async def stop_states_of(self, kind: str, refs: Sequence[str]) -> dict[str, VenueStop]:
        return await self._stops.states(kind, refs)

    async def find_stop(self, stop: StopOrder, known: frozenset[str]) -> VenueStop | None:
        return await self._stops.find(stop, known)

    async def observe(self, tradingsymbol: str, price: Decimal) -> None:
        return None  # Zerodha has its own market

    def quiet_at(self, tradingsymbol: str, price: Decimal) -> bool:
        return True

    # -- account --------------------------------------------------------------------------
    async def positions(self) -> dict[str, int]:
        data = await self._call("other", "positions")
        exchanges = {c.exchange for c in self._config.instruments.values()}
        return {p["tradingsymbol"]: int(p["quantity"]) for p in data["net"]
                if p.get("product") == self._config.product and p.get("exchange") in exchanges
                and int(p["quantity"]) != 0}

    async def trades(self) -> list[VenueTrade]:
        """Return the day's trades of the positions `positions` counts, with their orders'
        tags (Kite's trade book has none: they come from the order book)."""
        rows = await self._call("other", "trades")
        tags = {str(o["order_id"]): str(o.get("tag") or "")
                for o in await self._call("other", "orders")}
        exchanges = {c.exchange for c in self._config.instruments.values()}
        return [VenueTrade(str(t["trade_id"]), str(t["order_id"]),
                           tags.get(str(t["order_id"]), ""), t["tradingsymbol"],
                           Side(t["transaction_type"]), int(t["quantity"]),
                           Decimal(str(t["average_price"])), _aware(t.get("fill_timestamp")))
                for t in rows
                if t.get("product") == self._config.product and t.get("exchange") in exchanges]

    async def position(self, tradingsymbol: str) -> int:
        return (await self.positions()).get(tradingsymbol, 0)

    async def quote(self, tradingsymbol: str) -> Decimal | None:
        contract = self._by_symbol.get(tradingsymbol)
        if contract is None:
            return None
        key = f"{contract.exchange}:{tradingsymbol}"
        data = await self._call("quote", "ltp", key)
        entry = data.get(key)
        return Decimal(str(entry["last_price"])) if entry else None

    async def available_margin(self, equity: Decimal, used_margin: Decimal) -> Decimal:
        # Zerodha's margins are one pool across segments; `net` is what new orders can use.
        data = await self._call("other", "margins", "equity")
        return Decimal(str(data["net"]))


def _disagreements(name: str, spec: InstrumentSpec, contract: Contract) -> list[str]:
    """Sizing uses config's lot and tick; trading with different ones would misstate risk."""
    found = []
    if contract.lot_size != spec.lot_size:
        found.append(f"{name}: config lot_size {spec.lot_size} but Kite says {contract.lot_size}"
                     f" for {contract.tradingsymbol}")
    if contract.tick_size != spec.tick_size:
        found.append(f"{name}: config tick_size {spec.tick_size} but Kite says "
                     f"{contract.tick_size}")
    return found


def _status(text: str) -> OrderStatus:
    if text == "COMPLETE":
        return OrderStatus.COMPLETE
    if text.startswith("REJECTED"):
        return OrderStatus.REJECTED
    if text.startswith("CANCELLED"):
        return OrderStatus.CANCELLED
    return OrderStatus.OPEN  # every in-flight and resting status


def _aware(moment: Any) -> datetime:
    if isinstance(moment, datetime):
        return moment if moment.tzinfo else moment.replace(tzinfo=INDIA)
    return datetime.now(INDIA)


def _order(raw: dict[str, Any], trades: list[dict[str, Any]]) -> BrokerOrder:
    average = Decimal(str(raw.get("average_price") or 0))
    return BrokerOrder(
        order_id=str(raw["order_id"]), tag=str(raw.get("tag") or ""),
        tradingsymbol=raw["tradingsymbol"], side=raw["transaction_type"],
        quantity=int(raw["quantity"]), status=_status(str(raw["status"])),
        filled_quantity=int(raw.get("filled_quantity") or 0),
        average_price=average if average > 0 else None,
        message=raw.get("status_message"), order_type=str(raw.get("order_type") or ""),
        trades=tuple(BrokerTrade(str(t["trade_id"]), int(t["quantity"]),
                                 Decimal(str(t["average_price"])),
                                 _aware(t.get("fill_timestamp")))
                     for t in trades))
