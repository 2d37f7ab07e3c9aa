"""The PostgreSQL journal's server restarted under load (``pg_ctl restart -m fast``, as
an operator's restart or a failover does it): while it is gone the switch answers 96,
never an approval it could not journal; it loses nothing it answered 00, leaves no
bank approval standing that it did not answer 00, and resumes by itself, without a
restart of its own."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

import pytest
import trio

from switch.app import SwitchApp
from tests.conftest import POSTGRESQL_REQUIRED, make_config
from tests.net.helpers import FAST_SAF, PAN_ICBC, eventually, pos_client, start_switch
from tests.pg_server import PostgresServer, ServerUnavailable
from tests.store.engines import journal_rows


@pytest.fixture
async def own_server() -> AsyncIterator[PostgresServer]:
    """A server of this test's own: the session's is not restarted under other tests."""
    server = PostgresServer()
    try:
        await trio.to_thread.run_sync(server.start)
    except ServerUnavailable as exc:
        server.stop()
        if POSTGRESQL_REQUIRED:
            pytest.fail(f"no PostgreSQL server could be started: {exc}", pytrace=False)
        pytest.skip(f"no PostgreSQL server could be started: {exc}")
    try:
        yield server
    finally:
        await trio.to_thread.run_sync(server.stop)


def journaled_net(app: SwitchApp) -> int:
    """Approved sales standing in the journal (this test sends nothing else)."""
    rows = journal_rows(
        app.config,
        "SELECT coalesce(sum(amount), 0) AS net FROM txn "
        "WHERE kind = 'sale' AND state = 'approved' AND NOT reversed",
    )
    return int(rows[0]["net"])


async def test_a_restart_of_the_database_costs_96s_while_it_lasts_and_loses_nothing(
    nursery: trio.Nursery, own_server: PostgresServer
) -> None:
    dsn = await trio.to_thread.run_sync(own_server.create_database)
    app = await start_switch(
        nursery, make_config(journal={"backend": "postgresql", "dsn": dsn}, saf=FAST_SAF)
    )
    simulator = app.simulators["icbc"]
    client = await pos_client(app)
    answered: dict[str, str] = {}  # RRN: code
    stan = 0

    async def sale() -> str:
        nonlocal stan
        stan += 1
        response = await client.request(client.terminal.sale(stan, PAN_ICBC, 100 * (1 + stan % 10)))
        code = str(response.fields[39])
        answered[str(response.fields.get(37, f"none-{stan}"))] = code
        return code

    for _ in range(5):
        assert await sale() == "00"
    restarted = trio.Event()

    async def restart() -> None:
        await trio.to_thread.run_sync(own_server.restart)
        restarted.set()

    nursery.start_soon(restart)
    during = []
    while not restarted.is_set():  # sales while the server goes down and comes back
        during.append(await sale())
        await trio.sleep(0.01)
    print(f"answers while the server restarted: {dict(Counter(during))}")
    assert set(during) <= {"00", "96", "91"}, during
    with trio.fail_after(10):  # back by itself: the next connections succeed
        while await sale() != "00":
            await trio.sleep(0.05)
    for _ in range(5):
        assert await sale() == "00"

    # Every approval a terminal saw is journaled as such...
    approved = {rrn for rrn, code in answered.items() if code == "00"}
    rows = journal_rows(app.config, "SELECT rrn, state FROM txn WHERE state = 'approved'")
    assert approved <= {row["rrn"] for row in rows}
    # ...and the bank's net is the journal's, once what it approved and the journal
    # could not record has been reversed (from memory, then through store-and-forward).
    # (a reversal sent from memory is written to the journal once it can be written
    # again: on a loaded machine that was seen to take longer than 15 s)
    await eventually(lambda: simulator.totals().net == journaled_net(app), within_s=45)
    # A sale journaled before it left and answered while the server was gone stays
    # "sending" (its reversal went from memory, as with a full disk): answered 96, and
    # a restart of the switch would reverse it again, which a bank applies once.
    left = journal_rows(app.config, "SELECT rrn FROM txn WHERE state = 'sending'")
    assert all(answered.get(row["rrn"]) == "96" for row in left), (left, answered)
