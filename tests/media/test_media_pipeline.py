"""The media workflow as Dagster runs it, against real clamd, SeaweedFS and SQLite."""

from __future__ import annotations

import io
import json
import secrets
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import dagster as dg
import pikepdf
import pytest
import sqlalchemy as sa

from hub_pipelines import settings
from hub_pipelines.assets.media.partitions import uploads_partitions
from hub_pipelines.core.ports import ScanVerdict
from hub_pipelines.core.webhook_signing import EVENT_HEADER, verify_signature
from hub_pipelines.jobs import media_pipeline_job
from hub_pipelines.media.publishing import IMMUTABLE_CACHE_CONTROL
from hub_pipelines.media.records import (
    media_publications,
    media_scan_verdicts,
    media_variants,
    quarantined_uploads,
)
from hub_pipelines.resources.media.cdn import CloudFrontCdn
from hub_pipelines.resources.media.scan_limits import ScanLimits
from hub_pipelines.resources.media.virus_scanner import ClamdScanner
from hub_pipelines.sensors.media import media_uploads_sensor
from tests.fakes.cloudfront_server import running_cloudfront_stub
from tests.media.corpus import encode, exotic_images, photo_like, zero_png
from tests.media.pdf_hostile import (
    active_traces,
    open_action_javascript,
    script_and_embedded_file,
    script_link_in_an_indirect_annotation_array,
)
from tests.media.pipeline_env import (
    MEDIA_ASSETS,
    MEDIA_CHECKS,
    WEBHOOK_SECRET,
    FlakyStorage,
    MediaWorld,
    failure_messages,
    materialized,
)
from tests.media.read_back import dead_letters_from, upload_outcome
from tests.media.test_video import write_clip
from tests.services import free_port
from tests.services.clamd import ClamdAddress, start_clamd
from tests.services.seaweedfs import S3Server

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
DOWNSTREAM = {"media/renditions", "media/published", "media/media_record"}


def small_jpeg(seed: int = 0) -> bytes:
    return encode(photo_like(320, 240, seed), "JPEG", quality=90)


def rows(world: MediaWorld, table: sa.Table, partition_key: str) -> list[dict]:
    with world.database.transaction() as connection:
        query = sa.select(table).where(table.c.partition_key == partition_key)
        return [dict(row) for row in connection.execute(query).mappings()]


def outcome(world: MediaWorld, partition_key: str) -> tuple[str, str | None] | None:
    return upload_outcome(world.database, partition_key)


def test_infected_upload_is_quarantined_recorded_and_stops_its_downstream(media_world: MediaWorld) -> None:
    partition = media_world.upload("holiday.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + EICAR, "image/jpeg")
    object_key = f"incoming/{partition.replace('~', '/')}"

    result = media_world.run(partition)

    assert not result.success
    assert any(
        message.startswith(f"rejected upload '{object_key}': infected: Eicar-Test-Signature")
        for message in failure_messages(result)
    )
    assert not DOWNSTREAM & materialized(result)
    uploads = media_world.storage.bucket(media_world.buckets.uploads)
    quarantine = media_world.storage.bucket(media_world.buckets.quarantine)
    assert uploads.head(object_key) is None
    assert quarantine.get(object_key).endswith(EICAR)
    (verdict,) = rows(media_world, media_scan_verdicts, partition)
    assert not verdict["clean"]
    assert verdict["signature"].startswith("Eicar-Test-Signature")
    assert verdict["quarantine_key"] == object_key
    status, reason = outcome(media_world, partition) or ("", "")
    assert status == "quarantined" and (reason or "").startswith("infected: Eicar-Test-Signature")
    (alert,) = media_world.receiver.accepted()
    assert alert.headers[EVENT_HEADER] == "media.upload.quarantined"
    assert json.loads(alert.body)["signature"] == verdict["signature"]


def test_clean_image_is_published_verified_in_every_region_and_announced(media_world: MediaWorld) -> None:
    partition = media_world.upload("cat.jpg", small_jpeg(), "image/jpeg")

    result = media_world.run(partition)

    assert result.success, failure_messages(result)
    variants = rows(media_world, media_variants, partition)
    # 320 px wide: thumbnail plus one width rung capped at the source, each in WebP, AVIF and JPEG.
    assert sorted((row["label"], row["format"]) for row in variants) == sorted(
        (label, fmt) for label in ("thumbnail", "small") for fmt in ("webp", "avif", "jpeg")
    )
    buckets = [media_world.buckets.origin, *media_world.buckets.regions.values()]
    for row in variants:
        assert row["key"].endswith(
            f"{row['checksum']}{'.jpg' if row['format'] == 'jpeg' else '.' + row['format']}"
        )
        assert row["urls"] == {"cdn": f"https://cdn.example.test/{row['key']}"}
        for bucket in buckets:
            info = media_world.storage.bucket(bucket).head(row["key"])
            assert info is not None and info.size == row["bytes"]
            assert info.cache_control == IMMUTABLE_CACHE_CONTROL
            assert info.server_side_encryption == "AES256"
    checks = {evaluation.check_name: evaluation.passed for evaluation in result.get_asset_check_evaluations()}
    assert checks == {"every_variant_in_every_region": True, "published_uploads_have_clean_scans": True}
    (delivery,) = media_world.receiver.accepted()
    assert verify_signature(WEBHOOK_SECRET, delivery.headers, delivery.body)
    body = json.loads(delivery.body)
    assert {variant["key"] for variant in body["variants"]} == {row["key"] for row in variants}


def test_regional_copy_failing_twice_then_succeeding_is_published(media_world: MediaWorld) -> None:
    partition = media_world.upload("retry.jpg", small_jpeg(1), "image/jpeg")
    eu_west = media_world.buckets.regions["eu-west"]
    flaky = FlakyStorage(media_world.storage, failing=[eu_west], times=2)

    result = media_world.run(partition, objects=flaky)

    assert result.success, failure_messages(result)
    assert flaky.failures == {eu_west: 2}
    for row in rows(media_world, media_variants, partition):
        assert media_world.storage.bucket(eu_west).head(row["key"]) is not None
    assert len(rows(media_world, media_publications, partition)) == 1


def test_regional_copy_that_keeps_failing_records_nothing_and_fails_naming_the_region(
    media_world: MediaWorld,
) -> None:
    partition = media_world.upload("doomed.jpg", small_jpeg(2), "image/jpeg")
    ap_southeast = media_world.buckets.regions["ap-southeast"]
    flaky = FlakyStorage(media_world.storage, failing=[ap_southeast])

    result = media_world.run(
        partition, objects=flaky, media_settings=media_world.media_settings(publish_attempts=3)
    )

    assert not result.success
    (message,) = failure_messages(result)
    assert "publish of upload 'incoming/" in message and "nothing recorded" in message
    assert f"ap-southeast ({ap_southeast})" in message and "SlowDown" in message
    # Three tries of every variant's copy into the failing region.
    assert flaky.failures[ap_southeast] == 3 * 6
    assert "media/media_record" not in materialized(result)
    assert rows(media_world, media_publications, partition) == []
    assert rows(media_world, media_variants, partition) == []
    assert media_world.receiver.received == []


def test_scanner_down_fails_after_its_retries_and_publishes_nothing(media_world: MediaWorld) -> None:
    partition = media_world.upload("unscanned.jpg", small_jpeg(3), "image/jpeg")
    nobody = ClamdScanner(host="127.0.0.1", port=free_port(), timeout_seconds=1)

    result = media_world.run(
        partition, scanner=nobody, media_settings=media_world.media_settings(scan_attempts=2)
    )

    assert not result.success
    (message,) = failure_messages(result)
    assert "scanner unavailable after 2 tries" in message
    assert not DOWNSTREAM & materialized(result)
    assert rows(media_world, media_scan_verdicts, partition) == []


def keys_of(world: MediaWorld, partition_key: str) -> list[str]:
    return sorted(row["key"] for row in rows(world, media_variants, partition_key))


def metadata_of(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    (event,) = [
        event
        for event in result.get_asset_materialization_events()
        if event.asset_key and "/".join(event.asset_key.path) == asset
    ]
    return {name: value.value for name, value in event.materialization.metadata.items()}


def test_rematerializing_a_video_upload_reproduces_its_keys_without_duplicate_rows(
    media_world: MediaWorld, tmp_path: Path
) -> None:
    clip = write_clip(tmp_path / "clip.mp4", 320, 240, seconds=1.0)
    partition = media_world.upload("clip.mp4", clip.read_bytes(), "video/mp4")

    first = media_world.run(partition)
    assert first.success, failure_messages(first)
    keys = keys_of(media_world, partition)
    again = media_world.run(partition)

    assert again.success, failure_messages(again)
    assert keys_of(media_world, partition) == keys
    assert len(rows(media_world, media_publications, partition)) == 1
    labels = [(row["label"], row["format"]) for row in rows(media_world, media_variants, partition)]
    assert sorted(labels) == [("240p", "mp4"), ("poster", "jpeg"), ("thumbnail", "jpeg")]
    rendered = metadata_of(first, "media/renditions")
    assert rendered["kind"] == "video" and rendered["realtime_factor"] > 0
    assert metadata_of(again, "media/renditions")["reused_staged_renditions"] is True
    assert metadata_of(again, "media/published")["copies_made"] == 0


def test_replacing_an_upload_invalidates_its_old_paths_in_one_cloudfront_request(
    media_world: MediaWorld,
) -> None:
    partition = media_world.upload("avatar.jpg", small_jpeg(4), "image/jpeg")
    object_key = f"incoming/{partition.replace('~', '/')}"
    with running_cloudfront_stub("E2MEDIA") as cloudfront:
        cdn = CloudFrontCdn(
            distribution_id="E2MEDIA",
            base_url="https://cdn.example.test",
            endpoint_url=cloudfront.endpoint_url,
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )
        assert media_world.run(partition, cdn=cdn).success
        old_keys = keys_of(media_world, partition)
        assert cloudfront.invalidations == []

        media_world.storage.bucket(media_world.buckets.uploads).put(
            object_key, small_jpeg(5), content_type="image/jpeg"
        )
        result = media_world.run(partition, cdn=cdn)

    assert result.success, failure_messages(result)
    new_keys = keys_of(media_world, partition)
    assert not set(new_keys) & set(old_keys)
    (invalidation,) = cloudfront.invalidations
    assert invalidation.paths == sorted(f"/{key}" for key in old_keys)
    assert metadata_of(result, "media/media_record")["cdn_invalidations"] == [invalidation.id]


def test_webhook_refused_on_every_try_is_dead_lettered_and_the_record_stands(media_world: MediaWorld) -> None:
    partition = media_world.upload("quiet.jpg", small_jpeg(6), "image/jpeg")
    media_world.receiver.always_fail(503)

    result = media_world.run(partition)

    assert result.success, failure_messages(result)
    assert len(media_world.receiver.received) == 3
    assert metadata_of(result, "media/media_record")["webhook"] == "dead_lettered"
    (letter,) = [
        row
        for row in dead_letters_from(media_world.database, "media_webhook")
        if partition in row["event_id"]
    ]
    assert "failed after 3 tries" in letter["reason"]
    assert json.loads(letter["payload"])["upload"]["partition_key"] == partition
    assert len(rows(media_world, media_publications, partition)) == 1


def test_upload_flows_from_the_sensor_to_every_region_and_a_signed_webhook(
    media_world: MediaWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    sensor_bucket = f"sensed-{secrets.token_hex(3)}"
    media_world.storage.create_bucket(sensor_bucket)
    monkeypatch.setattr(settings, "UPLOADS_BUCKET", sensor_bucket)
    brochure = pikepdf.new()
    brochure.add_blank_page()
    pdf = io.BytesIO()
    brochure.save(pdf)
    media_world.storage.bucket(sensor_bucket).put("incoming/2026/brochure v2.pdf", pdf.getvalue())
    defs = dg.Definitions(
        assets=MEDIA_ASSETS,
        asset_checks=MEDIA_CHECKS,
        jobs=[media_pipeline_job],
        sensors=[media_uploads_sensor],
        resources=media_world.resources(),
    )
    instance = media_world.instance

    sensor_resources = {"objects": media_world.storage, "database": media_world.database}
    with dg.build_sensor_context(instance=instance, resources=sensor_resources) as context:
        tick = media_uploads_sensor(context)

    assert isinstance(tick, dg.SensorResult)
    for request in tick.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys or []))
    (run_request,) = tick.run_requests or []
    partition = run_request.partition_key
    assert partition in instance.get_dynamic_partitions(uploads_partitions.name)
    result = defs.resolve_job_def("media_pipeline").execute_in_process(
        partition_key=partition, instance=instance, tags=run_request.tags, raise_on_error=False
    )
    assert result.success, failure_messages(result)
    (row,) = rows(media_world, media_variants, partition)
    assert (row["label"], row["format"], row["kind"]) == ("document", "pdf", "document")
    for bucket in [media_world.buckets.origin, *media_world.buckets.regions.values()]:
        assert media_world.storage.bucket(bucket).head(row["key"]) is not None
    (delivery,) = media_world.receiver.accepted()
    assert verify_signature(WEBHOOK_SECRET, delivery.headers, delivery.body)
    assert json.loads(delivery.body)["upload"]["object_key"] == "incoming/2026/brochure v2.pdf"


class CountingScanner:
    """The real clamd scanner, counting the uploads handed to it."""

    def __init__(self, scanner: ClamdScanner) -> None:
        self.scanner = scanner
        self.scanned: list[str] = []

    def scan(self, chunks: Iterable[bytes], name: str) -> ScanVerdict:
        self.scanned.append(name)
        return self.scanner.scan(chunks, name)


def test_zero_png_bomb_is_rejected_before_the_scan_without_invoking_the_scanner(
    media_world: MediaWorld,
) -> None:
    partition = media_world.upload("zeros.png", zero_png(20000, 20000), "image/png")
    object_key = f"incoming/{partition.replace('~', '/')}"
    scanner = CountingScanner(ClamdScanner(host=media_world.clamd.host, port=media_world.clamd.port))

    result = media_world.run(partition, scanner=scanner)

    assert not result.success
    (message,) = failure_messages(result)
    assert message.startswith(f"rejected upload '{object_key}': image over a limit: ")
    assert "400000000 pixels" in message
    assert scanner.scanned == []
    assert not {"media/scan_verdict", *DOWNSTREAM} & materialized(result)
    assert rows(media_world, media_scan_verdicts, partition) == []
    status, reason = outcome(media_world, partition) or ("", "")
    assert status == "rejected" and (reason or "").startswith("image over a limit: ")


def test_clean_upload_is_scanned_once_after_passing_the_limits(media_world: MediaWorld) -> None:
    partition = media_world.upload("small.jpg", small_jpeg(7), "image/jpeg")
    object_key = f"incoming/{partition.replace('~', '/')}"
    scanner = CountingScanner(ClamdScanner(host=media_world.clamd.host, port=media_world.clamd.port))

    result = media_world.run(partition, scanner=scanner)

    assert result.success, failure_messages(result)
    assert scanner.scanned == [object_key]


def test_pdf_with_script_and_embedded_file_is_published_inert_and_the_removal_recorded(
    media_world: MediaWorld,
) -> None:
    original = script_and_embedded_file()
    assert active_traces(original)
    partition = media_world.upload("invoice.pdf", original, "application/pdf")

    result = media_world.run(partition)

    assert result.success, failure_messages(result)
    (row,) = rows(media_world, media_variants, partition)
    assert row["active_content_removed"] == {"embedded_files": 1, "javascript": 1}
    assert metadata_of(result, "media/renditions")["active_content_removed"] == row["active_content_removed"]
    for bucket in [media_world.buckets.origin, *media_world.buckets.regions.values()]:
        assert active_traces(media_world.storage.bucket(bucket).get(row["key"])) == []


def test_pdf_whose_script_link_sits_in_an_indirect_annotation_array_reaches_no_region_active(
    media_world: MediaWorld,
) -> None:
    original = script_link_in_an_indirect_annotation_array()
    partition = media_world.upload("statement.pdf", original, "application/pdf")

    result = media_world.run(partition)

    assert result.success, failure_messages(result)
    (row,) = rows(media_world, media_variants, partition)
    assert row["active_content_removed"] == {"javascript": 1}
    for bucket in [media_world.buckets.origin, *media_world.buckets.regions.values()]:
        assert active_traces(media_world.storage.bucket(bucket).get(row["key"])) == []


def test_reject_setting_refuses_a_pdf_with_active_content_and_publishes_nothing(
    media_world: MediaWorld,
) -> None:
    partition = media_world.upload("macro.pdf", open_action_javascript(), "application/pdf")
    object_key = f"incoming/{partition.replace('~', '/')}"

    result = media_world.run(
        partition, media_settings=media_world.media_settings(pdf_active_content="reject")
    )

    assert not result.success
    (message,) = failure_messages(result)
    assert message.startswith(f"rejected upload '{object_key}': pdf: active content (javascript 1)")
    status, reason = outcome(media_world, partition) or ("", "")
    assert status == "rejected" and (reason or "").startswith("pdf: active content (javascript 1)")
    assert not {"media/published", "media/media_record"} & materialized(result)
    assert rows(media_world, media_variants, partition) == []


def test_heic_photo_claimed_as_video_is_published_as_image_variants(media_world: MediaWorld) -> None:
    partition = media_world.upload("IMG_0001.HEIC", exotic_images()["iphone.heic"], "video/mp4")

    result = media_world.run(partition)

    assert result.success, failure_messages(result)
    rendered = metadata_of(result, "media/renditions")
    assert (rendered["kind"], rendered["detected_mime"], rendered["mime_mismatch"]) == (
        "image",
        "image/heic",
        True,
    )
    variants = rows(media_world, media_variants, partition)
    assert {row["kind"] for row in variants} == {"image"}
    assert {row["format"] for row in variants} == {"webp", "avif", "jpeg"}


def test_rejection_of_a_name_with_a_bidi_override_shows_it_escaped(media_world: MediaWorld) -> None:
    partition = media_world.upload("invoice\u202efdp.exe", b"MZ\x90\x00 not a picture", "image/jpeg")

    result = media_world.run(partition)

    assert not result.success
    (message,) = failure_messages(result)
    assert message.isprintable()
    assert "invoice\\u202efdp.exe" in message and "unsupported media type" in message
    assert outcome(media_world, partition) == (
        "rejected",
        "unsupported media type application/vnd.microsoft.portable-executable (claimed image/jpeg)",
    )
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE" and event.step_failure_data:
            failure = event.step_failure_data.user_failure_data
            assert failure is None or all(
                str(value.value).isprintable() for value in failure.metadata.values()
            )


# Small enough for a few MiB of archive to pass; clamd's own limits answer, not the client's stream cut.
SMALL_SCAN_LIMITS = ScanLimits(max_stream_bytes=8 << 20, max_file_bytes=1 << 20, max_scan_bytes=2 << 20)


@pytest.fixture(scope="module")
def clamd_with_small_limits(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClamdAddress]:
    with start_clamd(tmp_path_factory.mktemp("clamd-media-limits"), SMALL_SCAN_LIMITS) as address:
        yield address


def sse_of(s3_server: S3Server, bucket: str, key: str) -> str | None:
    """The encryption the server reports for an object, asked by a client of the test's own."""
    return s3_server.client().head_object(Bucket=bucket, Key=key).get("ServerSideEncryption")


def test_upload_clamd_cannot_scan_in_full_is_quarantined_encrypted_and_recorded(
    media_world: MediaWorld, clamd_with_small_limits: ClamdAddress, s3_server: S3Server
) -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as parts:
        for index in range(4):
            parts.writestr(f"part-{index}.bin", bytes(900 << 10))
    partition = media_world.upload("parts.zip", archive.getvalue(), "application/zip")
    object_key = f"incoming/{partition.replace('~', '/')}"
    scanner = ClamdScanner(
        host=clamd_with_small_limits.host, port=clamd_with_small_limits.port, limits=SMALL_SCAN_LIMITS
    )

    result = media_world.run(partition, scanner=scanner)

    assert not result.success
    (message,) = failure_messages(result)
    assert message == f"rejected upload '{object_key}': not scannable: limit MaxScanSize"
    assert not DOWNSTREAM & materialized(result)
    assert media_world.storage.bucket(media_world.buckets.uploads).head(object_key) is None
    (verdict,) = rows(media_world, media_scan_verdicts, partition)
    assert verdict["quarantine_key"] == object_key
    assert outcome(media_world, partition) == ("quarantined", "not scannable: limit MaxScanSize")
    assert quarantined_uploads(media_world.database) == {"infected": 0, "not_scannable": 1}
    assert sse_of(s3_server, media_world.buckets.quarantine, object_key) == "AES256"
    assert media_world.storage.bucket(media_world.buckets.quarantine).get(object_key) == archive.getvalue()


def test_published_upload_is_recorded_published_and_its_staging_and_manifests_are_encrypted(
    media_world: MediaWorld, s3_server: S3Server
) -> None:
    partition = media_world.upload("encrypted.jpg", small_jpeg(8), "image/jpeg")

    result = media_world.run(partition)

    assert result.success, failure_messages(result)
    assert outcome(media_world, partition) == ("published", None)
    staging = media_world.storage.bucket(media_world.buckets.uploads)
    staged = [info.key for info in staging.list_after(f"staging/{partition}/")]
    manifests = {key.rsplit("/", 1)[1] for key in staged if key.endswith(".json")}
    assert manifests == {"manifest.json", "publication.json"}
    assert len(staged) > len(rows(media_world, media_variants, partition)) + 1
    for key in staged:
        assert sse_of(s3_server, media_world.buckets.uploads, key) == "AES256", key
    for row in rows(media_world, media_variants, partition):
        for bucket in [media_world.buckets.origin, *media_world.buckets.regions.values()]:
            assert sse_of(s3_server, bucket, row["key"]) == "AES256"


def test_upload_rescanned_after_a_limit_rejection_is_no_longer_recorded_rejected(
    media_world: MediaWorld,
) -> None:
    partition = media_world.upload("wide.jpg", small_jpeg(9), "image/jpeg")
    refused = media_world.run(partition, media_settings=media_world.media_settings(max_image_pixels=1000))
    assert not refused.success
    assert (outcome(media_world, partition) or ("",))[0] == "rejected"
    ap_southeast = media_world.buckets.regions["ap-southeast"]

    # The runbook's retry: the limit raised, the scan and everything after it re-materialized; here the
    # publish then fails, so the upload is in the pipeline again, neither rejected nor published.
    def rescan(**overrides: object) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            [*MEDIA_ASSETS, *MEDIA_CHECKS],
            selection=dg.AssetSelection.assets(["media", "scan_verdict"]).downstream(),
            partition_key=partition,
            resources=media_world.resources(**overrides),
            instance=media_world.instance,
            raise_on_error=False,
        )

    stalled = rescan(
        objects=FlakyStorage(media_world.storage, failing=[ap_southeast]),
        media_settings=media_world.media_settings(publish_attempts=1),
    )
    assert not stalled.success
    assert "media/scan_verdict" in materialized(stalled)
    assert outcome(media_world, partition) == ("landed", None)

    published_run = rescan()
    assert published_run.success, failure_messages(published_run)
    assert "media/uploads" not in materialized(published_run)
    assert outcome(media_world, partition) == ("published", None)
