"""The product catalog behind two cache levels: in-process (TTL) -> shared Cache (Redis) -> SQL.

Cache keys are versioned by a catalog generation kept in the shared cache (`catalog:generation`): a
price change or restock bumps it, so every process's entries of the old generation stop matching at
once in Redis, and in process at the next `refresh()` (each batch calls it) or after `local_ttl`.
Stock taken by orders is not cached at all: the order transaction reads it under a row lock, so the
cache only answers names and prices, and the transaction re-checks the price it locks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import msgspec
import sqlalchemy as sa

from hub_pipelines.core.ports import Cache, SqlDatabase
from hub_pipelines.core.sql import insert_ignoring_duplicates
from hub_pipelines.orders.tables import products

GENERATION_KEY = "catalog:generation"


class Product(msgspec.Struct, frozen=True):
    product_id: str
    name: str
    currency: str
    unit_price_minor: int
    version: int


class UnknownProduct(LookupError):
    """A product id that is not in the catalog."""


@dataclass
class CacheStats:
    local_hits: int = 0
    shared_hits: int = 0
    database_reads: int = 0

    @property
    def lookups(self) -> int:
        return self.local_hits + self.shared_hits + self.database_reads

    @property
    def hit_rate(self) -> float:
        """Share of lookups answered by either cache level (1.0 when there were none)."""
        return (self.local_hits + self.shared_hits) / self.lookups if self.lookups else 1.0


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Product).decode


class Catalog:
    """Product lookups for price verification, and the catalog changes that invalidate them."""

    def __init__(
        self,
        database: SqlDatabase,
        cache: Cache | None = None,
        *,
        local_ttl: float = 5.0,
        shared_ttl: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.database = database
        self.cache = cache
        self.local_ttl = local_ttl
        self.shared_ttl = shared_ttl
        self.clock = clock
        self.stats = CacheStats()
        self._generation = 0
        self._local: dict[str, tuple[float, Product]] = {}
        self._lock = threading.Lock()
        self._renewing = threading.Lock()

    def refresh(self) -> int:
        """Read the shared generation; a new one empties the in-process level. Returns it."""
        generation = self._shared_generation()
        with self._lock:
            if generation != self._generation:
                self._local.clear()
                self._generation = generation
        return generation

    def reset_stats(self) -> CacheStats:
        """The counts so far, and start counting afresh (one batch's hit rate)."""
        with self._lock:
            stats, self.stats = self.stats, CacheStats()
        return stats

    def products(self, product_ids: Iterable[str]) -> dict[str, Product]:
        """The known products among `product_ids`; unknown ids are simply absent."""
        wanted = list(dict.fromkeys(product_ids))
        now = self.clock()
        with self._lock:
            generation = self._generation
            found, expired = self._local_entries(wanted, now)
        if expired:
            found.update(self._renew_expired(expired, now))
        missing = [product_id for product_id in wanted if product_id not in found]
        if missing and self.cache is not None:
            for product_id in missing:
                raw = self.cache.get(self._shared_key(generation, product_id))
                if raw is not None:
                    found[product_id] = _decode(raw)
                    self._remember(found[product_id], now)
                    with self._lock:
                        self.stats.shared_hits += 1
            missing = [product_id for product_id in missing if product_id not in found]
        if missing:
            loaded = self._load(missing)
            with self._lock:
                self.stats.database_reads += len(missing)
            if loaded and self.cache is not None:
                with self.cache.batch() as writes:
                    for product in loaded:
                        writes.set(
                            self._shared_key(generation, product.product_id),
                            _encode(product),
                            self.shared_ttl,
                        )
            for product in loaded:
                found[product.product_id] = product
                self._remember(product, now)
        return found

    def _local_entries(self, wanted: list[str], now: float) -> tuple[dict[str, Product], list[str]]:
        """The fresh entries among `wanted` (counted as hits) and the ids whose entry expired; the
        caller holds the lock."""
        found: dict[str, Product] = {}
        expired: list[str] = []
        for product_id in wanted:
            entry = self._local.get(product_id)
            if entry is None:
                continue
            if entry[0] > now:
                found[product_id] = entry[1]
                self.stats.local_hits += 1
            else:
                expired.append(product_id)
        return found, expired

    def _renew_expired(self, wanted: list[str], now: float) -> dict[str, Product]:
        """Renew every expired in-process entry, `wanted` among them, with one database read.

        Entries warmed together expire together: without this, every order touching one of them
        would read its own products back while they all expire. One thread renews; the others wait
        for it and find the renewed entries.
        """
        with self._renewing:
            with self._lock:
                found, still_expired = self._local_entries(wanted, now)
                everything_expired = [key for key, (until, _) in self._local.items() if until <= now]
            if not still_expired:
                return found
            loaded = {product.product_id: product for product in self._load(everything_expired)}
            with self._lock:
                self.stats.database_reads += len(still_expired)
                for product_id in everything_expired:
                    product = loaded.get(product_id)
                    if product is None:
                        self._local.pop(product_id, None)
                    else:
                        self._local[product_id] = (now + self.local_ttl, product)
        found.update((key, loaded[key]) for key in still_expired if key in loaded)
        return found

    def product(self, product_id: str) -> Product:
        found = self.products([product_id]).get(product_id)
        if found is None:
            raise UnknownProduct(f"unknown product {product_id!r}")
        return found

    def upsert(self, product_id: str, name: str, currency: str, unit_price_minor: int, stock: int) -> None:
        """Create or replace a product (seeding, catalog sync) and invalidate the cached catalog."""
        with self.database.transaction() as connection:
            updated = connection.execute(
                sa.update(products)
                .where(products.c.product_id == product_id)
                .values(
                    name=name,
                    currency=currency,
                    unit_price_minor=unit_price_minor,
                    stock=stock,
                    version=products.c.version + 1,
                    updated_at=sa.func.now(),
                )
            ).rowcount
            if not updated:
                connection.execute(
                    sa.insert(products).values(
                        product_id=product_id,
                        name=name,
                        currency=currency,
                        unit_price_minor=unit_price_minor,
                        stock=stock,
                    )
                )
        self.invalidate()

    def set_price(self, product_id: str, unit_price_minor: int) -> None:
        self._change(product_id, unit_price_minor=unit_price_minor)

    def restock(self, product_id: str, quantity: int) -> None:
        """Add `quantity` to the stock (a delivery arrived)."""
        self._change(product_id, stock=products.c.stock + quantity)

    def invalidate(self) -> None:
        """Make every cached catalog entry, in every process, stale."""
        if self.cache is not None:
            self.cache.incr(GENERATION_KEY)
        with self._lock:
            self._local.clear()
        self.refresh()

    def _change(self, product_id: str, **values: object) -> None:
        with self.database.transaction() as connection:
            changed = connection.execute(
                sa.update(products)
                .where(products.c.product_id == product_id)
                .values(version=products.c.version + 1, updated_at=sa.func.now(), **values)
            ).rowcount
        if not changed:
            raise UnknownProduct(f"unknown product {product_id!r}")
        self.invalidate()

    def _shared_generation(self) -> int:
        if self.cache is None:
            return self._generation
        raw = self.cache.get(GENERATION_KEY)
        return int(raw) if raw else 0

    @staticmethod
    def _shared_key(generation: int, product_id: str) -> str:
        return f"catalog:g{generation}:product:{product_id}"

    def _remember(self, product: Product, now: float) -> None:
        with self._lock:
            self._local[product.product_id] = (now + self.local_ttl, product)

    def _load(self, product_ids: list[str]) -> list[Product]:
        with self.database.transaction() as connection:
            rows = connection.execute(
                sa.select(
                    products.c.product_id,
                    products.c.name,
                    products.c.currency,
                    products.c.unit_price_minor,
                    products.c.version,
                ).where(products.c.product_id.in_(product_ids))
            ).all()
        return [Product(row[0], row[1], row[2], int(row[3]), int(row[4])) for row in rows]


def add_missing_products(database: SqlDatabase, catalog: Iterable[tuple[str, str, str, int, int]]) -> int:
    """Insert (product_id, name, currency, unit_price_minor, stock) rows whose id is not there yet."""
    rows = [
        {"product_id": p, "name": n, "currency": c, "unit_price_minor": price, "stock": stock}
        for p, n, c, price, stock in catalog
    ]
    if not rows:
        return 0
    with database.transaction() as connection:
        inserted = connection.execute(
            insert_ignoring_duplicates(products, database.dialect).returning(products.c.product_id), rows
        ).all()
    return len(inserted)
