"""The CDN in front of the published buckets: URLs per variant, and invalidation when content is replaced.

Keys are content-addressed, so a URL's bytes never change and nothing needs invalidating when new
content is published. Invalidation is only for paths an upload used to have before it was replaced
under the same logical name. `CloudFrontCdn` sends them in one batched CloudFront request (boto3);
`NoCdn` (provider `none`, local) builds the same URLs and invalidates nothing.

URLs come from one CDN domain (`base_url`: a single `cdn` URL per variant) or from a base URL per
region (`region_base_urls`: one URL per regional bucket).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import dagster as dg
from pydantic import PrivateAttr

# CloudFront accepts at most 3000 paths per invalidation request.
MAX_PATHS_PER_INVALIDATION = 3000
SINGLE_DOMAIN = "cdn"

_CLIENT_CREATION = threading.Lock()


class CdnNotConfigured(ValueError):
    """Neither a CDN base URL nor a base URL for the region was configured."""


class _CdnUrls(dg.ConfigurableResource):
    base_url: str | None = None
    region_base_urls: dict[str, str] = {}

    def urls_for(self, key: str, regions: Sequence[str]) -> dict[str, str]:
        if self.base_url:
            return {SINGLE_DOMAIN: _join(self.base_url, key)}
        missing = [region for region in regions if region not in self.region_base_urls]
        if missing:
            raise CdnNotConfigured(f"no CDN base_url and no region_base_urls entry for regions {missing}")
        return {region: _join(self.region_base_urls[region], key) for region in regions}

    def paths_for(self, keys: Sequence[str]) -> list[str]:
        """The request paths the CDN serves `keys` under (the base URL's own path included)."""
        bases = [self.base_url] if self.base_url else list(self.region_base_urls.values())
        prefixes = sorted({urlsplit(base).path.rstrip("/") for base in bases if base})
        return sorted({f"{prefix}/{quote(key)}" for prefix in prefixes or [""] for key in keys})


def _join(base: str, key: str) -> str:
    return f"{base.rstrip('/')}/{quote(key)}"


class NoCdn(_CdnUrls):
    """Provider `none`: URLs only; invalidation is a no-op (nothing caches in front of local storage)."""

    def invalidate(self, keys: Sequence[str], caller_reference: str) -> list[str]:
        return []


class CloudFrontCdn(_CdnUrls):
    """Amazon CloudFront: one distribution in front of the origin and regional buckets."""

    distribution_id: str
    endpoint_url: str | None = None
    region_name: str = "us-east-1"
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None

    _client: Any = PrivateAttr(default=None)

    @property
    def client(self) -> Any:
        with _CLIENT_CREATION:
            if self._client is None:
                import boto3

                self._client = boto3.client(
                    "cloudfront",
                    endpoint_url=self.endpoint_url,
                    region_name=self.region_name,
                    aws_access_key_id=self.aws_access_key_id,
                    aws_secret_access_key=self.aws_secret_access_key,
                )
            return self._client

    def invalidate(self, keys: Sequence[str], caller_reference: str) -> list[str]:
        paths = self.paths_for(keys)
        ids: list[str] = []
        for start in range(0, len(paths), MAX_PATHS_PER_INVALIDATION):
            batch = paths[start : start + MAX_PATHS_PER_INVALIDATION]
            # CloudFront treats a repeated CallerReference as the same request: a re-run does not
            # queue a second invalidation.
            reference = caller_reference if start == 0 else f"{caller_reference}#{start}"
            response = self.client.create_invalidation(
                DistributionId=self.distribution_id,
                InvalidationBatch={
                    "Paths": {"Quantity": len(batch), "Items": batch},
                    "CallerReference": reference,
                },
            )
            ids.append(response["Invalidation"]["Id"])
        return ids
