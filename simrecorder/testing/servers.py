"""Start and stop real servers for tests: an S3-compatible server, ``sshd`` and ``nginx``.

Each server runs as a child process of the current user, listens on a free port on
127.0.0.1, keeps every file (configuration, keys, logs, pid file, data) in its own
directory, and is stopped by its process id. A server is ready when its port accepts
connections; start-up waits for that with a bounded timeout and raises
:class:`~simrecorder.errors.ServerStartError` (with the server's log) when it does not
come up.

Examples
--------
>>> from simrecorder.testing.servers import NginxServer
>>> with NginxServer(tmp) as web:  # doctest: +SKIP
...     web.url
'http://127.0.0.1:43121'
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, ClassVar

from ..errors import ServerStartError

__all__ = [
    "MissingServerError",
    "MotoServer",
    "NginxServer",
    "ServerProcess",
    "SshServer",
    "free_port",
]

HOST = "127.0.0.1"

#: How long :meth:`ServerProcess.start` waits for the port (seconds).
START_TIMEOUT = 30.0


class MissingServerError(ServerStartError):
    """The server program is not installed (the message says which package brings it)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def find_program(name: str, package: str, extra_dirs: tuple[str, ...] = ()) -> str:
    """Path of the program ``name``, searched on ``PATH`` and in ``/usr/sbin``, ``/sbin``.

    Raises
    ------
    MissingServerError
        When it is not installed; the message names the Debian package to install.
    """
    search = os.pathsep.join([os.environ.get("PATH", ""), *extra_dirs, "/usr/sbin", "/sbin"])
    found = shutil.which(name, path=search)
    if found is None:
        raise MissingServerError(
            f"{name} is not installed: `apt-get install {package}` (./scripts/test installs it)"
        )
    return found


class ServerProcess:
    """A server child process on a free loopback port, stopped by its pid.

    Subclasses write their configuration in :meth:`_prepare` and return the command
    line from :meth:`_command`.

    Parameters
    ----------
    directory
        A directory owned by this server (created when missing).
    port
        The port to listen on; ``None`` picks a free one.

    Attributes
    ----------
    port
        The TCP port on 127.0.0.1.
    process
        The running :class:`subprocess.Popen`, or ``None`` when stopped.
    """

    name: ClassVar[str] = "server"

    def __init__(self, directory: str | os.PathLike[str], port: int | None = None) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port if port is not None else free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def log_path(self) -> Path:
        """The file that receives the server's standard output and error."""
        return self.directory / f"{self.name}.log"

    @property
    def pid(self) -> int | None:
        """The process id, or ``None`` when not running."""
        return None if self.process is None else self.process.pid

    @property
    def url(self) -> str:
        """The server's base URL."""
        raise NotImplementedError

    def _prepare(self) -> None:
        """Write configuration, keys and data directories (before the start)."""

    def _command(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = START_TIMEOUT) -> ServerProcess:
        """Start the server and wait until its port accepts connections.

        Raises
        ------
        MissingServerError
            The program is not installed.
        ServerStartError
            The server exited or did not open its port within ``timeout`` seconds.
        """
        if self.process is not None:
            return self
        command = self._command()
        if _port_open(self.port):  # else another server's port would pass for ours
            raise ServerStartError(f"{self.name}: port {HOST}:{self.port} is already in use")
        self._prepare()
        self._log = open(self.log_path, "ab")  # closed by stop()
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.directory,
            start_new_session=True,  # a Ctrl-C of the test run does not hit it first
        )
        deadline = time.monotonic() + timeout
        while not _port_open(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                what = "exited" if self.process.poll() is not None else f"no port in {timeout}s"
                self.stop()
                raise ServerStartError(
                    f"{self.name} on {HOST}:{self.port} did not start ({what}): {self._tail()}"
                )
            time.sleep(0.05)
        return self

    def _tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:].strip() or "(empty log)"
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server by its pid (SIGTERM, then SIGKILL after ``timeout`` seconds).

        Processes the server left in its own session (started with a new session, so its
        process group id is its pid) get SIGTERM too.
        """
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            try:
                os.kill(process.pid, signal.SIGTERM)
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout)
            except ProcessLookupError:
                pass
        if process is not None:
            process.wait()
            try:  # children left in the server's own session (sshd's per-connection ones)
                os.killpg(process.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.directory)!r}, port={self.port})"


class MotoServer(ServerProcess):
    """moto's S3-compatible HTTP server (``moto[server]``), run with this Python.

    Any access key is accepted; buckets live in the server's memory.
    """

    name: ClassVar[str] = "moto_server"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``: the ``endpoint_url`` of the S3 API."""
        return f"http://{HOST}:{self.port}"

    def _command(self) -> list[str]:
        try:
            import moto.server  # noqa: F401 - only checks that moto[server] is installed
        except ImportError as exc:
            raise MissingServerError(
                f"moto_server is not installed ({exc}): `pip install 'moto[server]'` "
                "(the `test` extra of simrecorder brings it)"
            ) from exc
        return [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(self.port)]


class SshServer(ServerProcess):
    """OpenSSH's ``sshd`` with its own host key, client key and configuration.

    Runs as the current user (key authentication of that user only, no PAM, no
    password); the SFTP subsystem is OpenSSH's ``internal-sftp``.

    Attributes
    ----------
    user
        The user name to log in with.
    key_filename
        The private key the server accepts.
    """

    name: ClassVar[str] = "sshd"

    def __init__(self, directory: str | os.PathLike[str], port: int | None = None) -> None:
        super().__init__(directory, port)
        self.user = getpass.getuser()
        self.key_filename = str(self.directory / "client_key")
        self.config_path = self.directory / "sshd_config"

    @property
    def url(self) -> str:
        """``sftp://USER@127.0.0.1:PORT``."""
        return f"sftp://{self.user}@{HOST}:{self.port}"

    def _command(self) -> list[str]:
        sshd = find_program("sshd", "openssh-server")
        self._keygen = find_program("ssh-keygen", "openssh-client")
        return [sshd, "-D", "-e", "-f", str(self.config_path), "-p", str(self.port)]

    def _prepare(self) -> None:
        host_key = self.directory / "host_key"
        for key in (host_key, Path(self.key_filename)):
            if not key.exists():
                subprocess.run(
                    [self._keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                    check=True,
                    capture_output=True,
                )
        authorized = self.directory / "authorized_keys"
        authorized.write_bytes(Path(self.key_filename + ".pub").read_bytes())
        authorized.chmod(0o600)
        if os.geteuid() == 0:  # privilege separation directory sshd insists on as root
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.config_path.write_text(
            "\n".join(
                [
                    f"ListenAddress {HOST}",
                    f"HostKey {host_key}",
                    f"PidFile {self.directory / 'sshd.pid'}",
                    f"AuthorizedKeysFile {authorized}",
                    f"AllowUsers {self.user}",
                    "StrictModes no",
                    "UsePAM no",
                    "PermitRootLogin prohibit-password",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "Subsystem sftp internal-sftp",
                    "LogLevel ERROR",
                    "",
                ]
            )
        )


class NginxServer(ServerProcess):
    """``nginx`` serving the directory :attr:`root` read-only, with autoindex on.

    Attributes
    ----------
    root
        The served directory: put files there to serve them.
    """

    name: ClassVar[str] = "nginx"

    def __init__(self, directory: str | os.PathLike[str], port: int | None = None) -> None:
        super().__init__(directory, port)
        self.root = self.directory / "www"
        self.config_path = self.directory / "nginx.conf"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (the served directory is its root)."""
        return f"http://{HOST}:{self.port}"

    def _command(self) -> list[str]:
        nginx = find_program("nginx", "nginx")
        return [nginx, "-p", f"{self.directory}/", "-c", str(self.config_path),
                "-e", str(self.directory / "error.log")]  # fmt: skip

    def _prepare(self) -> None:
        self.root.mkdir(exist_ok=True)
        temp = self.directory / "temp"
        temp.mkdir(exist_ok=True)
        # as root, nginx's workers switch to `nobody`, who cannot read a private temp dir
        user = f"user {getpass.getuser()};" if os.geteuid() == 0 else ""
        temps = "\n".join(
            f"    {kind}_temp_path {temp / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        self.config_path.write_text(
            f"""daemon off;
master_process on;
worker_processes 1;
{user}
pid {self.directory / "nginx.pid"};
error_log {self.directory / "error.log"} warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    default_type application/octet-stream;
{temps}
    server {{
        listen {HOST}:{self.port};
        root {self.root};
        autoindex on;
    }}
}}
"""
        )
