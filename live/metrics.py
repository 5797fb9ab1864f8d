"""Prometheus metrics of one daemon, in a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Fine enough to read percentiles of a millisecond-scale decision from the histogram.
DECISION_BUCKETS_S = tuple(
    [i / 2000 for i in range(1, 11)] + [i / 1000 for i in range(6, 21)]
    + [0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.webhook_requests = Counter("pm_webhook_requests", "Webhook requests by HTTP status",
                                        ["status"], registry=r)
        self.decision_latency = Histogram(
            "pm_decision_latency_seconds", "Signal received to outcome committed",
            ["outcome"], buckets=DECISION_BUCKETS_S, registry=r)
        self.admission_batch = Histogram(
            "pm_admission_batch_size", "Alerts stored by one admission commit (group commit)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 500), registry=r)
        self.signal_outcomes = Counter("pm_signal_outcomes", "Signal outcomes",
                                       ["type", "outcome"], registry=r)
        self.orders = Counter("pm_orders", "Orders by final status", ["status"], registry=r)
        self.broker_latency = Histogram("pm_broker_call_seconds", "Broker call latency",
                                        ["call"], buckets=LATENCY_BUCKETS_S, registry=r)
        self.open_layers = Gauge("pm_open_layers", "Open layers", registry=r)
        self.closed_equity = Gauge("pm_closed_equity_rupees", "Closed equity", registry=r)
        self.risk_percent = Gauge("pm_portfolio_risk_percent", "Open risk, % of equity",
                                  registry=r)
        self.ready = Gauge("pm_ready", "1 when recovered and able to trade", registry=r)
        self.leader = Gauge("pm_leader", "1 when this instance may trade", registry=r)
        self.token_expiry = Gauge("pm_kite_token_expiry_seconds",
                                  "Seconds until the Kite session's daily 06:00 IST expiry",
                                  registry=r)
        self.paused = Gauge("pm_engine_paused", "1 while the database is unreachable",
                            registry=r)
        self.reconciliation_mismatches = Gauge(
            "pm_reconciliation_mismatches",
            "Contracts whose broker position differs from the book, per instrument "
            "(`unassigned`: a broker position no instrument holds)", ["instrument"], registry=r)
        self.exits_pending = Gauge("pm_exits_pending",
                                   "Exits waiting to be retried until their layers are flat",
                                   ["instrument"], registry=r)
