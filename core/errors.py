"""Errors of the state layer, named for what the caller must do about them."""


class StateError(Exception):
    """Base of the state layer's errors."""


class VersionConflict(StateError):
    """Another writer changed the row since it was read: reload and decide again."""

    def __init__(self, table: str, row_id: object, expected_version: int):
        super().__init__(f"{table} {row_id}: version {expected_version} is no longer current")
        self.table = table
        self.row_id = row_id
        self.expected_version = expected_version


class SignalAlreadyDecided(StateError):
    """The signal already has an outcome; a second one would act on it twice."""


class PortfolioNotSeeded(StateError):
    """The ledger has no opening balance yet."""


class InsufficientEquity(StateError):
    """A withdrawal larger than closed equity."""


class Fenced(StateError):
    """A newer leader's epoch holds the book: this node's write was rolled back."""

    def __init__(self, epoch: int):
        super().__init__(f"fenced: epoch {epoch} is no longer the book's leader")
        self.epoch = epoch
