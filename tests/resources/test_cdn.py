from collections.abc import Iterator

import pytest
from botocore.exceptions import ClientError

from hub_pipelines.resources.media.cdn import (
    MAX_PATHS_PER_INVALIDATION,
    CdnNotConfigured,
    CloudFrontCdn,
    NoCdn,
)
from tests.fakes.cloudfront_server import CloudFrontStub, running_cloudfront_stub

DISTRIBUTION = "E2TESTDIST"


@pytest.fixture
def cloudfront() -> Iterator[CloudFrontStub]:
    with running_cloudfront_stub(DISTRIBUTION) as stub:
        yield stub


def cloudfront_cdn(stub: CloudFrontStub, distribution: str = DISTRIBUTION) -> CloudFrontCdn:
    return CloudFrontCdn(
        distribution_id=distribution,
        base_url="https://cdn.example.com/assets",
        endpoint_url=stub.endpoint_url,
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def test_one_cdn_domain_gives_one_url_per_variant() -> None:
    cdn = NoCdn(base_url="https://cdn.example.com/")
    assert cdn.urls_for("media/ab/abc.webp", ["us-east", "eu-west"]) == {
        "cdn": "https://cdn.example.com/media/ab/abc.webp"
    }


def test_base_url_per_region_gives_a_url_in_every_region() -> None:
    cdn = NoCdn(region_base_urls={"us-east": "https://us.example.com", "eu-west": "https://eu.example.com/m"})
    assert cdn.urls_for("k.jpg", ["us-east", "eu-west"]) == {
        "us-east": "https://us.example.com/k.jpg",
        "eu-west": "https://eu.example.com/m/k.jpg",
    }


def test_region_without_a_base_url_is_named_in_the_error() -> None:
    with pytest.raises(CdnNotConfigured, match="ap-southeast"):
        NoCdn(region_base_urls={"us-east": "https://us.example.com"}).urls_for(
            "k", ["us-east", "ap-southeast"]
        )


def test_provider_none_invalidates_nothing() -> None:
    assert NoCdn(base_url="https://cdn.example.com").invalidate(["a.jpg"], "ref") == []


def test_cloudfront_invalidates_all_paths_in_one_request_under_the_base_path(
    cloudfront: CloudFrontStub,
) -> None:
    ids = cloudfront_cdn(cloudfront).invalidate(["media/a.webp", "media/b.jpg"], "upload@1")
    (invalidation,) = cloudfront.invalidations
    assert ids == [invalidation.id]
    assert invalidation.paths == ["/assets/media/a.webp", "/assets/media/b.jpg"]
    assert cloudfront.requests == 1


def test_cloudfront_same_caller_reference_does_not_queue_a_second_invalidation(
    cloudfront: CloudFrontStub,
) -> None:
    cdn = cloudfront_cdn(cloudfront)
    first = cdn.invalidate(["media/a.webp"], "upload@1")
    again = cdn.invalidate(["media/a.webp"], "upload@1")
    assert first == again
    assert len(cloudfront.invalidations) == 1


def test_cloudfront_splits_paths_beyond_its_per_request_limit(cloudfront: CloudFrontStub) -> None:
    keys = [f"media/{index:05d}.jpg" for index in range(MAX_PATHS_PER_INVALIDATION + 1)]
    ids = cloudfront_cdn(cloudfront).invalidate(keys, "big")
    assert [len(made.paths) for made in cloudfront.invalidations] == [MAX_PATHS_PER_INVALIDATION, 1]
    assert len(ids) == 2


def test_cloudfront_unknown_distribution_raises_its_error(cloudfront: CloudFrontStub) -> None:
    with pytest.raises(ClientError, match="NoSuchDistribution"):
        cloudfront_cdn(cloudfront, "EMISSING").invalidate(["a"], "r")
