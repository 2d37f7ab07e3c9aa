"""``switch top`` and ``switch status`` as an operator runs them, against a real
``switch run`` (the demo config on free ports, four simulated banks); ``switch top``
also in a real terminal (tmux). And the start-up refusals of ``[admin]``."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

from switch.admin.status import StatusDocument, status_decoder
from switch.net.clients import PosClient
from switch.terminal import Terminal
from tests.admin.conftest import SwitchRun, wait_until_up
from tests.conftest import REPO
from tests.net.helpers import PAN_ABC, PAN_ICBC, POS_CODEC
from tests.switch_process import (
    SWITCH,
    assert_refused_in_one_line,
    demo_config,
    run_switch,
    write_config,
)


async def sales(run: SwitchRun, pan: str, count: int, *, stan_from: int) -> None:
    """``count`` approved sales of ``pan``, one after the other, on one terminal."""
    terminal = Terminal(terminal_id=f"T{stan_from:07d}")
    client = await PosClient.connect("127.0.0.1", run.pos_port, POS_CODEC, terminal)
    try:
        for stan in range(stan_from, stan_from + count):
            with trio.fail_after(10):
                response = await client.request(terminal.sale(stan, pan, 1000))
            assert response.fields[39] == "00"
    finally:
        await client.aclose()


async def switch_command(*args: str) -> subprocess.CompletedProcess[str]:
    return await trio.to_thread.run_sync(lambda: run_switch(list(args)))


def cells(output: str, row: str) -> list[str]:
    """The cells of the table row that starts with ``row`` (rich draws │ between them)."""
    for line in output.splitlines():
        found = [cell.strip() for cell in line.strip().strip("│┃").split("│")]
        if found and found[0] == row:
            return found
    raise AssertionError(f"no row {row!r} in:\n{output}")


def status_json(run: SwitchRun) -> StatusDocument:
    result = run_switch(["status", "--json", "--config", str(run.config), "--url", run.url])
    assert result.returncode == 0, result.stderr
    return status_decoder.decode(result.stdout)


def approved(document: StatusDocument, bank: str) -> int:
    return next(entry.approved for entry in document.banks if entry.name == bank)


async def test_status_json_is_the_document_counting_what_was_done(
    running_switch: SwitchRun,
) -> None:
    before = status_json(running_switch)
    await sales(running_switch, PAN_ABC, 3, stan_from=1)
    after = status_json(running_switch)
    assert approved(after, "abc") - approved(before, "abc") == 3
    assert after.ready and after.not_ready == []
    assert after.config.path == str(running_switch.config)
    assert [bank.name for bank in after.banks] == ["icbc", "abc", "cmb", "citic"]
    assert all(bank.links_up == 2 for bank in after.banks)


async def test_status_prints_a_table_since_start(running_switch: SwitchRun) -> None:
    await sales(running_switch, PAN_ICBC, 2, stan_from=100)
    result = await switch_command(
        "status", "--config", str(running_switch.config), "--url", running_switch.url
    )
    assert result.returncode == 0, result.stderr
    assert "since start" in result.stdout and "ready" in result.stdout
    icbc = cells(result.stdout, "icbc")
    assert icbc[4] == "100.0%"  # approved
    assert icbc[5] == "2/2"  # links up
    assert cells(result.stdout, "pos")[0] == "pos"
    assert "journal: commit p99" in result.stdout


async def test_top_once_shows_a_second_of_traffic(running_switch: SwitchRun) -> None:
    """Two documents a second apart: the frame's TPS is what happened between them."""
    async with trio.open_nursery() as nursery:
        top = await trio.lowlevel.open_process(
            [
                *SWITCH,
                "top",
                "--once",
                "--config",
                str(running_switch.config),
                "--url",
                running_switch.url,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=REPO,
        )

        async def traffic() -> None:
            stan = 1000
            while top.poll() is None:
                await sales(running_switch, PAN_ICBC, 5, stan_from=stan)
                stan += 5

        nursery.start_soon(traffic)
        assert top.stdout is not None and top.stderr is not None
        with trio.fail_after(30):
            output = b""
            while chunk := await top.stdout.receive_some(65536):
                output += chunk
            assert await top.wait() == 0, (await top.stderr.receive_some(65536)).decode()
    text = output.decode()
    assert "last 1.0 s" in text
    icbc = cells(text, "icbc")
    assert float(icbc[1]) > 0  # TPS over the second
    assert float(cells(text, "cmb")[1]) == 0  # no cmb cards were used
    assert float(cells(text, "pos")[2]) > 0


def test_top_and_status_say_why_when_there_is_nothing_to_read(tmp_path: Path) -> None:
    settings = demo_config(tmp_path)
    settings["admin"]["enabled"] = False
    config = write_config(tmp_path, settings)
    off = run_switch(["status", "--config", str(config)])
    assert off.returncode == 2 and "[admin] enabled is false" in off.stderr
    with_url = run_switch(["top", "--once", "--config", str(config), "--url", "http://127.0.0.1:9"])
    assert with_url.returncode == 1
    assert with_url.stderr.startswith("switch: http://127.0.0.1:9/status: ")
    assert len(with_url.stderr.splitlines()) == 1 and "Traceback" not in with_url.stderr


def test_off_loopback_without_a_token_file_the_switch_refuses_to_start(tmp_path: Path) -> None:
    settings = demo_config(tmp_path)
    settings["admin"]["host"] = "0.0.0.0"
    result = run_switch(["run", "--config", str(write_config(tmp_path, settings))])
    assert_refused_in_one_line(result, "[admin] host '0.0.0.0' is not loopback", "token_file")
    settings["admin"]["token_file"] = str(tmp_path / "no-such-token")
    result = run_switch(["run", "--config", str(write_config(tmp_path, settings))])
    assert_refused_in_one_line(result, "[admin] token_file", "cannot be read")
    assert not (tmp_path / "journal.sqlite3").exists()  # refused before the journal


def test_status_sends_the_token_of_the_config(tmp_path: Path) -> None:
    """A switch on 0.0.0.0 with a token: the command reads the token file the config
    names, and without it is refused."""
    token = tmp_path / "switch-token"  # not where a config without one looks
    token.write_text("a-token-of-thirty-two-characters\n")
    token.chmod(0o600)
    settings = demo_config(tmp_path)
    settings["admin"].update(host="0.0.0.0", token_file=str(token))
    config = write_config(tmp_path, settings)
    log = tmp_path / "switch.out"
    with log.open("wb") as out:
        process = subprocess.Popen([*SWITCH, "run", "--config", str(config)], stdout=out, cwd=REPO)
    try:
        started = wait_until_up(process, log)
        url = f"http://127.0.0.1:{started['admin_port']}"
        result = run_switch(["status", "--json", "--config", str(config), "--url", url])
        assert result.returncode == 0, result.stderr
        assert status_decoder.decode(result.stdout).ready
        del settings["admin"]["token_file"]
        settings["admin"]["host"] = "127.0.0.1"  # a config without the token
        other = write_config(tmp_path, settings, "no-token.toml")
        refused = run_switch(["status", "--config", str(other), "--url", url])
        assert refused.returncode == 1 and "answered 401" in refused.stderr
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0


# -- in a real terminal ----------------------------------------------------------------


class Tmux:
    """A tmux server of the test's own (its socket in the test's folder)."""

    def __init__(self, tmux: str, folder: Path) -> None:
        self.base = [tmux, "-S", str(folder / "tmux.sock")]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.base, *args], capture_output=True, text=True, timeout=30, check=False
        )

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "top").stdout

    def wait_for(self, predicate: str | Path, *, within_s: float = 20.0) -> str:
        """The screen once it shows ``predicate`` (text), or a file once it exists."""
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if isinstance(predicate, Path):
                if predicate.exists() and predicate.read_text().strip():
                    return predicate.read_text()
            elif predicate in (screen := self.screen()):
                return screen
            time.sleep(0.1)
        raise AssertionError(f"not seen within {within_s} s: {predicate!r}\n{self.screen()}")


@pytest.mark.parametrize("key", ["q", "C-c"])
def test_top_in_a_real_terminal_draws_and_quits(
    running_switch: SwitchRun, tmux: str, tmp_path: Path, key: str
) -> None:
    terminal = Tmux(tmux, tmp_path)
    exit_file = tmp_path / "exit-status"
    command = (
        f"{sys.executable} -m switch top --config {running_switch.config}"
        f" --url {running_switch.url}; echo $? > {exit_file}"
    )
    started = terminal.run(
        "new-session", "-d", "-x", "160", "-y", "50", "-s", "top", "-c", str(REPO), command
    )
    assert started.returncode == 0, started.stderr
    try:
        screen = terminal.wait_for("journal: commit p99")
        for shown in ("banks", "channels", "icbc", "citic", "online", "last 1.0 s"):
            terminal.wait_for(shown)
        assert "Traceback" not in screen
        terminal.run("send-keys", "-t", "top", key)
        assert terminal.wait_for(exit_file).strip() == "0"
    finally:
        terminal.run("kill-server")
