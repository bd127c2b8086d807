"""The kubelet's pod-resources v1 List on a unix socket, answering whatever pods a test put there."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]

from esnode_agent.podresources import api_pb2, api_pb2_grpc


class Kubelet(api_pb2_grpc.PodResourcesListerServicer):  # type: ignore[misc]
    """The kubelet's side of List: the test's pods; ``fail`` answers UNAVAILABLE, as a restart does."""

    def __init__(self) -> None:
        self.pods: list[api_pb2.PodResources] = []
        self.calls = 0
        self.fail = False

    def List(  # noqa: N802 (the RPC's name)
        self, request: api_pb2.ListPodResourcesRequest, context: Any
    ) -> api_pb2.ListPodResourcesResponse:
        self.calls += 1
        if self.fail:
            context.abort(grpc.StatusCode.UNAVAILABLE, "kubelet restarting")
        return api_pb2.ListPodResourcesResponse(pod_resources=self.pods)


def serve(kubelet: Kubelet, path: Path) -> Any:
    """A started gRPC server for ``kubelet`` on the unix socket ``path``; the caller stops it."""
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    api_pb2_grpc.add_PodResourcesListerServicer_to_server(kubelet, server)
    server.add_insecure_port(f"unix://{path}")
    server.start()
    return server


@contextmanager
def serving_kubelet(path: Path) -> Iterator[Kubelet]:
    kubelet = Kubelet()
    server = serve(kubelet, path)
    try:
        yield kubelet
    finally:
        server.stop(grace=None)
