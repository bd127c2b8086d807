"""Real processes behind kwok's fake pods: the esnode agents and operator a cluster would run.

kwok marks pods Running without running anything. This runner watches the pods of the agent
DaemonSets and of the chart's operator Deployment and, for each one on a kwok node, starts the
container's console script (the image's entrypoint) as the kubelet would: the pod's args and env
(fieldRefs resolved, secretKeyRefs and configMapKeyRefs read through the API, $(NAME) expanded as
the kubelet does), its ConfigMap, Secret and projected volumes written out as files (and the
paths in an agent's web config file translated to them), hostPath volumes mapped to
this machine (the kubelet's directory to the node's own, with its pod-resources server), and a
token of its ServiceAccount bound to the pod. What a pod's own network namespace would give, a
process here gets by address: it listens on the pod's IP (loopback, see scripts/testenv) instead
of 0.0.0.0. The process stops when the pod goes. The Services' EndpointSlices are
written here too (loopback_endpointslices.py: the apiserver refuses loopback endpoint IPs). Each kwok node also gets a kubelet
pod-resources gRPC server that assigns GPUs to the pods on it that request nvidia.com/gpu.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import threading
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import child_process
import grpc  # type: ignore[import-untyped]
import yaml
from kubelet_expansion import expand
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from loopback_endpointslices import LoopbackEndpointSlices
from loopback_guard import require_loopback

from esnode_agent.gpu.sim_backend import FakeNvml
from esnode_agent.gpu.sim_profile import load_profile
from esnode_agent.podresources import api_pb2, api_pb2_grpc

BIN = Path(sys.executable).parent
# image repository basename -> its ENTRYPOINT (Dockerfile.agent, Dockerfile.operator)
ENTRYPOINTS = {"esnode-agent": BIN / "esnode-agent", "esnode-operator": BIN / "esnode-operator"}
SELECTORS = (
    "app.kubernetes.io/name=esnode-agent",
    "app.kubernetes.io/component=operator",
    "app.kubernetes.io/component=uninstall",  # the chart's pre-delete hook pod
)
KUBELET_DIR = "/var/lib/kubelet"
# The capper's state (children/daemonset.py): per node, never this machine's.
ESNODE_HOST_DIR = "/var/lib/esnode"
GPU_RESOURCE = "nvidia.com/gpu"
TOKEN_AUDIENCE = "https://kubernetes.default.svc.cluster.local"  # scripts/testenv's issuer
POLL_SECONDS = 0.5


def token_kubeconfig(admin_kubeconfig: Path, token: str, path: Path) -> Path:
    """A kubeconfig for the admin's cluster that authenticates with `token`."""
    admin = yaml.safe_load(admin_kubeconfig.read_text())
    cluster = admin["clusters"][0]
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [cluster],
                "users": [{"name": "sa", "user": {"token": token.strip()}}],
                "contexts": [{"name": "sa", "context": {"cluster": cluster["name"], "user": "sa"}}],
                "current-context": "sa",
            }
        )
    )
    return path


def sim_gpu_uuids(profile: str) -> list[str]:
    nvml = FakeNvml(load_profile(profile))
    nvml.nvmlInit()
    return [
        nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(i)) for i in range(nvml.nvmlDeviceGetCount())
    ]


class NodeKubelet(api_pb2_grpc.PodResourcesListerServicer):  # type: ignore[misc]
    """A node's kubelet pod-resources List: its pods' GPU requests, given GPUs in pod order."""

    def __init__(self, gpu_uuids: list[str]) -> None:
        self.gpu_uuids = gpu_uuids
        self.pods: list[api_pb2.PodResources] = []

    def assign(self, pods: list[Any]) -> None:
        free = iter(self.gpu_uuids)
        assigned = []
        for pod in sorted(pods, key=lambda p: (p.metadata.namespace, p.metadata.name)):
            containers = []
            for container in pod.spec.containers:
                wanted = int(
                    ((container.resources and container.resources.limits) or {}).get(GPU_RESOURCE, 0)
                )
                ids = [uuid for _, uuid in zip(range(wanted), free, strict=False)]
                if ids:
                    devices = [api_pb2.ContainerDevices(resource_name=GPU_RESOURCE, device_ids=ids)]
                    containers.append(api_pb2.ContainerResources(name=container.name, devices=devices))
            if containers:
                assigned.append(
                    api_pb2.PodResources(
                        name=pod.metadata.name, namespace=pod.metadata.namespace, containers=containers
                    )
                )
        self.pods = assigned

    def List(  # noqa: N802 (the RPC's name)
        self, request: api_pb2.ListPodResourcesRequest, context: Any
    ) -> api_pb2.ListPodResourcesResponse:
        return api_pb2.ListPodResourcesResponse(pod_resources=self.pods)


@dataclass
class Node:
    name: str
    kubelet_dir: Path
    kubelet: NodeKubelet
    server: Any


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    pod: str
    node: str
    address: str
    log: Path = field(default_factory=Path)


class KwokPodProcesses:
    """Runs and stops processes for the esnode pods on kwok nodes until stop()."""

    def __init__(self, api_client: Any, admin_kubeconfig: Path, workdir: Path, gpu_profile: str = "h100x8"):
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.admin_kubeconfig = admin_kubeconfig
        self.workdir = workdir
        self.gpu_uuids = sim_gpu_uuids(gpu_profile)
        self.nodes: dict[str, Node] = {}
        self.running: dict[str, Running] = {}  # pod uid -> its process
        self.errors: list[str] = []
        self.endpoint_slices = LoopbackEndpointSlices(api_client)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        require_loopback(self.api_client)  # the pod IPs processes will listen on
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.sync()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        for uid in list(self.running):
            self._end(uid)
        for node in self.nodes.values():
            node.server.stop(grace=None)

    def _loop(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            try:
                self.sync()
            except Exception as exc:  # keep running; the tests read errors
                self.errors.append(repr(exc))

    # ------------------------------------------------------------------ one round

    def sync(self) -> None:
        kwok_nodes = {
            n.metadata.name
            for n in self.core.list_node().items
            if (n.metadata.annotations or {}).get("kwok.x-k8s.io/node") == "fake"
        }
        # Pods of a namespace being deleted (another test's) are on their way out: no token can be
        # made for them there, and no kubelet would start them.
        leaving = {
            n.metadata.name for n in self.core.list_namespace().items if n.status.phase == "Terminating"
        }
        pods = [
            p for p in self.core.list_pod_for_all_namespaces().items if p.metadata.namespace not in leaving
        ]
        for name in kwok_nodes:
            self._node(name).kubelet.assign(
                [p for p in pods if p.spec.node_name == name and p.status.phase == "Running"]
            )
        wanted = {}
        for selector in SELECTORS:
            key, value = selector.split("=")
            for pod in pods:
                if (pod.metadata.labels or {}).get(key) != value or pod.spec.node_name not in kwok_nodes:
                    continue
                if (
                    pod.metadata.deletion_timestamp is None
                    and pod.status.phase == "Running"
                    and pod.status.pod_ip
                ):
                    wanted[pod.metadata.uid] = pod
        for uid in set(self.running) - set(wanted):
            self._end(uid)
        self.endpoint_slices.sync(pods)
        for uid, pod in wanted.items():
            if uid in self.running and self.running[uid].process.poll() is not None:
                code = self.running[uid].process.returncode
                if code or pod.spec.restart_policy != "Never":
                    self.errors.append(f"{self.running[uid].pod} exited {code}")
                self._end(uid)
                if pod.spec.restart_policy == "Never":  # a run-once pod: done, as the kubelet reports it
                    self._terminated(pod, code)
                    continue
            if uid not in self.running:  # (re)started, as the kubelet would
                try:
                    self.running[uid] = self._launch(pod)
                except LookupError as exc:  # this pod's missing Secret or key: the others still start
                    self.errors.append(str(exc))

    def _node(self, name: str) -> Node:
        if name not in self.nodes:
            kubelet_dir = self.workdir / "nodes" / name / "kubelet"
            (kubelet_dir / "pod-resources").mkdir(parents=True, exist_ok=True)
            kubelet = NodeKubelet(self.gpu_uuids)
            server = grpc.server(ThreadPoolExecutor(max_workers=2))
            api_pb2_grpc.add_PodResourcesListerServicer_to_server(kubelet, server)
            server.add_insecure_port(f"unix://{kubelet_dir / 'pod-resources' / 'kubelet.sock'}")
            server.start()
            self.nodes[name] = Node(name, kubelet_dir, kubelet, server)
        return self.nodes[name]

    def _terminated(self, pod: Any, code: int) -> None:
        """The pod's phase from its one container's exit code: Helm waits for a hook pod's Succeeded."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        (container,) = pod.spec.containers
        state = {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                                "startedAt": now, "finishedAt": now}}  # fmt: skip
        status = {
            "phase": "Succeeded" if code == 0 else "Failed",
            "containerStatuses": [{"name": container.name, "image": container.image, "imageID": "",
                                   "ready": False, "restartCount": 0, "state": state}],
        }  # fmt: skip
        self.core.patch_namespaced_pod_status(pod.metadata.name, pod.metadata.namespace, {"status": status})

    def _end(self, uid: str) -> None:
        child_process.stop(self.running.pop(uid).process)

    # ------------------------------------------------------------------ one pod

    def _launch(self, pod: Any) -> Running:
        name = f"{pod.metadata.namespace}_{pod.metadata.name}"
        root = self.workdir / "pods" / name
        root.mkdir(parents=True, exist_ok=True)
        (container,) = pod.spec.containers
        mounts = self._mounts(pod, container, root)
        env = {
            "PATH": f"{BIN}:/usr/bin:/bin",
            "HOME": str(root),
            "KUBECONFIG": str(self._token(pod, root)),
            **{k: _translate(v, mounts) for k, v in self._env(pod, container).items()},
        }
        args = [str(ENTRYPOINTS[_image_name(container.image)]), *(container.args or [])]
        ip = pod.status.pod_ip
        if _image_name(container.image) == "esnode-agent":
            env["ESNODE_KUBECONFIG"] = env["KUBECONFIG"]
            env.update(_agent_overrides(Path(env["ESNODE_CONFIG"]), mounts, ip))
        elif (container.args or [""])[0] == "run":
            args = [a.replace("0.0.0.0", ip) for a in args] + [f"--metrics-address={ip}"]
        log = root / "process.log"
        process = child_process.start(args, log, env=env, cwd=root)
        return Running(process, name, pod.spec.node_name, ip, log)

    def _env(self, pod: Any, container: Any) -> dict[str, str]:
        """The container's env as the kubelet makes it: in order, a literal value expanded from the
        variables defined before it, a valueFrom read as it is (an optional key that is missing
        defines nothing; a missing required one fails the start, as CreateContainerConfigError)."""
        env: dict[str, str] = {}
        for var in container.env or []:
            if var.value_from is None:
                env[var.name] = expand(var.value or "", env)
                continue
            value = self._value_from(pod, var.value_from)
            if value is not None:
                env[var.name] = value
        return env

    def _value_from(self, pod: Any, source: Any) -> str | None:
        if source.field_ref is not None:
            return _field(pod, source.field_ref.field_path)
        kind, ref = (
            ("Secret", source.secret_key_ref)
            if source.secret_key_ref
            else ("ConfigMap", source.config_map_key_ref)
        )
        if ref is None:
            raise NotImplementedError(f"env valueFrom {source} (resourceFieldRef) is not run here")
        try:
            value = self._data(kind, ref.name, pod.metadata.namespace).get(ref.key)
        except ApiException as exc:
            if exc.status != 404:
                raise
            value = None
        if value is None and not ref.optional:
            raise LookupError(
                f"{pod.metadata.name}: {kind} {ref.name} has no key {ref.key} (CreateContainerConfigError)"
            )
        return None if value is None else value.decode()

    def _data(self, kind: str, name: str, namespace: str) -> dict[str, bytes]:
        """A ConfigMap's or Secret's keys and their values."""
        if kind == "ConfigMap":
            configmap = self.core.read_namespaced_config_map(name, namespace)
            return {k: v.encode() for k, v in (configmap.data or {}).items()}
        secret = self.core.read_namespaced_secret(name, namespace)
        return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}

    def _mounts(self, pod: Any, container: Any, root: Path) -> dict[str, str]:
        """Container mount path -> where it is on this machine."""
        volumes = {v.name: v for v in pod.spec.volumes or []}
        node = self._node(pod.spec.node_name)
        mounts: dict[str, str] = {}
        for mount in container.volume_mounts or []:
            volume = volumes.get(mount.name)
            if volume is None:
                continue
            sources = _file_sources(volume)
            if sources:
                target = root / "volumes" / mount.name
                target.mkdir(parents=True, exist_ok=True)
                for kind, name, source in sources:
                    self._write_source(kind, name, source.items, pod.metadata.namespace, target)
                mounts[mount.mount_path] = str(target)
            elif volume.host_path is not None:
                host = volume.host_path.path
                if host.startswith(KUBELET_DIR):
                    host = str(node.kubelet_dir) + host.removeprefix(KUBELET_DIR)
                elif host.startswith(ESNODE_HOST_DIR):
                    own = node.kubelet_dir.parent / "esnode"
                    host = str(own) + host.removeprefix(ESNODE_HOST_DIR)
                    Path(host).mkdir(parents=True, exist_ok=True)  # DirectoryOrCreate
                mounts[mount.mount_path] = host
        return mounts

    def _write_source(self, kind: str, name: str, items: Any, namespace: str, target: Path) -> None:
        """A ConfigMap's or Secret's keys as files, or only its items, at their paths."""
        data = self._data(kind, name, namespace)
        paths = {item.key: item.path for item in items} if items else {k: k for k in data}
        for key, path in paths.items():
            (target / path).parent.mkdir(parents=True, exist_ok=True)
            (target / path).write_bytes(data[key])

    def _token(self, pod: Any, root: Path) -> Path:
        """A token of the pod's ServiceAccount bound to the pod, as the kubelet projects it."""
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(
                audiences=[TOKEN_AUDIENCE],
                expiration_seconds=3600,
                bound_object_ref=client.V1BoundObjectReference(
                    api_version="v1", kind="Pod", name=pod.metadata.name, uid=pod.metadata.uid
                ),
            )
        )
        token = self.core.create_namespaced_service_account_token(
            pod.spec.service_account_name, pod.metadata.namespace, request
        ).status.token
        return token_kubeconfig(self.admin_kubeconfig, token, root / "kubeconfig")

    def addresses(self) -> dict[str, str]:
        """Pod (namespace_name) -> the address its process listens on."""
        return {r.pod: r.address for r in self.running.values()}


def _image_name(image: str) -> str:
    return image.rsplit("/", 1)[-1].split(":", 1)[0].split("@", 1)[0]


def _field(pod: Any, path: str) -> str:
    fields = {
        "spec.nodeName": pod.spec.node_name,
        "metadata.name": pod.metadata.name,
        "metadata.namespace": pod.metadata.namespace,
        "status.podIP": pod.status.pod_ip,
        "status.hostIP": pod.status.host_ip,
        "spec.serviceAccountName": pod.spec.service_account_name,
    }
    return str(fields[path])


def _file_sources(volume: Any) -> list[tuple[str, str, Any]]:
    """(kind, name, source) of each ConfigMap and Secret a volume holds as files (none for a hostPath)."""
    if volume.config_map is not None:
        return [("ConfigMap", volume.config_map.name, volume.config_map)]
    if volume.secret is not None:
        return [("Secret", volume.secret.secret_name, volume.secret)]
    sources = volume.projected.sources if volume.projected is not None else []
    return [
        ("ConfigMap", s.config_map.name, s.config_map)
        if s.config_map
        else ("Secret", s.secret.name, s.secret)
        for s in sources
        if s.config_map or s.secret
    ]


def _translate(value: str, mounts: dict[str, str]) -> str:
    """A container path as the same file on this machine (the longest mount that holds it)."""
    for mount_path in sorted(mounts, key=len, reverse=True):
        if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
            return mounts[mount_path] + value[len(mount_path.rstrip("/")) :]
    return value


def _agent_overrides(config_file: Path, mounts: dict[str, str], ip: str) -> dict[str, str]:
    """Env (it beats the config file) for the config's container paths and its 0.0.0.0 listener."""
    config = tomllib.loads(config_file.read_text())
    overrides = {}
    for key, value in config.items():
        if not isinstance(value, str):
            continue
        if key == "listen_address" and value.startswith("0.0.0.0:"):
            overrides[f"ESNODE_{key.upper()}"] = f"{ip}:{value.rsplit(':', 1)[1]}"
        elif value.startswith("/") and _translate(value, mounts) != value:
            overrides[f"ESNODE_{key.upper()}"] = _translate(value, mounts)
    if "ESNODE_WEB_CONFIG_FILE" in overrides:  # the certificate paths in it are the container's too
        overrides["ESNODE_WEB_CONFIG_FILE"] = str(
            _translated_web_config(Path(overrides["ESNODE_WEB_CONFIG_FILE"]), mounts)
        )
    return overrides


def _translated_web_config(path: Path, mounts: dict[str, str]) -> Path:
    """A copy of the web config beside the pod's volumes, its file paths as this machine's."""
    config = yaml.safe_load(path.read_text()) or {}
    tls = config.get("tls_server_config") or {}
    for key in ("cert_file", "key_file", "client_ca_file"):
        if key in tls:
            tls[key] = _translate(tls[key], mounts)
    copy = path.parent.parent / f"translated-{path.name}"
    copy.write_text(yaml.safe_dump(config))
    return copy
