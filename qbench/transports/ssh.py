"""Measure on another machine over ssh: prepare here, measure there, one JSON row back.

    transport:
      name: ssh
      params: {host: devboard.local, user: mendel, key: ~/.ssh/id_ed25519}

Prepare runs on this host exactly as with the subprocess transport (the host has the
compilers, torch and the artifact cache). Then, through the system `ssh` client:

1. one connection per cell (an OpenSSH control master, BatchMode: never a password prompt),
   opened before prepare so an unreachable device fails the cell at once;
2. a fresh folder REMOTE_TMP/qbench-RANDOM receives, as one tar stream, cell.json, the
   artifact (with its metadata), the eval inputs, the fp32 reference outputs and a
   prepared.json whose paths name those copies;
3. qbench's agent (`REMOTE_PYTHON -c ...`, see qbench.transports.subprocess.agent_argv: the
   folder is kept off its import path) measures there under `timeout` with the cell's thread
   variables, the forwarded QBENCH_PLUGINS and the device file's `env`; the ssh call itself
   is guarded too, in case the connection hangs;
4. measure.json comes back with `cat`, and is merged with prepare's result as the subprocess
   transport does;
5. whatever happened, the stage's process group is killed and the folder removed.

The device needs Python with qbench and the backend's runtime installed (`pip install
qbench[litert]` or similar), and a POSIX `sh` with `tar`, `timeout`, `cat` and `kill`.
Host keys are verified: `host_key_check: strict` (the default) connects only to a host whose
key is already in `known_hosts` (default ~/.ssh/known_hosts); add it once, after checking its
fingerprint, with `ssh-keyscan -p PORT HOST >> ~/.ssh/known_hosts`. `accept-new` records an
unknown host's key in `known_hosts` on first use (trust on first use) and refuses a changed
one; `off` verifies nothing (a throw-away lab network only). `host` and `user` are checked at
plan time (a host that begins with `-` would be read by ssh as an option), every ssh call
puts `--` before the destination, and qbench's own options come first on the command line (ssh
keeps the first value it is given: a device file's `options` or ~/.ssh/config cannot undo
them). `options` are checked at plan time (`option_problem`): refused are those qbench sets
itself, those that change which host keys are trusted (GlobalKnownHostsFile, HostKeyAlias,
VerifyHostKeyDNS, ...), and those that make ssh run a program or load a library on this host
(ProxyCommand, LocalCommand, KnownHostsCommand, PKCS11Provider, SecurityKeyProvider, Include,
Match, ...). ProxyJump is allowed with plain [user@]host[:port] hops: the device's key is
still checked end to end as host_key_check says (a jump host's by ssh's own configuration).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import posixpath
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from qbench.params import CheckError, Params
from qbench.plan import Cell
from qbench.plugins import transports
from qbench.transports import _remote
from qbench.transports._remote import failed as _failed
from qbench.transports.base import Transport, traceback_tail
from qbench.transports.subprocess import THREAD_VARS, run_stage, wait_or_kill

HOST_KEY_OPTION = {"strict": "yes", "accept-new": "accept-new", "off": "no"}
# Seconds the local guard allows beyond the remote `timeout` (connection setup, teardown).
GUARD_S = 15
# Seconds for each housekeeping call (mkdir + upload have their own, size-based budget).
HOUSEKEEPING_S = 60


# A host name, IPv4/IPv6 address (with a zone) or ssh_config alias; never an option.
_HOST = re.compile(r"^[A-Za-z0-9_\[][A-Za-z0-9_.:%\[\]-]*$")
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*\$?$")
_OPTION = re.compile(r"^([A-Za-z][A-Za-z0-9]*)[ =]")
# A ProxyJump hop: [user@]host[:port], host a name or a bracketed IPv6 address.
_JUMP = re.compile(r"^(?:[A-Za-z0-9_][A-Za-z0-9_.-]*@)?"
                   r"(?:[A-Za-z0-9_][A-Za-z0-9_.-]*|\[[0-9A-Fa-f:.]+(?:%[A-Za-z0-9_.-]+)?\])"
                   r"(?::[0-9]{1,5})?$")  # fmt: skip
# What a device file's `options` may not set (ssh option names are case-insensitive), and why.
# qbench's own options come first on the command line and ssh keeps the first value it is
# given, so one of them set here would be ignored; refused rather than seemingly accepted.
_OWN_OPTIONS = {
    "batchmode": "qbench sets it (never a password prompt)",
    "connecttimeout": "set by connect_timeout",
    "stricthostkeychecking": "set by host_key_check",
    "userknownhostsfile": "set by known_hosts",
    "loglevel": "qbench sets it",
    "serveraliveinterval": "qbench sets it",
    "serveralivecountmax": "qbench sets it",
    "identitiesonly": "set by key",
    "controlmaster": "set by multiplex",
    "controlpath": "set by multiplex",
    "controlpersist": "set by multiplex",
    "port": "set by port",
}
# Options that change which host keys ssh trusts for the device (known_hosts and
# host_key_check say that, alone; UpdateHostKeys lets the device add keys to that file).
_TRUST_OPTIONS = ("globalknownhostsfile", "hostkeyalias", "nohostauthenticationforlocalhost",
                  "verifyhostkeydns", "updatehostkeys")  # fmt: skip
# Options that make ssh run a program or load a library on this host (Include and Match
# could bring any of them in).
_EXEC_OPTIONS = ("proxycommand", "localcommand", "permitlocalcommand", "knownhostscommand",
                 "pkcs11provider", "securitykeyprovider", "xauthlocation", "include",
                 "match")  # fmt: skip


class SshParams(Params):
    host: str = Field(
        max_length=253,
        description="host name or address of the device (or a ~/.ssh/config Host); letters, "
        "digits and . _ - : % [ ], not starting with -",
    )
    user: str | None = Field(
        default=None,
        max_length=64,
        description="login user (default: ~/.ssh/config's, else the current user)",
    )
    port: int = Field(default=22, ge=1, le=65535, description="sshd port")
    key: str | None = Field(default=None, description="private key file (default: ssh's own)")
    remote_python: str = Field(
        default="python3", description="interpreter on the device that runs qbench's agent"
    )
    remote_tmp: str = Field(
        default="/tmp",
        description="folder on the device under which each cell gets its own, removed after",
    )
    connect_timeout: int = Field(
        default=10,
        ge=1,
        le=600,
        description="seconds to establish a connection (at most 600: a host that takes longer "
        "to answer is down, and every connection of a run would wait that long first)",
    )
    known_hosts: str = Field(
        default="~/.ssh/known_hosts",
        description="known_hosts file holding the device's host key (see host_key_check)",
    )
    host_key_check: Literal["strict", "accept-new", "off"] = Field(
        default="strict",
        description="strict: the host key must already be in known_hosts (add it with "
        "`ssh-keyscan -p PORT HOST >> FILE` after checking its fingerprint); accept-new: an "
        "unknown host's key is recorded there on first use, a changed one refused; off: no "
        "verification (anyone on the path can pose as the device)",
    )
    forward_env: list[str] = Field(
        default=list(_remote.FORWARDED_ENV_DEFAULT),
        description="host environment variables passed on to the device when set",
    )
    env: dict[str, str] = Field(default={}, description="extra environment on the device")
    options: list[str] = Field(
        default=[],
        description="extra ssh -o options (KEY=VALUE), after qbench's own; refused: those qbench "
        "sets, those that widen host-key trust, run a program or load a library (README: "
        "Remote devices)",
    )
    multiplex: bool = Field(
        default=True, description="one ssh connection per cell (OpenSSH ControlMaster)"
    )

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if not _HOST.match(value):
            raise ValueError("expected a host name, address or ~/.ssh/config alias (letters, "
                             "digits, . _ - : % [ ]; not starting with -)")  # fmt: skip
        return value

    @field_validator("user")
    @classmethod
    def _user(cls, value: str | None) -> str | None:
        if value is not None and not _USER.match(value):
            raise ValueError("expected a user name (letters, digits, . _ -; not starting with -)")
        return value

    @field_validator("options")
    @classmethod
    def _options(cls, value: list[str]) -> list[str]:
        for option in value:
            why = option_problem(option)
            if why is not None:
                raise ValueError(f"{option!r}: {why}")
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
                raise ValueError(f"{name!r}: expected an environment variable name")
        return value


def option_problem(option: str) -> str | None:
    """Why a device file's ssh option is refused (what is expected instead), or None."""
    found = _OPTION.match(option)
    if found is None or any(ord(c) < 32 or c == "\x7f" for c in option):
        return "expected KEY=VALUE (or KEY VALUE) on one line"
    name = found.group(1).lower()
    if name in _OWN_OPTIONS:
        return f"expected an option qbench does not set ({found.group(1)}: {_OWN_OPTIONS[name]})"
    if name in _TRUST_OPTIONS:
        return ("options that change which host keys are trusted are refused (expected the "
                "device's key in known_hosts, checked as host_key_check says)")  # fmt: skip
    if name in _EXEC_OPTIONS:
        return ("options that make ssh run a program or load a library on this host are "
                "refused (set them in ~/.ssh/config if you mean it)")  # fmt: skip
    if name == "proxyjump":
        hops = option[found.end() :].strip(" =\t")
        if hops.lower() != "none" and not all(_JUMP.match(h) for h in hops.split(",")):
            return "expected ProxyJump=[USER@]HOST[:PORT][,...] (or none)"
    return None


def ssh_config_path(path: str) -> str:
    """A file name as an ssh option's value, read back by ssh as exactly that one file: in
    double quotes (ssh splits a value at spaces, and UserKnownHostsFile takes a list), with
    quotes and backslashes escaped and % doubled (ssh expands %h, %u, ... in file names)."""
    escaped = path.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'"{escaped}"'


class _Ssh:
    """The system ssh client, configured once per cell."""

    def __init__(self, params: SshParams, workdir: Path) -> None:
        self.params = params
        self.workdir = workdir
        self.dest = f"{params.user}@{params.host}" if params.user else params.host
        self.where = f"{self.dest}:{params.port}" if params.port != 22 else self.dest
        self.known_hosts = (
            os.devnull if params.host_key_check == "off" else os.path.expanduser(params.known_hosts)
        )
        # Unix sockets have a ~100-byte path limit: keep the control socket short, in /tmp.
        self.control_dir = Path(tempfile.mkdtemp(prefix="qb-ssh-")) if params.multiplex else None
        self.master = False

    def argv(self, *extra: str) -> list[str]:
        p = self.params
        # qbench's options first: ssh keeps the first value it is given for an option, so
        # nothing after them (a device file's `options`, ~/.ssh/config) changes them.
        args = [
            "ssh", "-T", "-p", str(p.port),
            "-o", f"StrictHostKeyChecking={HOST_KEY_OPTION[p.host_key_check]}",
            "-o", f"UserKnownHostsFile={ssh_config_path(self.known_hosts)}",
            "-o", "BatchMode=yes",
            "-o", f"ConnectTimeout={p.connect_timeout}",
            "-o", "LogLevel=ERROR",
            "-o", "ServerAliveInterval=15",
            "-o", "ServerAliveCountMax=4",
        ]  # fmt: skip
        if p.key:
            args += ["-i", os.path.expanduser(p.key), "-o", "IdentitiesOnly=yes"]
        if self.control_dir is not None:
            args += ["-o", f"ControlPath={ssh_config_path(str(self.control_dir / 'c'))}"]
        for option in p.options:  # checked at plan time: none of them overrides the above
            args += ["-o", option]
        return [*args, *extra]

    def open(self) -> str | None:
        """Connect (the control master when multiplexing). None, or why it failed."""
        log = self.workdir / "ssh-connect.stderr"
        if self.control_dir is not None:
            argv = self.argv(
                "-o", "ControlMaster=yes", "-o", "ControlPersist=600", "-f", "-N", "--", self.dest
            )
        else:
            argv = self.argv("--", self.dest, "true")
        with open(log, "wb") as err:
            try:
                proc = subprocess.run(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                    timeout=self.params.connect_timeout + GUARD_S,
                )
            except subprocess.TimeoutExpired:
                return f"no answer within {self.params.connect_timeout + GUARD_S} s"
        if proc.returncode != 0:
            why = _remote.last_line(log.read_text(errors="replace")) or (
                f"ssh exited with code {proc.returncode}"
            )
            if "host key" in why.lower():
                p = self.params
                why += (f" (known_hosts {self.known_hosts}: add the device's key after checking "
                        f"its fingerprint, `ssh-keyscan -p {p.port} {p.host} >> "
                        f"{shlex.quote(self.known_hosts)}`, or set host_key_check)")  # fmt: skip
            return why
        self.master = self.control_dir is not None
        return None

    def command(self, script: str) -> list[str]:
        """ssh argv running `script` with sh on the device, whatever the login shell is."""
        mux = ["-o", "ControlMaster=no"] if self.control_dir is not None else []
        return self.argv(*mux, "--", self.dest, "sh -c " + shlex.quote(script))

    def run(
        self, script: str, timeout: float, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            self.command(script),
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
        )

    def close(self) -> None:
        if self.master:
            subprocess.run(
                self.argv("-O", "exit", "--", self.dest),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=HOUSEKEEPING_S,
            )
            self.master = False
        if self.control_dir is not None:
            shutil.rmtree(self.control_dir, ignore_errors=True)


def _tar_stream(members: list[tuple[Path | bytes, str]], fh: Any) -> int:
    """Write (local file or bytes, name) members as a ustar stream; return payload bytes."""
    total = 0
    with tarfile.open(fileobj=fh, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
        for source, name in members:
            info = tarfile.TarInfo(name)
            info.mtime = int(time.time())
            info.mode = 0o644
            if isinstance(source, bytes):
                info.size = len(source)
                tar.addfile(info, io.BytesIO(source))
            else:
                info.size = source.stat().st_size
                with open(source, "rb") as src:
                    tar.addfile(info, src)
            total += info.size
    return total


@transports.register
class SshTransport(Transport):
    name = "ssh"
    description = "prepare here, measure on another machine over ssh (qbench's agent there)"
    Params = SshParams

    def check(self, params: Params) -> None:
        """Files the connection needs exist, the remote folder is absolute (plan time, no
        connection made)."""
        assert isinstance(params, SshParams)
        if params.key and not Path(os.path.expanduser(params.key)).is_file():
            raise CheckError("key", f"{params.key}: no such private key file")
        if params.host_key_check != "off":
            known = Path(os.path.expanduser(params.known_hosts))
            if params.host_key_check == "strict" and not known.is_file():
                raise CheckError("known_hosts", f"{params.known_hosts}: no such file; with "
                                 "host_key_check strict the device's host key must be in it: "
                                 f"`ssh-keyscan -p {params.port} {params.host} >> "
                                 f"{params.known_hosts}` after checking its fingerprint, or "
                                 "host_key_check: accept-new")  # fmt: skip
            if known.exists() and not known.is_file():
                raise CheckError("known_hosts", f"{params.known_hosts}: is not a file")
        if not posixpath.isabs(params.remote_tmp):
            raise CheckError("remote_tmp", f"{params.remote_tmp}: expected an absolute path")

    def run_cell(self, cell: Cell, workdir: Path, params: Params) -> dict[str, Any]:
        assert isinstance(params, SshParams)
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "cell.json").write_text(json.dumps(cell.to_json()))
        deadline = time.monotonic() + cell.measurement["timeout_s"]
        if shutil.which("ssh") is None:
            return _failed("ssh transport: no `ssh` client on this host (install openssh-client)")
        conn = _Ssh(params, workdir)
        remote_dir: str | None = None
        try:
            why = conn.open()
            if why is not None:
                return _failed(f"ssh: cannot reach {conn.where}: {why}")

            env = dict(os.environ)
            env.update(dict.fromkeys(THREAD_VARS, str(os.cpu_count() or 1)))
            prepared = run_stage(sys.executable, "prepare", workdir, env,
                                 deadline - time.monotonic())  # fmt: skip
            if prepared.get("status") != "ok":
                return {**prepared, "error": f"prepare: {prepared.get('error', '')}"}
            (workdir / "prepared.json").write_text(json.dumps(prepared))

            remote_dir = posixpath.join(params.remote_tmp, f"qbench-{secrets.token_hex(8)}")
            started = time.monotonic()
            problem = self._upload(conn, cell, prepared, remote_dir, deadline)
            if problem is not None:
                return {**prepared, **problem}
            copy_s = time.monotonic() - started

            measured, fetch_s = self._measure(conn, cell, params, remote_dir, deadline)
            copy_s += fetch_s
            note = f"measured over ssh on {conn.where}; copying files took {copy_s:.2f} s"
            merged = _remote.merge(prepared, measured, note)
            merged["remote_host"] = conn.where
            merged["copy_s"] = copy_s
            return merged
        except subprocess.TimeoutExpired as exc:
            return {"status": "timeout", "error": f"ssh to {conn.where}: {exc}"}
        except OSError as exc:
            return _failed(f"ssh to {conn.where}: {type(exc).__name__}: {exc}")
        finally:
            if remote_dir is not None:
                with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                    conn.run(_remote.cleanup_script(remote_dir), timeout=HOUSEKEEPING_S)
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                conn.close()

    @staticmethod
    def _upload(
        conn: _Ssh, cell: Cell, prepared: dict[str, Any], remote_dir: str, deadline: float
    ) -> dict[str, Any] | None:
        """Create the cell's folder and fill it in one tar stream. None, or a failed result."""
        files = _remote.measure_files(prepared)
        on_device = _remote.remote_prepared(prepared, files, remote_dir)
        members: list[tuple[Path | bytes, str]] = [
            (json.dumps(cell.to_json()).encode(), "cell.json"),
            (json.dumps(on_device).encode(), "prepared.json"),
            *((local, name) for _, local, name in files),
        ]
        q = shlex.quote
        parent = posixpath.dirname(remote_dir)
        script = (
            f"mkdir -p {q(parent)} && mkdir -m 700 {q(remote_dir)} && "
            f"tar -x -f - -C {q(remote_dir)}"
        )
        log = conn.workdir / "ssh-upload.stderr"
        with open(log, "wb") as err:
            proc = subprocess.Popen(
                conn.command(script),
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )
            assert proc.stdin is not None
            try:  # a device that fails early (no space, no tar) closes the pipe: its error wins
                _tar_stream(members, proc.stdin)
            except (BrokenPipeError, ValueError):
                pass
            finally:
                with contextlib.suppress(BrokenPipeError, ValueError):
                    proc.stdin.close()
            if not wait_or_kill(proc, max(1.0, deadline - time.monotonic())):
                return _remote.timeout_result("copying files to the device", 0)
        if proc.returncode != 0:
            why = _remote.last_line(log.read_text(errors="replace"))
            return _failed(
                f"ssh: copying files to {conn.where}:{remote_dir} failed "
                f"(exit code {proc.returncode}){': ' + why if why else ''}"
            )
        return None

    @staticmethod
    def _measure(
        conn: _Ssh, cell: Cell, params: SshParams, remote_dir: str, deadline: float
    ) -> tuple[dict[str, Any], float]:
        """Run measure on the device; (its result, seconds spent fetching it)."""
        limit = deadline - time.monotonic()
        if limit <= 0:
            return _remote.timeout_result("measure", 0), 0.0
        env = _remote.remote_env(cell, remote_dir, dict(os.environ), params.forward_env, params.env)
        argv = _remote.measure_argv(params.remote_python, remote_dir)
        script = _remote.stage_script(remote_dir, argv, env, limit, "measure")
        log = conn.workdir / "ssh-measure.stderr"
        with open(log, "wb") as err:
            proc = subprocess.Popen(
                conn.command(script),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )
            # The device's `timeout` stops the stage; this guard only catches a hung link.
            if not wait_or_kill(proc, limit + _remote.KILL_AFTER_S + GUARD_S):
                return _remote.timeout_result("measure", limit), 0.0
        code = proc.returncode
        if code == _remote.TIMEOUT_EXIT:
            return _remote.timeout_result("measure", limit), 0.0
        if code == 255:  # ssh's own failure (the agent never exits 255)
            why = _remote.last_line(log.read_text(errors="replace"))
            return _failed(f"ssh to {conn.where} failed during measure: {why or 'exit 255'}"), 0.0

        started = time.monotonic()
        fetched = conn.run(
            f"cat {shlex.quote(posixpath.join(remote_dir, 'measure.json'))}",
            timeout=HOUSEKEEPING_S,
        )
        fetch_s = time.monotonic() - started
        result = (
            _remote.load_json_text(fetched.stdout.decode(errors="replace"))
            if fetched.returncode == 0
            else None
        )
        if result is not None:
            return result, fetch_s
        tail = conn.run(
            f"tail -n 20 {shlex.quote(posixpath.join(remote_dir, 'measure.stderr'))}",
            timeout=HOUSEKEEPING_S,
        )
        stderr = tail.stdout.decode(errors="replace")
        why = _remote.describe_remote_exit("measure", code, _remote.last_line(stderr), conn.where)
        return _failed(why, traceback=traceback_tail(stderr)), fetch_s
