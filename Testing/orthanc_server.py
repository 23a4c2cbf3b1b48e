"""A real Orthanc DICOM archive for the tests of ``sbrt batch`` on DICOMweb and DIMSE sources.

The Debian packages ``orthanc`` and ``orthanc-dicomweb`` give the server and its DICOMweb plugin;
each :class:`OrthancServer` is a private process (never the system service) with its own JSON
configuration, storage and log under a folder of the test's choosing, listening on free ports.
It is locked down like a production archive so the client meets the same obstacles: HTTP basic
authentication, the called AE title checked, and only one known calling AE title (``scu_aet``,
from 127.0.0.1) allowed to echo, find, get, move and store.

Example module-scoped fixture (the test modules define their own)::

    from orthanc_server import OrthancServer, requires_orthanc

    pytestmark = requires_orthanc

    @pytest.fixture(scope="module")
    def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
        with OrthancServer(tmp_path_factory.mktemp("orthanc")) as server:
            server.upload(sorted((tmp_path_factory.getbasetemp() / "archive").rglob("*.dcm")))
            yield server

    def test_qido(orthanc: OrthancServer) -> None:
        session = requests.Session()
        session.auth = orthanc.auth
        client = DICOMwebClient(orthanc.dicomweb_url, session=session)
        ...

A server is stopped by :meth:`OrthancServer.stop`, by leaving the ``with`` block, when the
object is garbage collected, at interpreter exit and, if it was started from the main thread
(as pytest fixtures are), when the test process dies even by SIGKILL (Linux parent-death
signal), so a crashed test does not leave an Orthanc behind. A (re)start from another thread
goes without the parent-death signal, which would stop the server when that thread ends.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import requests

DEBIAN_ORTHANC = Path("/usr/sbin/Orthanc")
DEBIAN_DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
LOG_TAIL_CHARS = 3000


def _orthanc_binary() -> str | None:
    """Orthanc on PATH (``/usr/sbin`` is not on every user's PATH), else the Debian location."""
    found = shutil.which("Orthanc")
    if found:
        return found
    return str(DEBIAN_ORTHANC) if DEBIAN_ORTHANC.is_file() else None


def _dicomweb_plugin() -> str | None:
    return str(DEBIAN_DICOMWEB_PLUGIN) if DEBIAN_DICOMWEB_PLUGIN.exists() else None


def _missing_requirements() -> list[str]:
    """What the archive tests lack: Debian packages first, then Python packages."""
    missing = []
    if ORTHANC_BINARY is None:
        missing.append("the Orthanc binary (apt-get install orthanc orthanc-dicomweb)")
    if DICOMWEB_PLUGIN is None:
        missing.append(f"the DICOMweb plugin {DEBIAN_DICOMWEB_PLUGIN} (apt-get install orthanc-dicomweb)")
    for module, package in (("dicomweb_client", "dicomweb-client"), ("pynetdicom", "pynetdicom"),
                            ("requests", "requests")):
        if importlib.util.find_spec(module) is None:
            missing.append(f"the Python package {package} (pip install {package})")
    return missing


ORTHANC_BINARY = _orthanc_binary()
DICOMWEB_PLUGIN = _dicomweb_plugin()
MISSING = _missing_requirements()
requires_orthanc = pytest.mark.skipif(bool(MISSING), reason="archive tests need " + "; ".join(MISSING))


def free_ports(count: int, avoid: Iterable[int] = ()) -> list[int]:
    """``count`` different TCP ports nobody listens on now, none in ``avoid``.

    Bound on all interfaces (Orthanc listens on all of them); the sockets are held open
    together, so no port repeats.
    """
    socks: list[socket.socket] = []
    avoid = set(avoid)
    try:
        while len(socks) < count + len(avoid):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.bind(("", 0))
        ports = [int(s.getsockname()[1]) for s in socks]
        return [p for p in ports if p not in avoid][:count]
    finally:
        for sock in socks:
            sock.close()


def _load_prctl() -> Any:
    """libc's prctl on Linux (looked up here: the child must not dlopen between fork and exec)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """SIGTERM the server when the thread that started it dies, even by SIGKILL (no atexit then)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _in_main_thread() -> bool:
    """The parent-death signal follows the starting *thread*; the main thread lives as long as the tests."""
    return threading.current_thread() is threading.main_thread()


def _terminate(process: subprocess.Popen[bytes], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM the server's process group, SIGKILL it if it has not exited after ``timeout_s``."""
    if process.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, timeout_s)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)  # its own group (start_new_session): Orthanc and nothing else
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


class OrthancServer:
    """One private Orthanc process: config, storage and log in ``root``; free ports kept across restarts."""

    def __init__(
        self,
        root: Path,
        *,
        user: str = "sbrt-test",
        password: str | None = None,
        aet: str = "ORTHANCTEST",
        scu_aet: str = "SBRTQA",
        scu_move_port: int | None = None,
        verbose: bool = False,
    ) -> None:
        """``scu_move_port``: where Orthanc sends C-MOVE results for ``scu_aet`` (a free port if None);
        ``verbose`` adds Orthanc's --verbose log (each DICOM and HTTP request) to the log file."""
        if ORTHANC_BINARY is None or DICOMWEB_PLUGIN is None:
            raise RuntimeError("Orthanc is not installed: " + "; ".join(MISSING))
        for name, value in (("aet", aet), ("scu_aet", scu_aet)):
            if not 0 < len(value) <= 16:
                raise ValueError(f"{name} {value!r}: an AE title has 1 to 16 characters")
        self.root = Path(root)
        self.user = user
        self.password = password if password is not None else secrets.token_urlsafe(16)
        self.aet = aet
        self.scu_aet = scu_aet
        self._scu_move_port = scu_move_port
        self.verbose = verbose
        self._http_port: int | None = None
        self._dicom_port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize | None = None
        self.start_seconds: float | None = None  # how long the last start() waited for GET /system

    # ------------------------------------------------------------------ addresses

    @property
    def http_port(self) -> int:
        return self._require(self._http_port, "HTTP port")

    @property
    def dicom_port(self) -> int:
        return self._require(self._dicom_port, "DICOM port")

    @property
    def scu_move_port(self) -> int:
        """The port Orthanc's C-MOVE SCU connects to for ``scu_aet`` (listen there to receive)."""
        return self._require(self._scu_move_port, "C-MOVE destination port")

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.rest_url}/dicom-web"

    @property
    def dimse_address(self) -> str:
        return f"dimse://{self.aet}@127.0.0.1:{self.dicom_port}"

    @property
    def auth(self) -> tuple[str, str]:
        return (self.user, self.password)

    @property
    def config_path(self) -> Path:
        return self.root / "orthanc.json"

    @property
    def log_path(self) -> Path:
        return self.root / "orthanc.log"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @staticmethod
    def _require(value: int | None, what: str) -> int:
        if value is None:
            raise RuntimeError(f"Orthanc has no {what} yet: call start() first")
        return value

    # ------------------------------------------------------------------ life cycle

    def __enter__(self) -> OrthancServer:
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Write the config, launch Orthanc and wait until its REST API answers with our credentials."""
        if self.running:
            raise RuntimeError(f"Orthanc in {self.root} is already running (pid {self._process.pid})")
        if self._http_port is None or self._dicom_port is None:
            given = [] if self._scu_move_port is None else [self._scu_move_port]
            ports = free_ports(3 - len(given), avoid=given)
            self._http_port, self._dicom_port = ports[0], ports[1]
            self._scu_move_port = (given or ports[2:])[0]
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(self.config(), indent=2) + "\n", encoding="utf-8")
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== starting Orthanc {time.strftime('%H:%M:%S')} =====\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                [str(ORTHANC_BINARY), *(["--verbose"] if self.verbose else []), str(self.config_path)],
                cwd=str(self.root), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_die_with_parent if _in_main_thread() else None,
            )
        self._finalizer = weakref.finalize(self, _terminate, self._process)  # also runs at exit
        self._wait_until_ready()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s; the storage stays for a restart."""
        if self._finalizer is not None:
            self._finalizer()  # calls _terminate once, then the finalizer is dead
            self._finalizer = None
        self._process = None

    def restart(self) -> None:
        """Stop and start again on the same ports and storage (the archive keeps its data)."""
        self.stop()
        self.start()

    def config(self) -> dict[str, Any]:
        """The Orthanc 1.10 configuration (keys of ``Orthanc --config=-`` and /etc/orthanc/dicomweb.json)."""
        return {
            "Name": f"SBRT test archive {self.aet}",
            "StorageDirectory": str(self.root / "storage"),
            "IndexDirectory": str(self.root / "index"),
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {self.user: self.password},
            "HttpCompressionEnabled": False,
            "HttpThreadsCount": 8,
            "OrthancExplorerEnabled": False,
            "WebDavEnabled": False,
            "DicomServerEnabled": True,
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": True,
            "DicomAlwaysAllowEcho": False,
            "DicomAlwaysAllowStore": False,
            "DicomAlwaysAllowFind": False,
            "DicomAlwaysAllowFindWorklist": False,
            "DicomAlwaysAllowGet": False,
            "DicomAlwaysAllowMove": False,
            "DicomCheckModalityHost": True,  # the one known AE title only from 127.0.0.1
            "DicomThreadsCount": 2,
            "DicomModalities": {
                self.scu_aet: {
                    "AET": self.scu_aet, "Host": "127.0.0.1", "Port": self.scu_move_port,
                    "AllowEcho": True, "AllowFind": True, "AllowGet": True, "AllowMove": True,
                    "AllowStore": True,
                },
            },
            "DicomModalitiesInDatabase": False,
            "OrthancPeersInDatabase": False,
            "DefaultEncoding": "Utf8",
            "SaveJobs": False,
            "ConcurrentJobs": 1,
            "DeidentifyLogs": True,
        }

    def _wait_until_ready(self) -> None:
        """Poll GET /system until it answers 200; the process dying or 30 s passing is an error."""
        import requests

        began = time.monotonic()
        last_problem = "no answer yet"
        while time.monotonic() - began < START_TIMEOUT_S:
            assert self._process is not None
            if self._process.poll() is not None:
                code = self._process.returncode
                self.stop()
                raise RuntimeError(
                    f"Orthanc exited with code {code} while starting; log:\n{self._log_tail()}")
            try:
                answer = requests.get(f"{self.rest_url}/system", auth=self.auth, timeout=2)
            except requests.RequestException as exc:
                last_problem = f"{type(exc).__name__}"
            else:
                if answer.status_code == 200:
                    self.start_seconds = time.monotonic() - began
                    self._check_dicomweb_loaded()
                    return
                last_problem = f"HTTP {answer.status_code}"
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer GET /system within {START_TIMEOUT_S:.0f} s "
                           f"({last_problem}); log:\n{self._log_tail()}")

    def _check_dicomweb_loaded(self) -> None:
        """Orthanc only logs a plugin it cannot load and runs without it: make that an error."""
        import requests

        plugins = requests.get(f"{self.rest_url}/plugins", auth=self.auth, timeout=5).json()
        if "dicom-web" not in plugins:
            self.stop()
            raise RuntimeError(f"Orthanc started without its DICOMweb plugin (loaded: {plugins}); "
                               f"log:\n{self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-LOG_TAIL_CHARS:]
        except OSError as exc:
            return f"(no log: {exc})"

    # ------------------------------------------------------------------ REST helpers

    def session(self) -> requests.Session:
        """A ``requests.Session`` carrying the basic-auth credentials (for dicomweb-client or REST)."""
        import requests

        session = requests.Session()
        session.auth = self.auth
        return session

    def upload(self, paths: Iterable[Path]) -> int:
        """POST each file to REST /instances; returns how many were new (AlreadyStored does not count).

        Raises ``requests.HTTPError`` naming the file on any HTTP error (Orthanc answers 400 to a
        file that is not DICOM).
        """
        import requests

        stored = 0
        with self.session() as session:
            for path in paths:
                answer = session.post(f"{self.rest_url}/instances", data=Path(path).read_bytes(),
                                      headers={"Content-Type": "application/dicom"}, timeout=60)
                if answer.status_code != 200:
                    raise requests.HTTPError(
                        f"{path}: Orthanc refused the upload (HTTP {answer.status_code}): "
                        f"{answer.text[:500]}",
                        response=answer)
                if answer.json().get("Status") == "Success":
                    stored += 1
        return stored

    def instance_count(self) -> int:
        """Number of instances in the archive (REST /statistics)."""
        with self.session() as session:
            answer = session.get(f"{self.rest_url}/statistics", timeout=10)
            answer.raise_for_status()
            return int(answer.json()["CountInstances"])
