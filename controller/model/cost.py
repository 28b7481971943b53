"""What replicas cost: the time each held capacity on a node, times that node's class's prices.

Capacity is held exactly as the allocation trigger counts it (`holds_capacity`: a node and a
status of pending, starting, running or stopping), so cost and the node's `allocated_*`
totals can never disagree about when a replica started or stopped taking room. The replica
history records each status change with its node and the database's clock, which gives:

* a replica placed when it is created holds from its first (pending) row;
* a replica lost with its node stops holding at its `failed` row, written in the statement
  that released the allocation (node loss needs no special case);
* in a rollout the old and the new revision are different replica rows with their own
  requests, each counted for its own time;
* a replica created without a node and assigned one later gets it in an UPDATE that changes
  no status, so no history row is written then; `complete_history` adds the row from the
  replica's `assigned_at` (stamped by a trigger, migration 0009). Replicas assigned before
  0009 have no stamp and hold from their first row naming a node;
* rows dropped by a history retention are replaced by what the replica row still says (its
  state since its creation), so a replica running for longer than the retention still costs
  in every window the history covers.

Everything is exact: durations in integer microseconds (the database's resolution), prices
and amounts as fractions; rounding happens once, when a figure is shown (`rounded`).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction
from types import MappingProxyType

from controller.model.resources import MILLIS_PER_CORE, Resources
from controller.model.states import ReplicaStatus, holds_capacity

# Memory is requested in MB and priced per GB; GB here is 1024 MB, as cloud providers price
# memory per GiB-hour.
MB_PER_GB = 1024
MICROS_PER_SECOND = 10**6
MICROS_PER_HOUR = 3600 * MICROS_PER_SECOND
# Amounts are shown to a millionth of the currency unit: far below a cent, so rounding each
# line never shows in a bill, and fine enough to compare with a figure computed by hand.
# Seconds are shown to the microsecond, the database's resolution: the same six places.
DECIMAL_PLACES = 6


class Operator(StrEnum):
    """The operators of a Kubernetes label selector's `matchExpressions`."""

    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


@dataclass(frozen=True, slots=True)
class Requirement:
    """One `matchExpressions` entry, with Kubernetes' meaning (NotIn matches a missing key)."""

    key: str
    operator: Operator
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether a node with these labels meets the requirement."""
        value = labels.get(self.key)
        if self.operator is Operator.IN:
            return value is not None and value in self.values
        if self.operator is Operator.NOT_IN:
            return value is None or value not in self.values
        return (value is not None) == (self.operator is Operator.EXISTS)


@dataclass(frozen=True, slots=True)
class Selector:
    """A Kubernetes label selector; the empty selector matches every node."""

    match_labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    match_expressions: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether a node with these labels is selected."""
        return all(labels.get(k) == v for k, v in self.match_labels.items()) and all(
            requirement.matches(labels) for requirement in self.match_expressions
        )


@dataclass(frozen=True, slots=True)
class Charge:
    """An amount of money split by resource, exact."""

    cpu: Fraction = Fraction(0)
    memory: Fraction = Fraction(0)
    gpu: Fraction = Fraction(0)
    storage: Fraction = Fraction(0)

    @property
    def total(self) -> Fraction:
        """The four parts together."""
        return sum(self._parts, Fraction(0))

    def __add__(self, other: Charge) -> Charge:
        return Charge(
            *(mine + theirs for mine, theirs in zip(self._parts, other._parts, strict=True))
        )

    def times(self, factor: Fraction) -> Charge:
        """Every part multiplied by `factor`."""
        return Charge(*(part * factor for part in self._parts))

    @property
    def _parts(self) -> tuple[Fraction, Fraction, Fraction, Fraction]:
        return (self.cpu, self.memory, self.gpu, self.storage)


@dataclass(frozen=True, slots=True)
class Prices:
    """Prices per unit-hour of one node class, in the price list's currency."""

    cpu_core_hour: Decimal = Decimal(0)
    memory_gb_hour: Decimal = Decimal(0)
    gpu_unit_hour: Decimal = Decimal(0)
    storage_gb_hour: Decimal = Decimal(0)

    def hourly(self, request: Resources) -> Charge:
        """What one replica with this request costs per hour held."""
        return Charge(
            cpu=Fraction(request.cpu_millis, MILLIS_PER_CORE) * Fraction(self.cpu_core_hour),
            memory=Fraction(request.memory_mb, MB_PER_GB) * Fraction(self.memory_gb_hour),
            gpu=request.gpu_units * Fraction(self.gpu_unit_hour),
            storage=request.storage_gb * Fraction(self.storage_gb_hour),
        )


@dataclass(frozen=True, slots=True)
class PriceClass:
    """Nodes selected by `selector` are charged at `prices`."""

    name: str
    selector: Selector
    prices: Prices


@dataclass(frozen=True, slots=True)
class PriceList:
    """Node classes in order; the first whose selector matches a node prices it.

    First match rather than most specific: the order in the file is the whole rule, as in a
    firewall or a routing table, so a reader never has to work out which of two overlapping
    selectors is "more specific". An empty selector at the end is a default class.
    """

    currency: str
    classes: tuple[PriceClass, ...]

    def class_for(self, labels: Mapping[str, str]) -> PriceClass | None:
        """The class pricing a node with these labels; None if no class selects it."""
        return next((c for c in self.classes if c.selector.matches(labels)), None)


@dataclass(frozen=True, slots=True)
class Transition:
    """One row of a replica's history: the status it entered, its node then, and when."""

    status: ReplicaStatus
    node_id: uuid.UUID | None
    at: datetime


@dataclass(frozen=True, slots=True)
class Hold:
    """A time during which a replica held capacity on a node; `end` None while it still does."""

    node_id: uuid.UUID
    start: datetime
    end: datetime | None


@dataclass(frozen=True, slots=True)
class ReplicaNow:
    """What the replica's own row says: the facts its history may lack."""

    status: ReplicaStatus
    node_id: uuid.UUID | None
    created_at: datetime
    assigned_at: datetime | None


def complete_history(
    replica: ReplicaNow, retained: Sequence[Transition], before_first: ReplicaStatus | None
) -> tuple[Transition, ...]:
    """The replica's history rows, plus the rows that are not (or no longer) in the table.

    `retained` are its rows as read; `before_first` is the old status of the first of them,
    None when that first row is the one written at creation (or there is none). Added:

    * the assignment, when the replica waited without a node: pending, on its node, at
      `assigned_at` (that update changes no status, so no row is written, migration 0009);
    * its state from its creation, when the rows before the first retained one were dropped
      with their month by a history retention (`fogctl run --history-retention`), or all of
      them were: `before_first` (or its status now, if no row is left) since `created_at`.

    The node is the replica's own, or, if that node was removed since (the column was then
    cleared), the one its rows name; a replica that waited had no node before `assigned_at`.
    """
    known = replica.node_id or next((t.node_id for t in retained if t.node_id is not None), None)
    found = list(retained)
    if replica.assigned_at is not None:
        found.append(
            Transition(status=ReplicaStatus.PENDING, node_id=known, at=replica.assigned_at)
        )
    opening = None if replica.assigned_at is not None else known
    status = replica.status if not retained else before_first
    if status is not None:
        found.append(Transition(status=status, node_id=opening, at=replica.created_at))
    return tuple(found)


def holds(transitions: Iterable[Transition]) -> list[Hold]:
    """The holds one replica's history describes, in time order.

    Rows are taken in time order (a stable sort keeps the database's order on a tie). A hold
    opens at the first row that holds capacity and closes at the first that does not, or that
    names another node (the schema never moves a replica, but a history that did would still
    be charged to the right node).
    """
    found: list[Hold] = []
    node: uuid.UUID | None = None
    start: datetime | None = None
    for row in sorted(transitions, key=lambda t: t.at):
        holding = holds_capacity(status=row.status, has_node=row.node_id is not None)
        if start is not None and node is not None and (not holding or row.node_id != node):
            found.append(Hold(node_id=node, start=start, end=row.at))
            node, start = None, None
        if holding and start is None:
            node, start = row.node_id, row.at
    if start is not None and node is not None:
        found.append(Hold(node_id=node, start=start, end=None))
    return found


def micros(span: timedelta) -> int:
    """A duration in whole microseconds, exactly (timedelta's own resolution)."""
    return (span.days * 86_400 + span.seconds) * MICROS_PER_SECOND + span.microseconds


@dataclass(frozen=True, slots=True)
class Window:
    """The time reported on: from `start` (None: from the beginning) to `end`, the DB's now."""

    start: datetime | None
    end: datetime

    def overlap(self, hold: Hold) -> int:
        """Microseconds of `hold` inside the window (0 if none); an open hold runs to `end`."""
        start = hold.start if self.start is None else max(hold.start, self.start)
        end = self.end if hold.end is None else min(hold.end, self.end)
        return max(0, micros(end - start))


@dataclass(frozen=True, slots=True)
class ReplicaRecord:
    """One replica: whose it is, what it requested, and its history."""

    namespace: str
    deployment: str
    request: Resources
    transitions: tuple[Transition, ...]


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """A node as it is now: name and labels (its class is decided by today's labels)."""

    name: str
    labels: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Amount:
    """Replica time and its cost.

    `held` is in replica-microseconds; `unpriced` is the part of it on nodes no class prices,
    which `charge` leaves out.
    """

    held: int = 0
    unpriced: int = 0
    charge: Charge = Charge()

    def __add__(self, other: Amount) -> Amount:
        return Amount(
            held=self.held + other.held,
            unpriced=self.unpriced + other.unpriced,
            charge=self.charge + other.charge,
        )


@dataclass(frozen=True, slots=True)
class CostReport:
    """Cost per deployment and per namespace, the total, and which nodes had no price."""

    currency: str
    window: Window
    deployments: Mapping[tuple[str, str], Amount]
    namespaces: Mapping[str, Amount]
    total: Amount
    unpriced_nodes: tuple[str, ...]


def removed_node_name(node_id: uuid.UUID) -> str:
    """How a node deleted since (`fogctl node remove`) is named: its labels are gone with it."""
    return f"removed:{node_id}"


def cost_report(
    *,
    replicas: Iterable[ReplicaRecord],
    nodes: Mapping[uuid.UUID, NodeRecord],
    prices: PriceList,
    window: Window,
) -> CostReport:
    """Charge every replica's holds inside `window` at its node's class's prices.

    A node no class selects, or one removed since (its labels are gone), costs nothing and
    its time is counted as unpriced, so a gap in the price list shows instead of hiding.
    Deployments with no time held inside the window are left out.
    """
    deployments: dict[tuple[str, str], Amount] = defaultdict(Amount)
    unpriced: set[str] = set()
    for replica in replicas:
        for hold in holds(replica.transitions):
            held = window.overlap(hold)
            if held == 0:
                continue
            node = nodes.get(hold.node_id)
            price_class = None if node is None else prices.class_for(node.labels)
            if price_class is None:
                unpriced.add(removed_node_name(hold.node_id) if node is None else node.name)
                amount = Amount(held=held, unpriced=held)
            else:
                hourly = price_class.prices.hourly(replica.request)
                amount = Amount(held=held, charge=hourly.times(Fraction(held, MICROS_PER_HOUR)))
            key = (replica.namespace, replica.deployment)
            deployments[key] = deployments[key] + amount
    namespaces: dict[str, Amount] = defaultdict(Amount)
    for (namespace, _), amount in deployments.items():
        namespaces[namespace] = namespaces[namespace] + amount
    return CostReport(
        currency=prices.currency,
        window=window,
        deployments=dict(sorted(deployments.items())),
        namespaces=dict(sorted(namespaces.items())),
        total=sum(namespaces.values(), Amount()),
        unpriced_nodes=tuple(sorted(unpriced)),
    )


def rounded(value: Fraction, places: int = DECIMAL_PLACES) -> Decimal:
    """An exact amount as shown, to `places` decimals, halves to even (no bias over many lines).

    Integer arithmetic throughout: a Decimal division would round at its context's precision
    first, and a large amount could then round twice.
    """
    quotient, remainder = divmod(value.numerator * 10**places, value.denominator)
    twice = 2 * remainder
    if twice > value.denominator or (twice == value.denominator and quotient % 2):
        quotient += 1
    return Decimal((int(quotient < 0), tuple(int(d) for d in str(abs(quotient))), -places))


def seconds(replica_micros: int) -> Decimal:
    """Replica-microseconds as seconds, exactly (to the microsecond)."""
    return rounded(Fraction(replica_micros, MICROS_PER_SECOND))


def hours(replica_micros: int, places: int) -> Decimal:
    """Replica-microseconds as hours, to `places` decimals."""
    return rounded(Fraction(replica_micros, MICROS_PER_HOUR), places)
