"""Moving to a cluster: streams a single-replica release declared (R1) are raised to R3 by the
first service of a release configured with ROUTINES_NATS_STREAM_REPLICAS=3, messages kept."""

from __future__ import annotations

import pytest

from shared.bus import RUNS_STREAM, Subjects, stream_configs
from shared.settings import CommonSettings
from tests.production.buses import connected_bus, nats_only_settings
from tests.production.servers import NATS_PASSWORDS, NatsCluster
from tests.support import wait_until

pytestmark = pytest.mark.production


def settings(cluster: NatsCluster, replicas: int) -> CommonSettings:
    return nats_only_settings(
        cluster.url,
        nats_stream_replicas=replicas,
        nats_user="routines-api",
        nats_password=NATS_PASSWORDS["api"],
    )


async def test_streams_declared_at_r1_are_raised_to_r3(nats_cluster: NatsCluster) -> None:
    async with connected_bus(settings(nats_cluster, 1), "r1", timeout=30) as old:
        for config in stream_configs(1):
            assert (await old.stream_info(str(config.name))).config.num_replicas == 1
        await old.publish_acked(Subjects.RUNS_REQUESTED, {}, timeout=5.0)
    async with connected_bus(settings(nats_cluster, 3), "r3", timeout=30) as new:
        for config in stream_configs(3):
            assert (await new.stream_info(str(config.name))).config.num_replicas == 3, config.name

            async def replicated(name: str = str(config.name)) -> bool:
                # The raise is asynchronous: a leader, and two replicas caught up.
                cluster = (await new.stream_info(name)).cluster
                return (
                    cluster is not None
                    and cluster.leader is not None
                    and len([p for p in cluster.replicas or [] if p.current]) == 2
                )

            await wait_until(replicated, timeout=30, interval=0.2)
        assert (await new.stream_info(RUNS_STREAM)).state.messages == 1
