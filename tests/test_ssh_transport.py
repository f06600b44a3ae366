"""The ssh transport against a real OpenSSH server that the test starts on loopback.

The server runs as the current user with throw-away host and client keys, on a free port;
its "remote" side is this machine, so the device's Python is this interpreter. Skipped only
where sshd is not installed (scripts/test.sh installs Debian's openssh-server).
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from qbench.transports import _remote
from qbench.transports.ssh import SshParams, SshTransport
from tests.conftest import REPO, run_qbench, write_suite
from tests.test_device_flags import assert_row_has_this_cpu

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd")


def _find_sshd() -> str | None:
    found = shutil.which("sshd")
    return found or next((p for p in SSHD_CANDIDATES if os.access(p, os.X_OK)), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Sshd:
    port: int
    user: str
    key: Path
    known_hosts: Path
    log: Path

    def params(self, remote_tmp: Path, **extra: object) -> dict[str, object]:
        return {
            "host": "127.0.0.1",
            "port": self.port,
            "user": self.user,
            "key": str(self.key),
            "known_hosts": str(self.known_hosts),
            "remote_python": sys.executable,
            "remote_tmp": str(remote_tmp),
            "forward_env": ["QBENCH_PLUGINS", "PYTHONPATH"],
            **extra,
        }

    def ssh(self, command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ssh", "-p", str(self.port), "-i", str(self.key), "-o", "BatchMode=yes",
             "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=accept-new",
             "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "LogLevel=ERROR",
             f"{self.user}@127.0.0.1", command],
            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
        )  # fmt: skip


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    binary = _find_sshd()
    if binary is None:
        pytest.skip("OpenSSH server (sshd) is not installed; scripts/test.sh installs it")
    d = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "client_key"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "qbench-test", "-f",
             str(d / name)],
            check=True,
        )  # fmt: skip
    shutil.copy(d / "client_key.pub", d / "authorized_keys")
    port = _free_port()
    (d / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1\n"
        f"HostKey {d / 'host_key'}\n"
        f"PidFile {d / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\n"
        "UsePAM no\n"
        "StrictModes no\n"
        "MaxStartups 100\n"
        "MaxSessions 100\n"
    )
    if os.geteuid() == 0:  # privilege separation directory, as the Debian service makes it
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    log = d / "sshd.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [binary, "-D", "-e", "-f", str(d / "sshd_config"), "-p", str(port)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    server = Sshd(port, getpass.getuser(), d / "client_key", d / "known_hosts", log)
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                pytest.fail(f"sshd exited with {proc.returncode}: {log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"sshd did not listen on {port}: {log.read_text()}")
                time.sleep(0.1)
        probe = server.ssh("echo ready")
        assert probe.stdout.strip() == "ready", probe.stderr + log.read_text()
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _device_file(folder: Path, name: str, params: dict[str, object]) -> None:
    (folder / "devices").mkdir(exist_ok=True)
    (folder / "devices" / f"{name}.yaml").write_text(
        json.dumps({"name": name, "kind": "cpu", "transport": {"name": "ssh", "params": params}})
    )


def _remote_entries(sshd: Sshd, folder: Path) -> list[str]:
    listing = sshd.ssh(f"ls -A {folder}")
    assert listing.returncode == 0, listing.stderr
    return listing.stdout.split()


# slow: a suite twice, locally and over ssh (20 s)
@pytest.mark.slow
def test_suite_over_ssh_matches_local(sshd: Sshd, tmp_path: Path, tiny_onnx: Path) -> None:
    """Acceptance: the same cells through ssh give the same rows as the local runner."""
    remote_tmp = tmp_path / "remote-tmp"
    remote_tmp.mkdir()
    _device_file(tmp_path, "loopback", sshd.params(remote_tmp))
    suite = write_suite(
        tmp_path,
        f"""
        name: ssh-vs-local
        models:
          - name: onnx_file
            label: tiny
            params: {{path: {tiny_onnx}, dataset: digits}}
        methods: [fp32, dynamic_int8]
        backends: [onnxruntime]
        devices: [local, loopback]
        measurement: {{warmup: 5, min_iters: 200, min_seconds: 0.2, timeout_s: 120}}
        accuracy: {{samples: 100}}
    """,
    )
    store = tmp_path / "store"
    proc = run_qbench("run", str(suite), "--store", str(store), "--no-report", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["counts"] == {"ok": 4, "failed": 0, "timeout": 0, "skipped": 0}

    rows = pd.read_parquet(store / "results").set_index(["method", "device"])
    for method in ("fp32", "dynamic_int8"):
        local, remote = rows.loc[(method, "local")], rows.loc[(method, "loopback")]
        assert remote.transport == "ssh" and local.transport == "subprocess"
        for column in ("top1", "fp32_agreement", "output_cosine", "output_sqnr_db",
                       "accuracy_samples", "artifact_sha256", "artifact_bytes",
                       "quantized_nodes", "compute_nodes", "runtime_version"):  # fmt: skip
            assert remote[column] == local[column], column
        ratio = remote.latency_p50_ms / local.latency_p50_ms
        assert 1 / 3 <= ratio <= 3, (remote.latency_p50_ms, local.latency_p50_ms)
        assert remote.iters >= 200 and remote.peak_rss_mb > 0
        assert any(n.startswith("measured over ssh on ") for n in remote.notes)
        # The agent read the CPU where it measured: over loopback ssh, this same machine.
        assert_row_has_this_cpu(remote)
        assert_row_has_this_cpu(local)
    assert _remote_entries(sshd, remote_tmp) == []  # every cell's folder removed


def _cell(tmp_path: Path, tiny_onnx: Path, backend: str, timeout_s: float):  # type: ignore[no-untyped-def]
    from qbench.runner import load_plan

    suite = write_suite(
        tmp_path,
        f"""
        name: one-cell
        models:
          - name: onnx_file
            label: tiny
            params: {{path: {tiny_onnx}, dataset: digits}}
        methods: [fp32]
        backends: [{backend}]
        measurement: {{warmup: 2, min_iters: 10, min_seconds: 0.05, timeout_s: {timeout_s}}}
        accuracy: {{samples: 50}}
    """,
        name="one-cell.yaml",
    )
    _, plan, _ = load_plan(suite)
    [cell] = plan.runnable
    return cell


def test_remote_folder_is_removed(sshd: Sshd, tmp_path: Path, tiny_onnx: Path) -> None:
    remote_tmp = tmp_path / "remote-tmp"
    remote_tmp.mkdir()
    before = _remote_entries(sshd, remote_tmp)
    sockets = set(Path("/tmp").glob("qb-ssh-*/c"))
    cell = _cell(tmp_path, tiny_onnx, "onnxruntime", 120)
    result = SshTransport().run_cell(
        cell,
        tmp_path / "work",
        SshParams(**sshd.params(remote_tmp)),  # type: ignore[arg-type]
    )
    assert result["status"] == "ok", result.get("error")
    assert result["remote_host"] == f"{sshd.user}@127.0.0.1:{sshd.port}"
    assert result["copy_s"] > 0
    assert before == [] and _remote_entries(sshd, remote_tmp) == []
    assert set(Path("/tmp").glob("qb-ssh-*/c")) <= sockets  # its control socket is gone


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline:
                pids.append(int(entry.name))
    return pids


# slow: 13 s of timeouts; the default run is near its 15-minute budget
@pytest.mark.slow
def test_measure_timeout_kills_the_remote_stage(
    sshd: Sshd, tmp_path: Path, tiny_onnx: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hanging measure is stopped on the device; the cell reports a timeout, nothing is left."""
    import tests.plugins.faulty  # noqa: F401  (registers the faulty backend here)

    monkeypatch.setenv("QBENCH_PLUGINS", "tests.plugins.faulty")
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    remote_tmp = tmp_path / "remote-tmp"
    remote_tmp.mkdir()
    limit = 12  # seconds: the prepare stage (a few seconds) runs, then the measure hangs
    cell = _cell(tmp_path, tiny_onnx, "{name: faulty, params: {mode: hang}}", limit)

    seen: list[tuple[list[str], list[int]]] = []
    done = threading.Event()

    def watch() -> None:  # what is on the "device" while the cell runs
        while not done.wait(0.5):
            entries = os.listdir(remote_tmp)
            if entries:
                seen.append((entries, _processes_mentioning(str(remote_tmp / entries[0]))))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.monotonic()
    try:
        result = SshTransport().run_cell(
            cell,
            tmp_path / "work",
            SshParams(**sshd.params(remote_tmp)),  # type: ignore[arg-type]
        )
    finally:
        done.set()
        watcher.join()
    elapsed = time.monotonic() - started

    assert result["status"] == "timeout", result
    assert "exceeded the cell's time limit" in result["error"]
    assert elapsed < limit + _remote.KILL_AFTER_S + 10
    assert any(pids for _, pids in seen), "the agent never ran on the device"
    leftovers = {pid for _, pids in seen for pid in pids}
    time.sleep(0.5)
    assert not [p for p in leftovers if Path(f"/proc/{p}").exists()]
    assert os.listdir(remote_tmp) == []


def test_device_side_failures_are_one_line_reasons(
    sshd: Sshd, tmp_path: Path, tiny_onnx: Path
) -> None:
    cell = _cell(tmp_path, tiny_onnx, "onnxruntime", 120)
    remote_tmp = tmp_path / "remote-tmp"
    remote_tmp.mkdir()
    transport = SshTransport()

    no_python = sshd.params(remote_tmp, remote_python="/nonexistent/python3")
    result = transport.run_cell(cell, tmp_path / "a", SshParams(**no_python))  # type: ignore[arg-type]
    assert result["status"] == "failed"
    assert result["error"].startswith(
        f"measure: measure crashed on {sshd.user}@127.0.0.1:{sshd.port}: exit code 127; "
        "last stderr line: "
    )
    assert "/nonexistent/python3" in result["error"] and "\n" not in result["error"]
    assert result["artifact_sha256"]  # prepare's fields are kept

    unwritable = sshd.params(tmp_path / "a-file" / "below")
    (tmp_path / "a-file").write_text("not a folder")
    result = transport.run_cell(cell, tmp_path / "b", SshParams(**unwritable))  # type: ignore[arg-type]
    assert result["status"] == "failed"
    assert result["error"].startswith(f"ssh: copying files to {sshd.user}@127.0.0.1:")
    assert "Not a directory" in result["error"] and "\n" not in result["error"]
    assert os.listdir(remote_tmp) == []


def test_unreachable_host_fails_the_cell_in_one_line(tmp_path: Path, tiny_onnx: Path) -> None:
    cell = _cell(tmp_path, tiny_onnx, "onnxruntime", 60)
    port = _free_port()  # nothing listens there
    started = time.monotonic()
    result = SshTransport().run_cell(
        cell,
        tmp_path / "work",
        SshParams(host="127.0.0.1", port=port, connect_timeout=5, known_hosts=str(tmp_path / "kh")),
    )
    assert result["status"] == "failed"
    assert result["error"].startswith(f"ssh: cannot reach 127.0.0.1:{port}: ")
    assert "Connection refused" in result["error"]
    assert "\n" not in result["error"] and "Traceback" not in result["error"]
    assert time.monotonic() - started < 20  # prepare never ran


def test_remote_helpers(tmp_path: Path) -> None:
    """What travels and how prepared.json is rewritten; the stage script's shape."""
    artifact = tmp_path / "abc.onnx"
    artifact.write_bytes(b"onnx")
    (tmp_path / "abc.onnx.meta.json").write_text("{}")
    inputs = tmp_path / "in.npz"
    inputs.write_bytes(b"npz")
    ref = tmp_path / "sub" / "in.npz"  # same file name: gets a prefix
    ref.parent.mkdir()
    ref.write_bytes(b"npy")
    prepared = {
        "artifact_path": str(artifact),
        "eval_path": str(inputs),
        "reference_path": str(ref),
        "label_note": "n",
        "artifact_bytes": 4,
    }
    files = _remote.measure_files(prepared)
    assert [(k, n) for k, _, n in files] == [
        ("artifact_path", "abc.onnx"),
        ("", "abc.onnx.meta.json"),
        ("eval_path", "in.npz"),
        ("reference_path", "reference_path-in.npz"),
    ]
    remote = _remote.remote_prepared(prepared, files, "/tmp/qbench-x")
    assert remote["artifact_path"] == "/tmp/qbench-x/abc.onnx"
    assert remote["reference_path"] == "/tmp/qbench-x/reference_path-in.npz"
    assert remote["label_note"] == "n" and prepared["artifact_path"] == str(artifact)

    script = _remote.stage_script(
        "/tmp/q x", ["python3", "-m", "qbench.agent"], {"A": "1 2"}, 9.2, "measure"
    )
    assert "cd '/tmp/q x' || exit 97" in script
    assert "A='1 2' $S timeout -s TERM -k 2 10 python3 -m qbench.agent </dev/null" in script
    assert _remote.exit_status("noise\nqbench-exit=124\n", 0) == 124
    assert _remote.exit_status("", 3) == 3
    stage = tmp_path / "stage"
    stage.mkdir()
    out = subprocess.run(
        ["sh", "-c", _remote.stage_script(str(stage), ["sh", "-c", "exit 3"], {}, 5, "s")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 3 and out.stdout.strip() == "qbench-exit=3"
    hang = subprocess.run(
        ["sh", "-c", _remote.stage_script(str(stage), ["sleep", "30"], {}, 1, "h")],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert hang.returncode == _remote.TIMEOUT_EXIT
    subprocess.run(["sh", "-c", _remote.cleanup_script(str(stage), ("s", "h"))], check=True)
    assert not stage.exists()


def test_an_unknown_host_key_is_refused_and_accept_new_records_it(
    sshd: Sshd, tmp_path: Path, tiny_onnx: Path
) -> None:
    """strict (the default) connects only to a pinned key; nothing runs on an unknown host."""
    cell = _cell(tmp_path, tiny_onnx, "onnxruntime", 120)
    remote_tmp = tmp_path / "remote-tmp"
    remote_tmp.mkdir()
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    strict = SshParams(**sshd.params(remote_tmp, known_hosts=str(empty)))  # type: ignore[arg-type]
    assert strict.host_key_check == "strict"
    result = SshTransport().run_cell(cell, tmp_path / "a", strict)
    assert result["status"] == "failed"
    assert "Host key verification failed" in result["error"]
    assert f"ssh-keyscan -p {sshd.port} 127.0.0.1 >> {empty}" in result["error"]
    assert "artifact_sha256" not in result  # refused before prepare: nothing ran anywhere
    assert os.listdir(remote_tmp) == []

    fresh = tmp_path / "tofu_known_hosts"
    tofu = sshd.params(remote_tmp, known_hosts=str(fresh), host_key_check="accept-new")
    result = SshTransport().run_cell(cell, tmp_path / "b", SshParams(**tofu))  # type: ignore[arg-type]
    assert result["status"] == "ok", result.get("error")
    assert "ssh-ed25519" in fresh.read_text()  # recorded: the next strict connection is pinned


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("host", "-oProxyCommand=touch {marker}"),
        ("host", "box;touch {marker}"),
        ("user", "-oProxyCommand=touch {marker}"),
        ("options", ["ProxyCommand=touch {marker}"]),
        ("options", ["LocalCommand touch {marker}"]),
    ],
)
def test_hosts_users_and_options_that_would_run_a_command_are_refused(
    tmp_path: Path, field: str, value: object
) -> None:
    from pydantic import ValidationError

    marker = tmp_path / "pwned"
    given = (
        [v.format(marker=marker) for v in value]
        if isinstance(value, list)
        else str(value).format(marker=marker)
    )
    params = {"host": "box", field: given}
    with pytest.raises(ValidationError) as info:
        SshParams(**params)  # type: ignore[arg-type]
    assert info.value.errors()[0]["loc"][0] == field
    assert not marker.exists()


def test_every_ssh_call_ends_its_options_before_the_destination(tmp_path: Path) -> None:
    from qbench.transports.ssh import _Ssh

    conn = _Ssh(SshParams(host="box", user="me", multiplex=False), tmp_path)
    argv = conn.command("true")
    assert argv[argv.index("me@box") - 1] == "--"
    assert "StrictHostKeyChecking=yes" in argv
    assert f'UserKnownHostsFile="{os.path.expanduser("~/.ssh/known_hosts")}"' in argv
    off = _Ssh(SshParams(host="box", host_key_check="off", multiplex=False), tmp_path)
    assert "StrictHostKeyChecking=no" in off.command("true")
    assert f'UserKnownHostsFile="{os.devnull}"' in off.command("true")


def _effective(argv: list[str]) -> dict[str, str]:
    """What the real ssh makes of a command line (`ssh -G`: its configuration, no connection)."""
    if shutil.which("ssh") is None:
        pytest.skip("no ssh client (openssh-client) on this host")
    done = subprocess.run([argv[0], "-G", *argv[1:]], capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)


def test_qbench_host_key_options_win_in_the_effective_ssh_config(tmp_path: Path) -> None:
    """ssh keeps the first value of an option: qbench's come first, so even options that slip
    past the plan's check (built here without it) leave strict checking of the right file.
    The file's name has spaces, two in a row: unquoted, ssh would read it as several files
    (and print them joined by single spaces)."""
    from qbench.transports.ssh import _Ssh

    known = tmp_path / "known  hosts dir" / "known hosts"
    weakening = ["StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null", "CheckHostIP=yes"]
    checked = SshParams(host="box", known_hosts=str(known)).model_dump()
    params = SshParams.model_construct(**{**checked, "options": weakening})
    for multiplex in (False, True):
        conn = _Ssh(params.model_copy(update={"multiplex": multiplex}), tmp_path)
        try:
            config = _effective(conn.command("true"))
        finally:
            conn.close()
        assert config["stricthostkeychecking"] == "true"
        assert config["userknownhostsfile"] == str(known)
        assert config["batchmode"] == "yes"
        assert config["checkhostip"] == "yes"  # an option that weakens nothing still applies
        if multiplex:
            assert config["controlpath"] == f"{conn.control_dir}/c"


def test_a_known_hosts_file_with_spaces_in_its_path_is_read_whole(
    sshd: Sshd, tmp_path: Path
) -> None:
    """The pinned key sits in a file whose path has spaces: a strict connection succeeds."""
    from qbench.transports.ssh import _Ssh

    known = tmp_path / "pinned  keys" / "known hosts"
    known.parent.mkdir()
    shutil.copy(sshd.known_hosts, known)
    params = SshParams(**sshd.params(tmp_path, known_hosts=str(known)))  # type: ignore[arg-type]
    assert params.host_key_check == "strict"
    conn = _Ssh(params, tmp_path)
    try:
        assert conn.open() is None
        assert conn.run("echo reached", timeout=30).stdout.decode().strip() == "reached"
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("option", "words"),
    [
        ("StrictHostKeyChecking=no", "set by host_key_check"),
        ("stricthostkeychecking no", "set by host_key_check"),
        ("UserKnownHostsFile /dev/null", "set by known_hosts"),
        ("USERKNOWNHOSTSFILE=/dev/null", "set by known_hosts"),
        ("GlobalKnownHostsFile=/tmp/k", "which host keys are trusted"),
        ("HostKeyAlias=trusted.example", "which host keys are trusted"),
        ("NoHostAuthenticationForLocalhost=yes", "which host keys are trusted"),
        ("VerifyHostKeyDNS yes", "which host keys are trusted"),
        ("PKCS11Provider=/tmp/evil.so", "load a library"),
        ("SecurityKeyProvider /tmp/evil.so", "load a library"),
        ("KnownHostsCommand=/bin/true", "run a program"),
        ("Include /tmp/evil_config", "run a program"),
        ("ControlPath=/tmp/elsewhere", "set by multiplex"),
        ("Port=2222", "set by port"),
        ("ProxyJump=-oProxyCommand=touch", "ProxyJump=[USER@]HOST[:PORT]"),
        ("ProxyJump=jump;touch", "ProxyJump=[USER@]HOST[:PORT]"),
        ("SetEnv=A=1\nProxyCommand=touch", "on one line"),
    ],
)
def test_options_that_weaken_or_override_qbench_are_refused(option: str, words: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as info:
        SshParams(host="box", options=[option])
    error = info.value.errors()[0]
    assert error["loc"][0] == "options" and words in error["msg"], error


def test_options_that_weaken_nothing_pass() -> None:
    fine = ["CheckHostIP=yes", "ProxyJump=me@jump.lan:2222,[fe80::1%eth0]", "ProxyJump none",
            "Compression=yes", "IdentityFile=~/.ssh/other",
            "HostKeyAlgorithms=ssh-ed25519"]  # fmt: skip
    assert SshParams(host="box", options=fine).options == fine


def test_a_device_file_that_turns_host_keys_off_is_refused_by_the_plan(tmp_path: Path) -> None:
    """The issue's device file: one line naming the file, the field and what is expected."""
    known = tmp_path / "known_hosts"
    known.write_text("")
    _device_file(tmp_path, "board", {"host": "box", "known_hosts": str(known),
                                     "options": ["StrictHostKeyChecking=no",
                                                 "UserKnownHostsFile=/dev/null"]})  # fmt: skip
    suite = write_suite(tmp_path, "name: t\nmodels: [digits_cnn]\ndevices: [board]\n")
    proc = run_qbench("run", str(suite), "--dry-run", cwd=tmp_path)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    for words in ("board.yaml", "options", "StrictHostKeyChecking=no", "host_key_check"):
        assert words in lines[0], (words, lines[0])


def test_plan_time_check_of_files_and_folders(tmp_path: Path) -> None:
    from qbench.params import CheckError

    transport = SshTransport()
    known = tmp_path / "known_hosts"
    known.write_text("")
    transport.check(SshParams(host="box", known_hosts=str(known)))
    cases = [
        ({"known_hosts": str(tmp_path / "missing")}, "known_hosts", "ssh-keyscan -p 22 box"),
        ({"known_hosts": str(known), "key": str(tmp_path / "no_key")}, "key", "no such"),
        ({"known_hosts": str(known), "remote_tmp": "tmp"}, "remote_tmp", "absolute"),
    ]
    for extra, field, words in cases:
        with pytest.raises(CheckError) as info:
            transport.check(SshParams(host="box", **extra))  # type: ignore[arg-type]
        assert info.value.field == field and words in str(info.value)
    # accept-new creates the file itself; off reads none
    transport.check(SshParams(host="box", known_hosts=str(tmp_path / "new"),
                              host_key_check="accept-new"))  # fmt: skip
    transport.check(SshParams(host="box", known_hosts=str(tmp_path / "x"), host_key_check="off"))
