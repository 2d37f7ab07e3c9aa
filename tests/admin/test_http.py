"""The admin interface of a running switch, over real loopback sockets: health,
readiness as its banks come and go, metrics matching the transactions made, the
status document, the bearer token off loopback, and bad requests answered with their
HTTP error, each ending only its own connection."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

from switch.admin.status import status_decoder
from switch.app import Codecs, SwitchApp
from switch.config import SwitchConfig
from switch.errors import StartupError
from switch.sim.server import BankSimulator
from switch.tls import client_context
from switch.wire import online as wire
from tests.admin.http import Answer, HttpConnection, get, post, raw_exchange
from tests.admin.http import get as http_get
from tests.certs import make_certificate
from tests.conftest import make_config
from tests.net.helpers import (
    PAN_ABC,
    PAN_ICBC,
    PAN_NO_ROUTE,
    online_client,
    pos_client,
    purchase,
    start_switch,
)

TOKEN = "s3cret-admin-token-0123456789"


def admin_config(*, banks: dict[str, Any] | None = None, **admin: Any) -> SwitchConfig:
    """The test config with the admin interface on, on any free port."""
    return make_config(admin={"enabled": True, "port": 0, **admin}, banks=banks or {})


async def until_answer(port: int, path: str, status: int) -> Answer:
    """GET ``path`` until it is answered ``status`` (the switch changes state in the
    background: links drop and come back)."""
    with trio.fail_after(15):
        while (answer := await get(port, path)).status != status:
            await trio.sleep(0.05)
    return answer


async def test_health_and_readiness_of_a_running_switch(nursery: trio.Nursery) -> None:
    app = await start_switch(nursery, admin_config())
    health = await get(app.admin_port, "/healthz")
    assert health.status == 200 and health.json()["status"] == "ok"
    ready = await get(app.admin_port, "/readyz")
    assert (ready.status, ready.json()) == (200, {"ready": True, "not_ready": []})
    assert ready.headers["content-type"] == "application/json"


class StoppableBank:
    """icbc's bank simulator, run by the test: stopped, nothing listens on its port."""

    def __init__(self) -> None:
        config = make_config()
        self.section = msgspec.structs.replace(config.banks["icbc"], simulate=False)
        self.codec = Codecs(config.dialects_path()).get(self.section.dialect)
        self.port = 0
        self._scope = trio.CancelScope()

    async def start(self, nursery: trio.Nursery) -> None:
        self._scope = trio.CancelScope()
        self.port = await nursery.start(self._serve, self.port)  # the same port again

    def stop(self) -> None:
        self._scope.cancel()

    async def _serve(self, port: int, task_status: trio.TaskStatus[int]) -> None:
        section = msgspec.structs.replace(self.section, port=port)
        with self._scope:
            await BankSimulator("icbc", section, self.codec).serve(task_status=task_status)


async def test_readiness_is_503_while_a_banks_links_are_all_down(
    nursery: trio.Nursery, switch_clock: trio.testing.MockClock
) -> None:
    bank = StoppableBank()
    await bank.start(nursery)
    app = await start_switch(
        nursery, admin_config(banks={"icbc": {"simulate": False, "port": bank.port}})
    )
    assert (await get(app.admin_port, "/readyz")).status == 200

    bank.stop()  # every link drops, and reconnecting is refused
    down = await until_answer(app.admin_port, "/readyz", 503)
    assert down.json() == {
        "ready": False,
        "not_ready": ["bank icbc: no link signed on (0 of 2 up)"],
    }
    status = status_decoder.decode((await get(app.admin_port, "/status")).body)
    icbc = next(bank for bank in status.banks if bank.name == "icbc")
    assert not status.ready and icbc.links_up == 0 and icbc.circuit_open
    # Each link went connecting, signing_on, up, then down at least.
    assert icbc.link_state_changes >= 2 * 4
    assert all(link.state_changes >= 4 for link in icbc.links)

    await bank.start(nursery)
    back = await until_answer(app.admin_port, "/readyz", 200)
    assert back.json() == {"ready": True, "not_ready": []}


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample of ``name`` in a scrape, by its labels."""
    found: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def labels(**values: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(values.items()))


async def test_a_scrape_counts_the_transactions_made(nursery: trio.Nursery) -> None:
    app = await start_switch(nursery, admin_config())
    terminal = await pos_client(app)
    codes = []
    for stan, pan in enumerate([PAN_ICBC] * 5 + [PAN_ABC] * 2 + [PAN_NO_ROUTE], start=1):
        response = await terminal.request(terminal.terminal.sale(stan, pan, 1000))
        codes.append(response.fields[39])
    assert codes == ["00"] * 7 + ["92"]
    await terminal.aclose()
    shop = await online_client(app)
    for number in range(3):
        assert isinstance(await shop.request(purchase(f"order-{number}", 500)), wire.Result)
    await shop.aclose()

    scrape = await get(app.admin_port, "/metrics")
    assert scrape.status == 200 and scrape.headers["content-type"].startswith("text/plain")
    text = scrape.body.decode()
    assert samples(text, "payswitch_transactions_total") == {
        labels(channel="pos", kind="sign_on", bank="", code="00"): 1,  # the terminal's own
        labels(channel="pos", kind="sale", bank="icbc", code="00"): 5,
        labels(channel="pos", kind="sale", bank="abc", code="00"): 2,
        labels(channel="pos", kind="sale", code="92"): 1,  # no bank: no bank label
        labels(channel="online", kind="sale", bank="icbc", code="00"): 3,
    }
    ends = samples(text, "payswitch_transaction_duration_seconds_count")
    assert ends[labels(channel="pos", bank="icbc")] == 5
    assert ends[labels(channel="online", bank="icbc")] == 3
    infinite = samples(text, "payswitch_transaction_duration_seconds_bucket")
    assert infinite[labels(channel="pos", bank="icbc", le="+Inf")] == 5
    bank_waits = samples(text, "payswitch_bank_wait_duration_seconds_count")
    assert bank_waits[labels(channel="pos", bank="abc")] == 2
    assert samples(text, "payswitch_bank_links_up")[labels(bank="icbc")] == 2
    commits = samples(text, "payswitch_journal_commits_total")[()]
    assert commits >= 10  # each sale and purchase that reached a bank: two commits at least
    assert samples(text, "payswitch_journal_commit_duration_seconds_count")[()] == commits
    # Prometheus reads an empty label as none: no sample carries one.
    for family in text_string_to_metric_families(text):
        assert all(all(family_sample.labels.values()) for family_sample in family.samples)
    assert (
        samples(text, "payswitch_journal_group_size_sum")[()]
        == samples(text, "payswitch_journal_changes_total")[()]
    )
    assert samples(text, "payswitch_saf_pending") == {
        labels(bank=bank): 0 for bank in ("icbc", "abc", "cmb", "citic")
    }
    assert samples(text, "payswitch_ready")[()] == 1
    assert "process_cpu_seconds_total" in text

    # The status document says the same.
    document = status_decoder.decode((await get(app.admin_port, "/status")).body)
    counted = {(t.channel, t.kind, t.bank, t.code): t.count for t in document.transactions}
    assert counted == {
        ("pos", "sign_on", "", "00"): 1,
        ("pos", "sale", "icbc", "00"): 5,
        ("pos", "sale", "abc", "00"): 2,
        ("pos", "sale", "", "92"): 1,
        ("online", "sale", "icbc", "00"): 3,
    }
    icbc = next(bank for bank in document.banks if bank.name == "icbc")
    assert (icbc.transactions, icbc.approved, icbc.latency.count) == (8, 8, 8)
    pos = next(channel for channel in document.channels if channel.name == "pos")
    assert pos.transactions == 9 and pos.latency.count == 9  # 8 sales and its sign-on
    assert document.journal.commits == commits and document.journal.writable
    assert document.ready and document.config.version == 1


async def test_openmetrics_when_the_scraper_asks_for_it(nursery: trio.Nursery) -> None:
    app = await start_switch(nursery, admin_config())
    scrape = await get(
        app.admin_port, "/metrics", headers={"accept": "application/openmetrics-text"}
    )
    assert scrape.headers["content-type"].startswith("application/openmetrics-text")
    assert scrape.body.rstrip().endswith(b"# EOF")


async def test_a_token_is_required_off_loopback(nursery: trio.Nursery, tmp_path: Path) -> None:
    token_file = tmp_path / "admin-token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    cert, key = make_certificate(tmp_path)  # off loopback it serves only HTTPS
    app = await start_switch(
        nursery,
        admin_config(
            host="0.0.0.0", token_file=str(token_file), tls_cert_file=str(cert),
            tls_key_file=str(key),
        ),
    )  # fmt: skip
    port = app.admin_port
    https = client_context(cert)

    async def get(port: int, path: str, *, headers: dict[str, str] | None = None) -> Answer:
        return await http_get(port, path, headers=headers, tls=https)

    for headers in (
        None,
        {"authorization": "Bearer wrong-token-0123456789"},
        {"authorization": f"Bearer {TOKEN}x"},
        {"authorization": f"Basic {TOKEN}"},
    ):
        refused = await get(port, "/status", headers=headers)
        assert refused.status == 401, headers
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert b"switch_version" not in refused.body
    assert (await get(port, "/no/such/path")).status == 401  # not even which paths exist
    right = {"authorization": f"Bearer {TOKEN}"}
    assert (await get(port, "/healthz", headers=right)).status == 200
    document = await get(port, "/status", headers=right)
    assert document.status == 200 and status_decoder.decode(document.body).ready


def test_an_unreadable_or_empty_token_file_stops_the_start(tmp_path: Path) -> None:
    missing = tmp_path / "none"
    cert, key = make_certificate(tmp_path)
    with pytest.raises(StartupError, match=f"token_file {missing} cannot be read"):
        SwitchApp(
            admin_config(
                host="0.0.0.0", token_file=str(missing), tls_cert_file=str(cert),
                tls_key_file=str(key),
            )
        )  # fmt: skip
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(StartupError, match="is empty"):
        SwitchApp(admin_config(token_file=str(empty)))
    short = tmp_path / "short"
    short.write_text("abc")
    with pytest.raises(StartupError, match="shorter than 16"):
        SwitchApp(admin_config(token_file=str(short)))
    with pytest.raises(msgspec.ValidationError, match="token_file is required"):
        admin_config(host="0.0.0.0")


async def test_bad_requests_are_answered_and_end_only_their_connection(
    nursery: trio.Nursery,
) -> None:
    app = await start_switch(nursery, admin_config(max_request_bytes=2048))
    port = app.admin_port
    kept = await HttpConnection.open(port)  # a well-behaved client, kept alive throughout
    assert (await kept.request("/healthz")).status == 200

    assert app.admin is not None
    token = {"authorization": f"Bearer {app.admin.token}"}
    assert (await get(port, "/nope", headers=token)).status == 404
    wrong_method = await HttpConnection.open(port)
    answer = await wrong_method.request("/healthz", method="POST", headers=token)
    assert (answer.status, answer.headers["allow"]) == (405, "GET")
    await wrong_method.aclose()
    refused = await post(port, "/reload", token=app.admin.token)  # started from no file
    assert refused.status == 422 and refused.json()["accepted"] is False
    assert refused.json()["problems"] == ["the switch was not started from a file"]

    garbage = await raw_exchange(port, b"\x16\x03\x01 this is not HTTP\r\n\r\n")
    assert garbage.startswith(b"HTTP/1.1 400 ")
    huge_head = b"GET /status HTTP/1.1\r\nhost: x\r\nx-padding: " + b"a" * 4096 + b"\r\n\r\n"
    assert (await raw_exchange(port, huge_head)).startswith(b"HTTP/1.1 431 ")
    huge_body = b"POST /status HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n" + b"b" * 4096
    assert (await raw_exchange(port, huge_body)).startswith(b"HTTP/1.1 413 ")

    again = await kept.request("/status")  # the good client's connection was never touched
    assert again.status == 200 and status_decoder.decode(again.body).ready
    await kept.aclose()
    assert app.admin is not None
    assert {400, 404, 405, 413, 431} <= set(app.admin.refusals)


async def test_a_request_not_completed_in_time_is_answered_408(nursery: trio.Nursery) -> None:
    app = await start_switch(nursery, admin_config(read_deadline_s=0.2))
    answer = await raw_exchange(app.admin_port, b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
    assert answer.startswith(b"HTTP/1.1 408 ")
    # An idle kept-alive connection is closed without a word after the same deadline.
    idle = await HttpConnection.open(app.admin_port)
    assert (await idle.request("/healthz")).status == 200
    with trio.fail_after(10):
        assert await idle.stream.receive_some(100) == b""
    await idle.aclose()


async def test_at_the_cap_a_new_connection_takes_the_longest_waiting_ones_place(
    nursery: trio.Nursery,
) -> None:
    app = await start_switch(nursery, admin_config(max_connections=2))
    port = app.admin_port
    held = [await HttpConnection.open(port) for _ in range(2)]
    for connection in held:
        assert (await connection.request("/healthz")).status == 200
    assert (await get(port, "/healthz")).status == 200  # a third: the oldest idle one goes
    with trio.fail_after(10):
        assert await held[0].stream.receive_some(100) == b""
    assert (await held[1].request("/healthz")).status == 200
    for connection in held:
        await connection.aclose()
    assert app.admin is not None and app.admin.connections_evicted >= 1
