"""Price verification: every line's sent price must match the catalog within the tolerance.

The order is charged the catalog's price (integer minor units), never the price the client sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from hub_pipelines.orders.catalog import Product
from hub_pipelines.orders.intake import OrderRequest, from_minor_units

PRICE_TOLERANCE = Decimal("0.01")


class PriceRejected(ValueError):
    """A line's price differs from the catalog, its product is unknown, or its currency differs."""


@dataclass(frozen=True)
class PricedLine:
    product_id: str
    name: str
    quantity: int
    unit_price_minor: int
    catalog_version: int


@dataclass(frozen=True)
class PricedOrder:
    request: OrderRequest
    lines: tuple[PricedLine, ...]

    @property
    def currency(self) -> str:
        return self.request.currency

    @property
    def total_minor(self) -> int:
        return sum(line.quantity * line.unit_price_minor for line in self.lines)

    @property
    def item_count(self) -> int:
        return sum(line.quantity for line in self.lines)


def check_price(name: str, sent: Decimal, catalog_minor: int, currency: str) -> None:
    catalog = from_minor_units(catalog_minor, currency)
    if abs(sent - catalog) > PRICE_TOLERANCE:
        raise PriceRejected(f"price mismatch for {name}: sent {sent}, catalog {catalog}")


def price_order(request: OrderRequest, catalog: Mapping[str, Product]) -> PricedOrder:
    """The order at catalog prices, or PriceRejected naming the first line that does not match."""
    lines = []
    for item in request.items:
        product = catalog.get(item.product_id)
        if product is None:
            raise PriceRejected(f"unknown product {item.product_id!r}")
        if product.currency != request.currency:
            raise PriceRejected(
                f"currency mismatch for {product.name}: "
                f"order in {request.currency}, catalog in {product.currency}"
            )
        check_price(product.name, item.unit_price, product.unit_price_minor, product.currency)
        lines.append(
            PricedLine(
                product.product_id, product.name, item.quantity, product.unit_price_minor, product.version
            )
        )
    return PricedOrder(request, tuple(lines))
