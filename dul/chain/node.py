"""The embedded chain: anvil out of everyone's reach, the permissioned proxy on the public port.

anvil cannot close its cheat methods (anvil_*, evm_*), so nobody but the proxy may reach it: it
runs without dev accounts in a network namespace of its own (`unshare -n`, `-rn` when not
root), where its TCP listener is unreachable, and answers the proxy on its IPC socket in a
0700 directory under `Home.run_dir`. Where namespaces are unavailable it falls back to an
internal 127.0.0.1 port, loudly (`ChainStatus.warning`).

Both run detached (own session, output in `Home.logs_dir`, pid files in `Home.run_dir`), so the
ledger outlives the command that started it. `Home.run_dir/chain.json` records the endpoint for
every other command and process; `rpc_url(home)` reads it (`DUL_RPC_URL` overrides it, to use
any other EVM node). anvil keeps the ledger in `Home.chain_state` (dumped every
`state_interval` seconds and on SIGTERM), so `down` + `up` resumes at the same block; `down`
stops block production first (`_settle_blocks`), so the last dump holds every block whole.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import structlog

from dul.chain.ipc import MAX_SOCKET_PATH_BYTES
from dul.chain.rpc import request_once
from dul.chain.rpc_auth import KEY_FILE, PUBLIC_KEY_FILE, issue_token, public_pem, signing_key
from dul.chain.rpc_filter import GAS_PRICE
from dul.chain.settings import ChainSettings
from dul.errors import ChainError, DulError
from dul.home import PRIVATE_UMASK, Home, open_private, write_private

log = structlog.get_logger("dul.chain.node")

CHAIN_INFO_FILE = "chain.json"
ANVIL_PID_FILE = "anvil.pid"
PROXY_PID_FILE = "rpc-proxy.pid"
LOCK_FILE = "chain.lock"
ANVIL_LOG = "anvil.log"
PROXY_LOG = "rpc-proxy.log"
PROXY_MODULE = "dul.rpc_proxy"
#: In the command line of a proxy process, whichever module started it (`dul.chain.rpc_proxy`
#: before the entry point moved above the contract layer).
PROXY_MARKER = "rpc_proxy"
ANVIL_NPM_PATH = Path("node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil")
NODE_DIR = "node"  # under run_dir, 0700: anvil's IPC socket
IPC_SOCKET = "anvil.ipc"
NETNS = "netns+ipc"
LOOPBACK = "loopback"


@dataclass(frozen=True)
class ChainStatus:
    """What `dul chain status --json` prints."""

    running: bool
    rpc_url: str | None = None
    node_url: str | None = None
    chain_id: int | None = None
    block: int | None = None
    port: int | None = None
    node_port: int | None = None
    anvil_pid: int | None = None
    proxy_pid: int | None = None
    state_file: str | None = None
    already_running: bool = False
    start_seconds: float | None = None
    isolation: str | None = None  # NETNS or LOOPBACK while running
    rpc_public_key: str | None = None  # tokens signed by its private half are accepted

    @property
    def warning(self) -> str | None:
        """Said loudly by `dul chain up` / `status` when the node is reachable by local users."""
        if self.isolation != LOOPBACK:
            return None
        return (
            f"the chain node is NOT isolated: anvil listens on {self.node_url}, where every "
            "local user and process can call its cheat methods (anvil_*, evm_*) and rewrite the "
            "ledger. Network namespaces (unshare -n / -rn) are unavailable or "
            "DUL_CHAIN_ISOLATION=loopback is set; use this only on a single-user machine."
        )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["pids"] = {"anvil": self.anvil_pid, "rpc_proxy": self.proxy_pid}
        data["warning"] = self.warning
        return data


# --- locating things ----------------------------------------------------------------------


def _search_roots() -> Iterator[Path]:
    seen: set[Path] = set()
    for start in (Path(__file__).resolve().parent, Path.cwd().resolve()):
        for directory in (start, *start.parents):
            if directory not in seen:
                seen.add(directory)
                yield directory


def find_anvil(explicit: Path | None = None) -> Path:
    """anvil from `DUL_ANVIL_BIN` / settings, else the repository's node_modules, else PATH."""
    candidates: list[Path] = []
    if explicit is not None:
        if not (explicit.is_file() and os.access(explicit, os.X_OK)):
            raise ChainError(
                f"anvil binary not found or not executable at {explicit} (DUL_ANVIL_BIN)",
                code="anvil_missing",
            )
        return explicit
    for root in _search_roots():
        candidates += [root / "node_modules/.bin/anvil", root / ANVIL_NPM_PATH]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    on_path = shutil.which("anvil")
    if on_path is not None:
        return Path(on_path)
    raise ChainError(
        "anvil not found: run `npm ci` in the repository, or set DUL_ANVIL_BIN",
        code="anvil_missing",
    )


def rpc_url(home: Home | None = None) -> str:
    """The JSON-RPC URL every component should use: `DUL_RPC_URL`, else the running chain's."""
    override = os.environ.get("DUL_RPC_URL")
    if override:
        return override
    info = read_chain_info(home or Home.from_env())
    if info is None:
        raise ChainError(
            "the chain is not running: start it with `dul chain up`", code="chain_not_running"
        )
    return str(info["rpc_url"])


def read_chain_info(home: Home) -> dict[str, Any] | None:
    """The `chain.json` written by `dul chain up` (None when absent or unreadable)."""
    try:
        data = json.loads((home.run_dir / CHAIN_INFO_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def port_in_use(host: str, port: int) -> bool:
    """True when something listens on host:port (SO_REUSEADDR ignores TIME_WAIT leftovers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


# --- processes (also used by dul.services for the gateway and audit processes) -----


def process_alive(pid: int, marker: str) -> bool:
    """Is `pid` running and still the process we started (not a reused pid, not a zombie)?"""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False  # our own child, just reaped
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    proc = Path(f"/proc/{pid}")
    if not proc.exists():
        return True  # no procfs: trust the pid
    try:
        stat = (proc / "stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
        cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return marker in cmdline


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def terminate(pid: int, marker: str, timeout: float) -> None:
    """SIGTERM, wait up to `timeout`, then SIGKILL."""
    if not process_alive(pid, marker):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_alive(pid, marker):
            return
        time.sleep(0.02)
    log.warning("process_kill", pid=pid, marker=marker, after_seconds=timeout)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and process_alive(pid, marker):
        time.sleep(0.02)


def namespace_launcher() -> list[str] | None:
    """The command prefix that runs a program in a network namespace of its own, or None.

    `unshare -n` needs CAP_SYS_ADMIN; an unprivileged user gets one inside a user namespace of
    its own (`-r`). Both are tried for real: containers and hardened kernels forbid them.
    """
    unshare = shutil.which("unshare")
    true = shutil.which("true")
    if unshare is None or true is None:
        return None
    prefix = [unshare, "-n"] if os.geteuid() == 0 else [unshare, "-rn"]
    try:
        probe = subprocess.run([*prefix, true], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return prefix if probe.returncode == 0 else None


def _log_tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


# --- the node -----------------------------------------------------------------------------


class ChainNode:
    """Start, stop and inspect the embedded chain of one data directory."""

    #: What the node process's command line contains (pid files are checked against it).
    node_marker = "anvil"
    #: The node process's environment (None: inherit).
    node_env: dict[str, str] | None = None

    def __init__(self, home: Home, settings: ChainSettings | None = None) -> None:
        self.home = home
        self.settings = settings or ChainSettings()

    # paths
    @property
    def info_path(self) -> Path:
        return self.home.run_dir / CHAIN_INFO_FILE

    @property
    def anvil_pid_path(self) -> Path:
        return self.home.run_dir / ANVIL_PID_FILE

    @property
    def proxy_pid_path(self) -> Path:
        return self.home.run_dir / PROXY_PID_FILE

    @property
    def ipc_path(self) -> Path:
        return self.home.run_dir / NODE_DIR / IPC_SOCKET

    @property
    def rpc_key_path(self) -> Path:
        return self.settings.rpc_auth_key or self.home.keys_dir / KEY_FILE

    @property
    def rpc_public_key_path(self) -> Path:
        return self.home.run_dir / PUBLIC_KEY_FILE

    def issue_token(self, subject: str, permissions: Sequence[str], ttl_seconds: int) -> str:
        """An RPC token signed with this chain's key (ConfigError when it cannot be read)."""
        key = signing_key(self.rpc_key_path, create=False)
        return issue_token(key, subject, permissions, ttl_seconds)

    def probe_token(self) -> str | None:
        """A short-lived token for the chain's own checks (None without the signing key)."""
        try:
            return self.issue_token("dul-chain", ("eth:chainId", "eth:blockNumber"), 300)
        except DulError:
            return None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One `up`/`down` at a time per data directory."""
        self.home.ensure()
        with open_private(self.home.run_dir / LOCK_FILE) as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # inspection
    def _pids(self) -> tuple[int | None, int | None]:
        anvil = read_pid(self.anvil_pid_path)
        proxy = read_pid(self.proxy_pid_path)
        return (
            anvil if anvil is not None and process_alive(anvil, self.node_marker) else None,
            proxy if proxy is not None and process_alive(proxy, PROXY_MARKER) else None,
        )

    def status(self) -> ChainStatus:
        """Running means both processes are alive and the public endpoint answers."""
        info = read_chain_info(self.home)
        anvil, proxy = self._pids()
        if info is None or anvil is None or proxy is None:
            return ChainStatus(
                running=False,
                anvil_pid=anvil,
                proxy_pid=proxy,
                state_file=str(self.home.chain_state),
            )
        url = str(info["rpc_url"])
        token = self.probe_token()
        try:
            block = int(request_once(url, "eth_blockNumber", timeout=2.0, token=token), 16)
            chain_id = int(request_once(url, "eth_chainId", timeout=2.0, token=token), 16)
        except (httpx.HTTPError, OSError, ValueError, ChainError):
            return ChainStatus(
                running=False,
                anvil_pid=anvil,
                proxy_pid=proxy,
                state_file=str(self.home.chain_state),
            )
        node_port = info.get("node_port")
        return ChainStatus(
            running=True,
            rpc_url=url,
            node_url=str(info["node_url"]),
            chain_id=chain_id,
            block=block,
            port=int(info["port"]),
            node_port=int(node_port) if node_port is not None else None,
            anvil_pid=anvil,
            proxy_pid=proxy,
            state_file=str(self.home.chain_state),
            isolation=str(info.get("isolation", LOOPBACK)),
            rpc_public_key=info.get("rpc_public_key"),
        )

    # lifecycle
    def start(self) -> ChainStatus:
        """Start anvil and the proxy, wait until `eth_chainId` answers through the proxy.

        Idempotent: when already running, returns the status with `already_running=True`.
        """
        with self._locked():
            current = self.status()
            if current.running:
                return ChainStatus(**{**asdict(current), "already_running": True})
            self._stop_locked()  # leftovers of a crashed run
            return self._start_locked()

    def _isolation(self) -> list[str] | None:
        """The namespace launcher, or None for the loopback fallback (as settings allow)."""
        wanted = self.settings.isolation
        if wanted == "loopback":
            return None
        launcher = namespace_launcher()
        if launcher is None:
            if wanted == "netns":
                raise ChainError(
                    "network namespaces are unavailable here (`unshare -n` / `unshare -rn` "
                    "failed), so the node cannot be isolated; allow unprivileged user "
                    "namespaces, run as root, or accept DUL_CHAIN_ISOLATION=loopback",
                    code="isolation_unavailable",
                )
            log.warning("chain_isolation_unavailable", fallback=LOOPBACK)
        return launcher

    def _prepare_ipc(self) -> Path:
        """A fresh socket path in a 0700 directory (only this user may even find it)."""
        path = self.ipc_path
        if len(os.fsencode(path)) > MAX_SOCKET_PATH_BYTES:
            raise ChainError(
                f"the node's IPC socket path {path} is longer than a unix socket allows "
                f"({MAX_SOCKET_PATH_BYTES} bytes): use a shorter DUL_HOME",
                code="config_error",
            )
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        path.unlink(missing_ok=True)  # left by a node that was killed
        return path

    def _start_locked(self) -> ChainStatus:
        s = self.settings
        began = time.monotonic()
        launcher = self._isolation()
        isolation = LOOPBACK if launcher is None else NETNS
        node_host = "127.0.0.1"
        node_port = s.effective_node_port
        checks = [(s.host, s.port, "public RPC")]
        if launcher is None:
            if node_port == s.port:
                raise ChainError(
                    "the node port must differ from the public port", code="config_error"
                )
            checks.append((node_host, node_port, "internal node"))
        for host, port, what in checks:
            if port_in_use(host, port):
                raise ChainError(
                    f"port {port} on {host} ({what}) is already in use: choose another with "
                    "--port / --node-port or DUL_CHAIN_PORT / DUL_CHAIN_NODE_PORT",
                    code="port_in_use",
                    port=port,
                )
        self.home.chain_dir.mkdir(parents=True, exist_ok=True)
        key = signing_key(self.rpc_key_path, create=True)
        write_private(self.rpc_public_key_path, public_pem(key).decode())
        token = self.probe_token()
        public_host = "127.0.0.1" if s.host in ("0.0.0.0", "") else s.host  # noqa: S104 - mapping a wildcard bind to a connectable address
        rpc = f"http://{public_host}:{s.port}"

        ipc = None if launcher is None else str(self._prepare_ipc())
        anvil_args, node_url, anvil_bin = self._node_command(launcher, node_host, node_port, ipc)
        anvil_log = self.home.logs_dir / ANVIL_LOG
        started: list[subprocess.Popen[bytes]] = []
        anvil = self._spawn(anvil_args, anvil_log, self.anvil_pid_path, env=self.node_env)
        started.append(anvil)
        log.info(
            "anvil_started",
            pid=anvil.pid,
            node_url=node_url,
            isolation=isolation,
            bin=str(anvil_bin),
        )
        try:
            self._wait_ready(node_url, anvil, self.node_marker, anvil_log, began)
            proxy_args = [
                sys.executable, "-m", PROXY_MODULE,
                "--upstream", node_url,
                "--host", s.host,
                "--port", str(s.port),
                "--deployment", str(self.home.deployment),
                "--jwt-public-key", str(self.rpc_public_key_path),
                "--log-level", s.proxy_log_level,
            ]  # fmt: skip
            if s.operator_address:
                proxy_args += ["--operator", s.operator_address]
            proxy_log = self.home.logs_dir / PROXY_LOG
            proxy = self._spawn(proxy_args, proxy_log, self.proxy_pid_path, env=_proxy_env())
            started.append(proxy)
            log.info("rpc_proxy_spawned", pid=proxy.pid, rpc_url=rpc)
            self._wait_ready(rpc, proxy, PROXY_MARKER, proxy_log, began, token)
            chain_id = int(request_once(rpc, "eth_chainId", token=token), 16)
            if chain_id != s.chain_id:
                raise ChainError(
                    f"the node reports chain id {chain_id}, expected {s.chain_id} "
                    f"(state file {self.home.chain_state} belongs to another chain?)",
                    code="chain_id_mismatch",
                )
            block = int(request_once(rpc, "eth_blockNumber", token=token), 16)
        except BaseException:
            # Stop through our own handles: right after fork /proc may not show the
            # exec'd command line yet, so the pid-file path could miss them.
            for process in reversed(started):
                _stop_child(process, self.settings.stop_timeout)
            self._stop_locked()
            raise
        info = {
            "rpc_url": rpc,
            "node_url": node_url,
            "isolation": isolation,
            "rpc_public_key": str(self.rpc_public_key_path),
            "host": s.host,
            "port": s.port,
            "node_port": node_port if launcher is None else None,
            "chain_id": chain_id,
            "anvil_pid": anvil.pid,
            "proxy_pid": proxy.pid,
            "block_time": s.block_time,
            "state_file": str(self.home.chain_state),
            "anvil_bin": anvil_bin,
            "started_at": time.time(),
        }
        write_private(self.info_path, json.dumps(info, indent=2))
        elapsed = round(time.monotonic() - began, 3)
        status = ChainStatus(
            running=True,
            rpc_url=rpc,
            node_url=node_url,
            chain_id=chain_id,
            block=block,
            port=s.port,
            node_port=node_port if launcher is None else None,
            anvil_pid=anvil.pid,
            proxy_pid=proxy.pid,
            state_file=str(self.home.chain_state),
            start_seconds=elapsed,
            isolation=isolation,
            rpc_public_key=str(self.rpc_public_key_path),
        )
        log.info("chain_up", rpc_url=rpc, chain_id=chain_id, block=block, seconds=elapsed)
        if status.warning is not None:
            log.warning("chain_not_isolated", node_url=node_url)
        return status

    def _node_command(
        self, launcher: list[str] | None, host: str, port: int, ipc: str | None
    ) -> tuple[list[str], str, str]:
        """The node's command line, the URL (or IPC path) it answers on, and its binary."""
        s = self.settings
        anvil_bin = find_anvil(s.anvil_bin)
        args = [
            str(anvil_bin),
            "--accounts", "0",  # no unlocked dev accounts, in either mode
            "--host", host,
            "--port", str(port),  # inside the namespace: unreachable from outside
            "--chain-id", str(s.chain_id),
            "--block-time", _format_seconds(s.block_time),
            "--base-fee", str(GAS_PRICE),
            "--gas-price", str(GAS_PRICE),
            "--gas-limit", str(s.gas_limit),
            "--state", str(self.home.chain_state),
            "--state-interval", str(s.state_interval),
            # Past its in-memory window (a few hundred blocks) anvil would write every block's
            # whole state under ~/.foundry: gigabytes an hour, never removed after a kill.
            # Older state is dropped instead, as a Besu Bonsai node keeps its last 512 layers.
            "--max-persisted-states", "0",
            "--silent",
        ]  # fmt: skip
        if launcher is None or ipc is None:
            return args, f"http://{host}:{port}", str(anvil_bin)
        return [*launcher, *args, "--ipc", ipc], ipc, str(anvil_bin)

    def _spawn(
        self, args: list[str], log_path: Path, pid_path: Path, env: dict[str, str] | None
    ) -> subprocess.Popen[bytes]:
        self.home.logs_dir.mkdir(parents=True, exist_ok=True)
        with open_private(log_path) as out:
            process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # detached: Ctrl-C on `dul chain up` does not stop it
                close_fds=True,
                env=env,
                cwd=self.home.root,
                umask=PRIVATE_UMASK,  # the chain state and whatever else it writes: 0600
            )
        write_private(pid_path, f"{process.pid}\n")
        return process

    def _wait_ready(
        self,
        url: str,
        process: subprocess.Popen[bytes],
        marker: str,
        log_path: Path,
        began: float,
        token: str | None = None,
    ) -> None:
        deadline = began + self.settings.start_timeout
        while True:
            if process.poll() is not None:
                raise ChainError(
                    f"{marker} exited during start-up: {_log_tail(log_path) or 'no output'} "
                    f"(log: {log_path})",
                    code="chain_start_failed",
                )
            try:
                request_once(url, "eth_chainId", timeout=1.0, token=token)
                return
            except (httpx.HTTPError, OSError, ValueError, ChainError):
                pass
            if time.monotonic() > deadline:
                raise ChainError(
                    f"{marker} did not answer at {url} within {self.settings.start_timeout:g}s "
                    f"(log: {log_path})",
                    code="chain_start_timeout",
                )
            time.sleep(0.02)

    def stop(self) -> bool:
        """Stop proxy then node (anvil dumps its state on SIGTERM). False if nothing ran."""
        with self._locked():
            return self._stop_locked()

    def _stop_locked(self) -> bool:
        info = read_chain_info(self.home) or {}
        stopped = False
        for pid_path, marker in (
            (self.proxy_pid_path, PROXY_MARKER),
            (self.anvil_pid_path, self.node_marker),
        ):
            pid = read_pid(pid_path)
            if pid is not None and process_alive(pid, marker):
                if marker == self.node_marker and info.get("node_url"):
                    _settle_blocks(str(info["node_url"]))
                terminate(pid, marker, self.settings.stop_timeout)
                log.info("process_stopped", pid=pid, process=marker)
                stopped = True
            pid_path.unlink(missing_ok=True)
        self.info_path.unlink(missing_ok=True)
        self.ipc_path.unlink(missing_ok=True)
        if stopped:
            self._wait_ports_released(info)
        return stopped

    def _wait_ports_released(self, info: dict[str, Any]) -> None:
        """A process's command line empties while it exits, before the kernel closes its
        sockets: wait for the ports too, so a start right after a stop finds them free."""
        s = self.settings
        deadline = time.monotonic() + s.stop_timeout
        ports = [(s.host, s.port)]
        if info.get("isolation", LOOPBACK) == LOOPBACK:  # a namespaced node's port is not ours
            ports.append(("127.0.0.1", s.effective_node_port))
        while any(port_in_use(host, port) for host, port in ports):
            if time.monotonic() > deadline:
                return  # start will name the port that is still taken
            time.sleep(0.02)


def _settle_blocks(node_url: str) -> None:
    """Stop anvil's block production and wait out the block in progress, before its exit dump.

    anvil (1.7.1) dumps its state by reading the block list first and the accounts after,
    outside its mining lock: a block mined in between came back from the dump as account state
    without its block, receipts or logs — accesses held by the contract with no AccessRecorded
    event, and a gateway that found its own transactions' nonces spent by nothing (seen after a
    stop under load). `evm_mine` takes that lock, so it returns after the block in progress;
    it also mines what the pool holds, which the exit would drop. A block production already
    queued behind it is waited for by reading the head until it stays put."""
    try:
        request_once(node_url, "evm_setIntervalMining", 0, timeout=10.0)
        head = None
        for _ in range(10):
            request_once(node_url, "evm_mine", timeout=10.0)
            mined = request_once(node_url, "eth_blockNumber", timeout=10.0)
            time.sleep(0.1)
            head = request_once(node_url, "eth_blockNumber", timeout=10.0)
            if head == mined:
                return
        log.warning("chain_stop_unsettled", head=head)
    except (ChainError, httpx.HTTPError, OSError, ValueError) as exc:
        # an unresponsive node is stopped all the same; its last periodic dump is what it kept
        log.warning("chain_stop_unsettled", error=str(exc))


def _stop_child(process: subprocess.Popen[bytes], timeout: float) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def _format_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _proxy_env() -> dict[str, str]:
    """Make `python -m dul.rpc_proxy` importable even without an installed package."""
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    existing = env.get("PYTHONPATH")
    env["PYTHONPATH"] = package_root if not existing else f"{package_root}{os.pathsep}{existing}"
    return env
