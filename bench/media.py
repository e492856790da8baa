"""Media benchmark: images and video beside their anchors, then scan and publish throughput.

1. Images and video: runs `bench/media_images.py` (ours vs pyvips, WebP/AVIF vs JPEG at equal SSIM)
   and `bench/media_video.py` (the ladder vs the ffmpeg CLI, realtime factors) and prints their output.
2. Scan: MB/s streamed through a real clamd (INSTREAM, 64 KiB pieces, the shipped EICAR-only
   database) for photo-sized and video-sized uploads of incompressible bytes. With production
   signature sets clamd does more work per byte; rerun against such a clamd (HUB_BENCH_CLAMD).
3. Publish: MB/s of `publish_staged` (server-side copies, verified, 3 regions, bounded concurrency)
   on SeaweedFS, beside bare `copy_object` calls of the same objects at the same concurrency (no
   verification, no skip check): the anchor is what the storage itself can do.

Starts its own clamd and SeaweedFS (from the test suite's service helpers) unless HUB_BENCH_CLAMD=host:port
is set for clamd. Run: `uv run python bench/media.py [--skip-images] [--skip-video] [--video-seconds 60]`.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import numpy as np

from hub_pipelines.core.retry import RetryPolicy
from hub_pipelines.media.manifests import StagedVariant
from hub_pipelines.media.publishing import IMMUTABLE_CACHE_CONTROL, publish_staged, transient_storage_error
from hub_pipelines.resources.media.virus_scanner import ClamdScanner
from hub_pipelines.resources.object_storage import S3ObjectStorage

BENCH = Path(__file__).parent
REGIONS = ("us-east", "eu-west", "ap-southeast")


def run_sub_bench(script: str, args: list[str]) -> None:
    print(f"\n===== {script} {' '.join(args)}".rstrip(), flush=True)
    subprocess.run([sys.executable, str(BENCH / script), *args], check=False)


@contextlib.contextmanager
def clamd() -> Iterator[tuple[str, int]]:
    existing = os.environ.get("HUB_BENCH_CLAMD")
    if existing:
        host, _, port = existing.rpartition(":")
        yield host, int(port)
        return
    from tests.services.clamd import start_clamd

    with (
        tempfile.TemporaryDirectory(prefix="bench-clamd-") as folder,
        start_clamd(Path(folder)) as address,
    ):
        yield address.host, address.port


@contextlib.contextmanager
def seaweedfs() -> Iterator[S3ObjectStorage]:
    from tests.services import free_port, start_process, stop_process, wait_until
    from tests.services.seaweedfs import S3Server, accepts_encrypted_put, weed_arguments

    weed = str(Path(sys.executable).parent / "weed")
    with tempfile.TemporaryDirectory(prefix="bench-weed-") as root:
        folder = Path(root)
        (folder / "data").mkdir()
        (folder / "tmp").mkdir()
        names = ("master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "s3", "s3.grpc")
        ports = {name: free_port() for name in names}
        server = S3Server(f"http://127.0.0.1:{ports['s3']}", "bench", secrets.token_hex(16))
        identity = {"name": "bench", "credentials": [{"accessKey": server.access_key, "secretKey": server.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"]}  # fmt: skip
        (folder / "s3.json").write_text(json.dumps({"identities": [identity]}))
        environment = {**os.environ, "TMPDIR": str(folder / "tmp"), "WEED_S3_SSE_KEK": secrets.token_hex(32),
                       "WEED_MASTER_VOLUME_GROWTH_COPY_1": "1"}  # fmt: skip
        process = start_process(weed_arguments(weed, folder, folder / "s3.json", ports), folder / "weed.log",
                                env=environment, cwd=folder)  # fmt: skip
        try:
            wait_until(lambda: accepts_encrypted_put(server), "seaweedfs", timeout=60, process=process)
            yield S3ObjectStorage(
                endpoint_url=server.endpoint_url,
                aws_access_key_id=server.access_key,
                aws_secret_access_key=server.secret_key,
                region_name="us-east-1",
            )
        finally:
            stop_process(process, grace=1.0)


def incompressible(size: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def chunks_of(data: bytes, size: int = 1 << 20) -> Iterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(data), size):
        yield bytes(view[start : start + size])


def bench_scan(repeat: int) -> None:
    print("\n===== scan throughput (clamd INSTREAM)", flush=True)
    with clamd() as (host, port):
        scanner = ClamdScanner(host=host, port=port, timeout_seconds=120)
        print(f"{'upload':14} {'MB':>6} {'median s':>9} {'MB/s':>8}")
        for label, size in (("photo 4 MB", 4 << 20), ("video 64 MB", 64 << 20)):
            data = incompressible(size, 1)
            times = []
            for _ in range(repeat):
                started = time.perf_counter()
                verdict = scanner.scan(chunks_of(data), label)
                times.append(time.perf_counter() - started)
                assert verdict.clean and verdict.scanned_bytes == size
            median = statistics.median(times)
            print(f"{label:14} {size / 1e6:6.1f} {median:9.3f} {size / 1e6 / median:8.1f}")


def bench_publish(repeat: int, concurrency: int) -> None:
    print(
        f"\n===== publish throughput (SeaweedFS, origin + {len(REGIONS)} regions, concurrency {concurrency})"
    )
    with seaweedfs() as storage:
        tag = secrets.token_hex(2)
        names = {"staging": f"staging-{tag}", "origin": f"origin-{tag}"}
        names.update({region: f"{region}-{tag}" for region in REGIONS})
        for name in names.values():
            storage.create_bucket(name)
        staging = storage.bucket(names["staging"])
        client = boto3.client("s3", endpoint_url=storage.endpoint_url, aws_access_key_id=storage.aws_access_key_id,
                              aws_secret_access_key=storage.aws_secret_access_key, region_name="us-east-1")  # fmt: skip
        policy = RetryPolicy(attempts=3, initial_wait=0.1, retry_on=(transient_storage_error,))
        print(
            f"{'round':6} {'variants':>8} {'MB':>6} {'ours s':>7} {'MB/s':>7} {'bare s':>7} {'MB/s':>7} {'ratio':>6}"
        )
        for round_number in range(repeat):
            variants = []
            # An upload's worth: 12 image variants of 50-400 KB and a 3-rung video ladder of 4-16 MB.
            sizes = [50_000 * (1 + index % 8) for index in range(12)] + [4 << 20, 8 << 20, 16 << 20]
            for index, size in enumerate(sizes):
                data = incompressible(size, 1000 * round_number + index)
                sha, md5 = (
                    hashlib.sha256(data).hexdigest(),
                    hashlib.md5(data, usedforsecurity=False).hexdigest(),
                )
                staged_key = f"staged/{round_number}/{index}.bin"
                staging.put(staged_key, data, content_type="application/octet-stream",
                            cache_control=IMMUTABLE_CACHE_CONTROL, metadata={"sha256": sha})  # fmt: skip
                variants.append(StagedVariant(label=str(index), format="bin", kind="bench", mime="application/octet-stream",
                                              extension=".bin", width=0, height=0, bytes=size, sha256=sha, md5=md5,
                                              staged_key=staged_key, encode_seconds=0.0))  # fmt: skip
            total = sum(sizes) * (1 + len(REGIONS))
            started = time.perf_counter()
            publish_staged(
                "bench", variants, staging, storage.bucket(names["origin"]),
                {region: storage.bucket(names[region]) for region in REGIONS},
                key_prefix=f"ours/{round_number}/", policy=policy, max_concurrency=concurrency,
            )  # fmt: skip
            ours = time.perf_counter() - started

            def bare(target: str, source: tuple[str, str], key: str) -> None:
                client.copy_object(Bucket=target, Key=key, CopySource={"Bucket": source[0], "Key": source[1]},
                                   ServerSideEncryption="AES256", MetadataDirective="COPY")  # fmt: skip

            started = time.perf_counter()
            with ThreadPoolExecutor(concurrency) as pool:
                keys = [f"bare/{round_number}/{variant.sha256}" for variant in variants]
                list(pool.map(lambda pair: bare(names["origin"], (names["staging"], pair[0].staged_key), pair[1]),
                              zip(variants, keys, strict=True)))  # fmt: skip
                jobs = [(names[region], key) for key in keys for region in REGIONS]
                list(pool.map(lambda job: bare(job[0], (names["origin"], job[1]), job[1]), jobs))
            anchor = time.perf_counter() - started
            print(f"{round_number:6} {len(variants):8} {total / 1e6:6.1f} {ours:7.2f} {total / 1e6 / ours:7.1f} "
                  f"{anchor:7.2f} {total / 1e6 / anchor:7.1f} {ours / anchor:5.2f}x")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--skip-images", action="store_true")
    parser.add_argument("--skip-video", action="store_true")
    parser.add_argument("--video-seconds", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    if not args.skip_images:
        run_sub_bench("media_images.py", ["--repeat", str(args.repeat)])
    if not args.skip_video:
        run_sub_bench("media_video.py", ["--seconds", str(args.video_seconds)])
    bench_scan(args.repeat)
    bench_publish(args.repeat, args.concurrency)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
