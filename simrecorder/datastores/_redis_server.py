"""Start and stop real ``redis-server`` processes (one server, or a local cluster).

No redis-py needed: readiness and shutdown use the RESP protocol over a socket.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from ..errors import InvalidArgumentError, ServerStartError

__all__ = ["RedisClusterServer", "RedisServer", "free_port"]

_HOST = "127.0.0.1"


def free_port() -> int:
    """A free TCP port on 127.0.0.1 that also suits a cluster node.

    Cluster nodes talk on ``port + 10000``, so the port is at most 55535 and that
    second port is free too.
    """
    rng = random.SystemRandom()
    for _ in range(1000):
        port = rng.randint(20000, 55535)
        if not _port_in_use(port) and not _port_in_use(port + 10000):
            return port
    raise ServerStartError("found no free port pair on 127.0.0.1")


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((_HOST, port))
        except OSError:
            return True
    return False


def _command(port: int, *args: str, password: str | None = None, timeout: float = 2.0) -> bytes:
    """Send one command (after AUTH if needed) and return the raw first reply line."""
    parts = ([("AUTH", password)] if password else []) + [args]
    with socket.create_connection((_HOST, port), timeout=timeout) as sock:
        reply = b""
        for command in parts:
            payload = f"*{len(command)}\r\n".encode()
            for arg in command:
                data = str(arg).encode()
                payload += b"$%d\r\n%s\r\n" % (len(data), data)
            sock.sendall(payload)
            reply = sock.recv(65536)
        return reply


class RedisServer:
    """A ``redis-server`` process bound to 127.0.0.1 that keeps its data in a directory.

    Data persists in ``data_directory`` (an append-only file plus RDB snapshots), and
    :meth:`stop` shuts the server down with a save, so a later ``RedisServer`` on the
    same directory serves the same data.

    Parameters
    ----------
    data_directory
        Where the server keeps ``dump.rdb``, ``appendonlydir/`` and ``redis.log``.
    redis_port
        TCP port, or ``'random'`` for a free one (see :attr:`port`).
    config_file_path
        A ``redis.conf`` to load first; the options above are applied after it.
    password
        ``requirepass`` for the server (also used to shut it down).
    extra_args
        More ``--option value`` arguments for ``redis-server``.
    executable
        The ``redis-server`` binary.

    Examples
    --------
    >>> with RedisServer("/tmp/redis-data", redis_port="random") as server:  # doctest: +SKIP
    ...     store = RedisDataStore("localhost", redis_port=server.port)
    """

    def __init__(
        self,
        data_directory: str | os.PathLike[str],
        redis_port: int | str = 6379,
        config_file_path: str | os.PathLike[str] | None = None,
        *,
        password: str | None = None,
        extra_args: list[str] | None = None,
        executable: str = "redis-server",
        startup_timeout: float = 15.0,
    ) -> None:
        self.data_directory = Path(os.path.expanduser(os.fspath(data_directory))).resolve()
        if redis_port != "random" and (
            not isinstance(redis_port, int)
            or isinstance(redis_port, bool)
            or not 1 <= redis_port <= 65535
        ):
            raise InvalidArgumentError(
                f"redis_port must be an integer from 1 to 65535 or 'random'; got {redis_port!r}"
            )
        self._requested_port = redis_port
        self.port: int | None = None if redis_port == "random" else int(redis_port)
        self.config_file_path = config_file_path
        self.password = password
        self.extra_args = list(extra_args or [])
        self.executable = executable
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None

    host = _HOST

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>``."""
        return f"redis://{_HOST}:{self.port}"

    def _bound_port(self) -> int:
        if self.port is None:
            raise ServerStartError(f"{self!r} has no port yet: start() it first")
        return self.port

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self.process is not None and self.process.poll() is None

    def _arguments(self) -> list[str]:
        args = [self.executable]
        if self.config_file_path is not None:
            args.append(os.fspath(self.config_file_path))
        args += [
            "--port", str(self.port), "--bind", _HOST, "--dir", str(self.data_directory),
            "--daemonize", "no", "--appendonly", "yes", "--dbfilename", "dump.rdb",
            "--save", "900 1 300 10 60 10000", "--logfile", "redis.log",
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        return args + self.extra_args

    def start(self) -> RedisServer:
        """Start the server and wait until it answers PING.

        Raises
        ------
        ServerStartError
            ``redis-server`` is not installed, the port is taken, or the server exited.
        """
        if self.running:
            return self
        if shutil.which(self.executable) is None:
            raise ServerStartError(
                f"{self.executable!r} is not installed: on Debian/Ubuntu "
                "`apt-get install redis-server` (./scripts/test does this when run as root)"
            )
        if self._requested_port == "random":
            self.port = free_port()
        elif _port_in_use(self._bound_port()):
            raise ServerStartError(
                f"port {self.port} on {_HOST} is already in use (another redis-server?); "
                "pass redis_port='random' or stop the other server"
            )
        self.data_directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self._arguments(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            cwd=self.data_directory,
        )  # fmt: skip
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                output = (
                    self.process.stdout.read().decode(errors="replace")
                    if self.process.stdout
                    else ""
                )
                log = self.data_directory / "redis.log"
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise ServerStartError(
                    f"redis-server on port {self.port} exited with code "
                    f"{self.process.returncode}: {output.strip()} {tail.strip()}"
                )
            try:
                reply = _command(self._bound_port(), "PING", password=self.password)
                if reply.startswith((b"+PONG", b"-NOAUTH")) or b"PONG" in reply:
                    return self
                if reply.startswith(b"-LOADING"):
                    time.sleep(0.05)
                    continue
            except OSError:
                pass
            time.sleep(0.02)
        self.stop(save=False)
        raise ServerStartError(
            f"redis-server on port {self.port} did not answer within {self.startup_timeout} s"
        )

    def stop(self, save: bool = True) -> None:
        """Shut the server down (``SHUTDOWN SAVE`` by default) and wait for it to exit."""
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                _command(
                    self._bound_port(),
                    "SHUTDOWN",
                    "SAVE" if save else "NOSAVE",
                    password=self.password,
                    timeout=30,
                )
            except OSError:
                pass  # the connection drops when the server exits
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None

    def kill(self) -> None:
        """SIGKILL the server (for failure tests): nothing is saved beyond the AOF."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            if self.process.stdout is not None:
                self.process.stdout.close()
            self.process = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"RedisServer({str(self.data_directory)!r}, redis_port={self.port}) <{state}>"


class RedisClusterServer:
    """A local Redis Cluster of ``nodes`` masters on free loopback ports.

    Each node is a :class:`RedisServer` with ``--cluster-enabled yes`` in its own
    subdirectory of ``data_directory``; :meth:`start` joins them with
    ``redis-cli --cluster create`` and waits for ``cluster_state:ok``.

    Parameters
    ----------
    data_directory
        One subdirectory per node is made here.
    nodes
        Number of masters (no replicas).
    startup_timeout
        Seconds to wait for ``cluster_state:ok``.
    node_timeout
        ``cluster-node-timeout`` in seconds: a node unreachable this long is marked
        failed and the cluster answers ``CLUSTERDOWN`` until it is back.
    """

    def __init__(
        self,
        data_directory: str | os.PathLike[str],
        nodes: int = 3,
        startup_timeout: float = 30.0,
        node_timeout: float = 5.0,
    ) -> None:
        self.data_directory = Path(data_directory)
        self.startup_timeout = startup_timeout
        self.servers = [
            RedisServer(
                self.data_directory / f"node{i}", redis_port="random",
                extra_args=["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                            "--cluster-node-timeout", str(int(node_timeout * 1000)),
                            "--appendonly", "yes"],
            )
            for i in range(nodes)
        ]  # fmt: skip

    host = _HOST

    @property
    def ports(self) -> list[int]:
        """The nodes' ports (known once :meth:`start` ran)."""
        return [server._bound_port() for server in self.servers]

    @property
    def port(self) -> int | None:
        """The first node's port: a cluster client started there finds the others
        (``RedisClusterDataStore("127.0.0.1", cluster.port)``); None before :meth:`start`."""
        return self.servers[0].port

    @property
    def url(self) -> str:
        """``redis+cluster://127.0.0.1:<first port>``."""
        return f"redis+cluster://{_HOST}:{self.port}"

    def start(self) -> RedisClusterServer:
        """Start every node, create the cluster and wait until it serves all slots."""
        for server in self.servers:
            server.start()
        if shutil.which("redis-cli") is None:
            raise ServerStartError("redis-cli is not installed (Debian package redis-tools)")
        state = _command(self.ports[0], "CLUSTER", "INFO")
        if b"cluster_state:ok" not in state:
            addresses = [f"{_HOST}:{port}" for port in self.ports]
            done = subprocess.run(
                ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "0",
                 "--cluster-yes"],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            if done.returncode != 0:
                raise ServerStartError(
                    f"redis-cli --cluster create failed: {done.stdout}{done.stderr}"
                )
        self._wait_ok()
        return self

    def kill_node(self, index: int) -> None:
        """SIGKILL node ``index`` (for failure tests).

        Its data directory (append-only file and ``nodes.conf``) stays, so
        :meth:`restart_node` brings it back with its data and its place in the cluster.
        """
        self.servers[index].kill()

    def restart_node(self, index: int, wait: bool = True) -> None:
        """Start node ``index`` again on its old port; with ``wait``, also wait until
        every node reports ``cluster_state:ok``.

        Raises
        ------
        ServerStartError
            The node does not start, or the cluster does not become healthy in time.
        """
        server = self.servers[index]
        server._requested_port = server._bound_port()  # the cluster knows the node by its port
        server.start()
        if wait:
            self._wait_ok()

    def _wait_ok(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            try:
                if all(b"cluster_state:ok" in _command(p, "CLUSTER", "INFO") for p in self.ports):
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise ServerStartError("the Redis cluster did not reach cluster_state:ok")

    def stop(self) -> None:
        """Stop every node (with a save)."""
        for server in self.servers:
            server.stop()

    def __enter__(self) -> RedisClusterServer:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()
