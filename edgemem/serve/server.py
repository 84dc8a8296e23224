"""A local ``tritonserver`` process on a model repository: find it, give it a backend, start, wait, stop.

The default binary is the one ``nvidia-pytriton`` installs (Triton 2.51; only its python backend).
The ONNX Runtime backend comes from a backend directory (``--backend-directory``) or is assembled
from a kit folder holding ``libtriton_onnxruntime.so`` and ``libonnxruntime.so.1`` (``EDGEMEM_TRITON_KIT``;
the project's ``../shared/triton``), as its ``setup-backends`` script does.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from edgemem.errors import EdgememError, InputError, UnsupportedError

KIT_ENV = "EDGEMEM_TRITON_KIT"
KIT_FILES = ("libtriton_onnxruntime.so", "libonnxruntime.so.1")
INSTALL = "pip install --no-deps nvidia-pytriton==0.7.0"


class ServerError(EdgememError):
    """The Triton server did not start, or stopped."""


def pytriton_site() -> Path | None:
    """The site-packages folder holding nvidia-pytriton (found without importing it)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))).parent


def find_tritonserver(path: str | Path | None = None) -> tuple[Path, list[Path]]:
    """``(binary, library folders it needs)``; a missing binary is an error saying what to install."""
    if path is not None:
        p = Path(path)
        if not (p.is_file() and os.access(p, os.X_OK)):
            raise UnsupportedError(f"--tritonserver {p} is not an executable file")
        site = pytriton_site()
        libs = [site / "nvidia_pytriton.libs"] if site and (site / "nvidia_pytriton.libs").is_dir() else []
        return p, libs
    site = pytriton_site()
    binary = site / "pytriton" / "tritonserver" / "bin" / "tritonserver" if site else None
    if site is None or binary is None or not binary.is_file():
        raise UnsupportedError(f"no tritonserver found: {INSTALL}, or pass --tritonserver PATH")
    return binary, [site / "nvidia_pytriton.libs"]


def assemble_backends(kit: str | Path, dest: str | Path, libs: list[Path]) -> Path:
    """``dest/backends/onnxruntime`` from a kit folder (as ``setup-backends`` does); returns ``dest/backends``."""
    kit, dest = Path(kit), Path(dest)
    missing = [f for f in KIT_FILES if not (kit / f).is_file()]
    if missing:
        raise UnsupportedError(f"{kit} is not a Triton ONNX Runtime kit: missing {missing}")
    cores = sorted(p for d in libs for p in d.glob("libtritonserver-*.so"))
    if not cores:
        raise UnsupportedError(f"no libtritonserver-*.so beside the tritonserver binary ({INSTALL})")
    backends = dest / "backends"
    if not (backends / "onnxruntime" / KIT_FILES[0]).is_file():
        dest.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".backends.", dir=dest))
        ort = tmp / "onnxruntime"
        ort.mkdir()
        for f in KIT_FILES:
            shutil.copy2(kit / f, ort / f)
        (ort / "libtritonserver.so").symlink_to(cores[0])
        try:
            os.replace(tmp, backends)
        except OSError:  # assembled meanwhile by another process
            shutil.rmtree(tmp, ignore_errors=True)
    return backends


def resolve_backends(backend_directory: str | Path | None, libs: list[Path], cache: Path) -> Path:
    """The backend folder to pass to tritonserver; a clear error when there is none with ONNX Runtime."""
    if backend_directory is not None:
        b = Path(backend_directory)
        if not (b / "onnxruntime").is_dir():
            raise UnsupportedError(f"--backend-directory {b} has no onnxruntime/ backend (setup-backends prints one)")
        return b
    kit = os.environ.get(KIT_ENV)
    if not kit:
        raise UnsupportedError(
            "no ONNX Runtime backend for Triton: pass --backend-directory DIR (from the kit's setup-backends)"
            f" or set {KIT_ENV} to the kit folder (libtriton_onnxruntime.so, libonnxruntime.so.1)"
        )
    return assemble_backends(kit, cache, libs)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def model_names(repo: Path) -> list[str]:
    return sorted(p.name for p in repo.iterdir() if (p / "config.pbtxt").is_file())


class TritonServer:
    """One ``tritonserver`` process serving ``repo`` over gRPC on 127.0.0.1 (HTTP and metrics off)."""

    def __init__(
        self,
        repo: str | Path,
        *,
        binary: Path,
        libs: list[Path],
        backends: Path,
        grpc_port: int | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.repo = Path(repo)
        if not self.repo.is_dir():
            raise InputError(f"model repository not found: {self.repo}")
        self.models = model_names(self.repo)
        if not self.models:
            raise InputError(f"{self.repo} holds no model (no <name>/config.pbtxt); run `edgemem serve export`")
        self.port = grpc_port or free_port()
        self.url = f"127.0.0.1:{self.port}"
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix="tritonserver.", suffix=".log")
            os.close(fd)
            log_path = Path(name)
        self.log_path = Path(log_path)
        self._cmd = [
            str(binary), "--model-repository", str(self.repo), "--backend-directory", str(backends),
            "--grpc-address", "127.0.0.1", "--grpc-port", str(self.port), "--allow-http", "false",
            "--allow-metrics", "false", "--allow-gpu-metrics", "false", "--exit-timeout-secs", "10",
        ]  # fmt: skip
        path = ":".join([*map(str, libs), os.environ.get("LD_LIBRARY_PATH", "")]).strip(":")
        self._env = dict(os.environ, LD_LIBRARY_PATH=path)
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self, timeout_s: float = 120.0) -> TritonServer:
        """Start the server and wait until every model of the repository is ready."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:  # else readiness would ask another server
            try:
                probe.bind(("127.0.0.1", self.port))
            except OSError:
                raise ServerError(f"port {self.port} on 127.0.0.1 is in use; choose another --grpc-port") from None
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        # Its own session: a Ctrl-C reaches edgemem, which then stops the server in order.
        self.process = subprocess.Popen(
            self._cmd, env=self._env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            self._wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        import tritonclient.grpc as gc

        client = gc.InferenceServerClient(self.url)
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    raise ServerError(f"tritonserver exited ({self.process.returncode}): {self.last_error()}")
                try:
                    if all(client.is_model_ready(m, client_timeout=2.0) for m in self.models):
                        return
                except Exception:  # not listening yet
                    pass
                time.sleep(0.25)
        finally:
            client.close()
        raise ServerError(f"models not ready after {timeout_s:.0f} s: {self.last_error()} (log {self.log_path})")

    def last_error(self) -> str:
        """The most telling line of the server log (the last error, else the last line)."""
        try:
            lines = [ln.strip() for ln in self.log_path.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return "no log"
        errors = [ln for ln in lines if ln.startswith("E")]  # glog's error lines: E<date> ...
        pick = errors or lines or ["empty log"]
        return pick[-1][:400]

    def stop(self, timeout_s: float = 30.0) -> None:
        """Terminate (SIGTERM, then SIGKILL after ``timeout_s``) and close the log."""
        p = self.process
        if p is not None and p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """End the server at once (SIGKILL): what a crash looks like to clients."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def __enter__(self) -> TritonServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
