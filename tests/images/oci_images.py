"""The image tier's tools: a Debian base made by mmdebstrap (cached), buildah builds, containers run.

Everything runs without a daemon or a registry: buildah with chroot isolation on the host network,
its storage under ESNODE_IMAGES_CACHE (default ~/.cache/esnode-images), so that layers and the base
survive between runs. Root is needed, as for CI.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("ESNODE_IMAGES_CACHE", Path.home() / ".cache" / "esnode-images"))
STORAGE = CACHE / "storage"
# buildah's run state (mounts, locks): per storage, on /run so that a reboot clears it.
RUNROOT = Path("/run") / f"esnode-images-{hashlib.sha256(str(CACHE).encode()).hexdigest()[:8]}"
# The stand-in for python:slim: Debian's python3 (3.11 on bookworm, as the published base), venv support
# and CA certificates; no docs. Its tag is a hash of this recipe, so a changed recipe makes a new base.
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
BASE_DPKG_OPTIONS = tuple(f"path-exclude=/usr/share/{d}/*" for d in ("doc", "man", "locale"))
# pip inside a build reaches the package index through whatever the host trusts (a proxy's CA, say);
# mounted for RUN steps only, never part of an image.
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
BUILD_TIMEOUT_SECONDS = 1200


@dataclass(frozen=True)
class Built:
    """An image in the local store: its name, how long its build took, its layers' sizes."""

    name: str
    build_seconds: float
    layer_sizes_bytes: tuple[int, ...]

    @property
    def size_bytes(self) -> int:
        return sum(self.layer_sizes_bytes)

    def summary(self) -> str:
        layers = " + ".join(f"{size / 1e6:.1f}" for size in self.layer_sizes_bytes)
        return (
            f"{self.name}: {self.size_bytes / 1e6:.1f} MB in {len(self.layer_sizes_bytes)} layers "
            f"({layers} MB), built in {self.build_seconds:.0f} s"
        )


def missing_tools() -> list[str]:
    return [tool for tool in ("buildah", "mmdebstrap") if shutil.which(tool) is None]


def buildah(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    command = ["buildah", "--root", str(STORAGE), "--runroot", str(RUNROOT), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {result.returncode}:\n{result.stderr}")
    return result


@contextmanager
def cache_lock() -> Iterator[None]:
    """One builder at a time per cache: concurrent sessions would each make the same base."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def base_key() -> str:
    recipe = json.dumps([BASE_SUITE, BASE_PACKAGES, BASE_DPKG_OPTIONS])
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def image_exists(name: str) -> bool:
    return buildah("inspect", "--type", "image", name, check=False).returncode == 0


def base_image() -> str:
    """The local base image, made once: mmdebstrap's tarball (kept), imported as one layer."""
    name = f"localhost/esnode-test-base:{base_key()}"
    with cache_lock():
        if image_exists(name):
            return name
        tarball = CACHE / f"base-{base_key()}.tar"
        if not tarball.exists():
            partial = tarball.with_suffix(".partial.tar")
            subprocess.run(
                [
                    "mmdebstrap", "--variant=essential", "--quiet", f"--include={','.join(BASE_PACKAGES)}",
                    *(f"--dpkgopt={option}" for option in BASE_DPKG_OPTIONS),
                    BASE_SUITE, str(partial),
                ],
                check=True, timeout=BUILD_TIMEOUT_SECONDS,
            )  # fmt: skip
            partial.rename(tarball)
        container = buildah("from", "scratch").stdout.strip()
        try:
            buildah("add", container, str(tarball), "/", timeout=300)
            buildah(
                "config",
                "--env",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                container,
            )
            buildah("commit", "--quiet", container, name, timeout=300)
        finally:
            buildah("rm", container, check=False)
    return name


def layer_sizes_bytes(name: str) -> tuple[int, ...]:
    manifest = json.loads(json.loads(buildah("inspect", "--type", "image", name).stdout)["Manifest"])
    return tuple(int(layer["size"]) for layer in manifest["layers"])


def image_id(name: str) -> str | None:
    found = buildah("inspect", "--type", "image", "--format", "{{.FromImageID}}", name, check=False)
    return found.stdout.strip() if found.returncode == 0 else None


def build(dockerfile: str, name: str, base: str) -> Built:
    """Build the Dockerfile as written, on the given base; the image it replaces is removed."""
    previous = image_id(name)
    started = time.monotonic()
    with cache_lock():
        buildah(
            "build", "--isolation", "chroot", "--network", "host", "--layers", "--pull=never", "--quiet",
            "--build-arg", f"PYTHON_IMAGE={base}",
            "--volume", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro",
            "--file", str(REPO / dockerfile), "--tag", name, str(REPO),
            timeout=BUILD_TIMEOUT_SECONDS,
        )  # fmt: skip
    seconds = time.monotonic() - started
    if previous is not None and previous != image_id(name):
        buildah("rmi", previous, check=False)  # its layers shared with the new one stay
    return Built(name, seconds, layer_sizes_bytes(name))


def image_config(name: str) -> dict[str, object]:
    config: dict[str, object] = json.loads(buildah("inspect", "--type", "image", name).stdout)["OCIv1"][
        "config"
    ]
    return config


@dataclass(frozen=True)
class Container:
    """A working container of an image; `command` runs its entrypoint with arguments, as a runtime would."""

    name: str
    entrypoint: tuple[str, ...]

    def command(self, *args: str, volumes: tuple[str, ...] = (), env: tuple[str, ...] = ()) -> list[str]:
        options = [f"--volume={v}" for v in volumes] + [f"--env={e}" for e in env]
        return [
            "buildah", "--root", str(STORAGE), "--runroot", str(RUNROOT),
            "run", "--isolation", "chroot", "--network", "host", *options,
            self.name, "--", *self.entrypoint, *args,
        ]  # fmt: skip

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*args), capture_output=True, text=True, timeout=timeout, check=False
        )


@contextmanager
def container(image: str) -> Iterator[Container]:
    entrypoint = image_config(image).get("Entrypoint")
    assert isinstance(entrypoint, list)
    name = f"esnode-test-{os.getpid()}-{time.monotonic_ns()}"
    buildah("from", "--pull=never", "--quiet", "--name", name, image)
    try:
        yield Container(name, tuple(entrypoint))
    finally:
        buildah("rm", name, check=False)


@contextmanager
def running(command: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A container process in a session of its own: buildah, its chroot runtime and the program."""
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@contextmanager
def mounted(image: str) -> Iterator[Path]:
    """The image's root filesystem, read from the host."""
    with container(image) as ctr:
        root = Path(buildah("mount", ctr.name).stdout.strip())
        try:
            yield root
        finally:
            buildah("umount", ctr.name, check=False)


def installed(root: Path) -> set[str]:
    """The distributions in an image's venv, by normalised name."""
    site = next((root / "opt" / "esnode" / "lib").glob("python3.*/site-packages"))
    return {p.name.split("-")[0].lower() for p in site.glob("*.dist-info")}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
