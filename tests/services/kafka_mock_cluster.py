"""librdkafka's mock cluster with its brokers under the caller's control, through ctypes.

Hand-written because no library exposes it: confluent-kafka's Python API creates the mock cluster only
implicitly (`test.mock.num.brokers`) and offers no handle on it, so a broker can be neither taken down
nor brought back. librdkafka's C API can (`rd_kafka_mock_cluster_new`, `rd_kafka_mock_broker_set_down`,
`rd_kafka_mock_broker_set_up`), and the librdkafka shipped inside the confluent-kafka wheel exports it;
this module loads that same library, so the cluster and every client of the process share one build.

A broker set down closes its connections and refuses new ones; clients see it unreachable and retry
until it is set up again (the cluster's topics and offsets survive, as on a broker restart).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path

import confluent_kafka

# rd_kafka_type_t: the mock cluster needs a client handle to live in; a producer is the lightest.
_RD_KAFKA_PRODUCER = 0
_ERRSTR_SIZE = 512


class MockClusterFailed(RuntimeError):
    """librdkafka refused to create or drive its mock cluster."""


def _librdkafka() -> ctypes.CDLL:
    libs = Path(confluent_kafka.__file__).parent.parent / "confluent_kafka.libs"
    found = sorted(libs.glob("librdkafka*.so*"))
    if not found:
        raise MockClusterFailed(f"no librdkafka in {libs}: confluent-kafka is not the manylinux wheel")
    lib = ctypes.CDLL(str(found[0]))
    lib.rd_kafka_conf_new.restype = ctypes.c_void_p
    lib.rd_kafka_conf_set.argtypes = [
        ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t,
    ]  # fmt: skip
    lib.rd_kafka_conf_set.restype = ctypes.c_int
    lib.rd_kafka_new.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    lib.rd_kafka_new.restype = ctypes.c_void_p
    lib.rd_kafka_destroy.argtypes = [ctypes.c_void_p]
    lib.rd_kafka_mock_cluster_new.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.rd_kafka_mock_cluster_new.restype = ctypes.c_void_p
    lib.rd_kafka_mock_cluster_bootstraps.argtypes = [ctypes.c_void_p]
    lib.rd_kafka_mock_cluster_bootstraps.restype = ctypes.c_char_p
    lib.rd_kafka_mock_cluster_destroy.argtypes = [ctypes.c_void_p]
    for name in ("rd_kafka_mock_broker_set_down", "rd_kafka_mock_broker_set_up"):
        function = getattr(lib, name)
        function.argtypes = [ctypes.c_void_p, ctypes.c_int32]
        function.restype = ctypes.c_int
    lib.rd_kafka_err2str.argtypes = [ctypes.c_int]
    lib.rd_kafka_err2str.restype = ctypes.c_char_p
    return lib


@dataclass
class MockCluster:
    """A running mock cluster; brokers are numbered from 1."""

    bootstrap_servers: str
    brokers: int
    _lib: ctypes.CDLL
    _client: int
    _cluster: int

    @classmethod
    def start(cls, brokers: int = 1) -> MockCluster:
        lib = _librdkafka()
        errors = ctypes.create_string_buffer(_ERRSTR_SIZE)
        conf = lib.rd_kafka_conf_new()
        # The handle's own logs would go to stderr; the cluster logs nothing the tests need.
        if lib.rd_kafka_conf_set(conf, b"log_level", b"3", errors, _ERRSTR_SIZE) != 0:
            raise MockClusterFailed(f"log_level: {errors.value.decode()}")
        client = lib.rd_kafka_new(_RD_KAFKA_PRODUCER, conf, errors, _ERRSTR_SIZE)
        if not client:
            raise MockClusterFailed(f"rd_kafka_new: {errors.value.decode()}")
        cluster = lib.rd_kafka_mock_cluster_new(client, brokers)
        if not cluster:
            lib.rd_kafka_destroy(client)
            raise MockClusterFailed(f"rd_kafka_mock_cluster_new with {brokers} brokers failed")
        bootstrap = lib.rd_kafka_mock_cluster_bootstraps(cluster).decode()
        return cls(bootstrap, brokers, lib, client, cluster)

    def _call(self, name: str, broker: int) -> None:
        error = getattr(self._lib, name)(self._cluster, broker)
        if error != 0:
            raise MockClusterFailed(f"{name}({broker}): {self._lib.rd_kafka_err2str(error).decode()}")

    def set_down(self, broker: int = 1) -> None:
        """Broker `broker` drops its connections and refuses new ones until `set_up`."""
        self._call("rd_kafka_mock_broker_set_down", broker)

    def set_up(self, broker: int = 1) -> None:
        self._call("rd_kafka_mock_broker_set_up", broker)

    def stop(self) -> None:
        if self._cluster:
            self._lib.rd_kafka_mock_cluster_destroy(self._cluster)
            self._cluster = 0
        if self._client:
            self._lib.rd_kafka_destroy(self._client)
            self._client = 0
