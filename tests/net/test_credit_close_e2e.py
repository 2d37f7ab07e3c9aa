"""A switch on a simulated business clock closes credit accounts at its cut-off
(credit.md, "Overdue": the statement when the next day is a statement date): an
account opened on 5 January with purchases, a switch started at 22:55 on 31 January at
60x, and at the cut-off that closes 31 January the statement of 1 February appears, in
the ledger store and as the day's file (0600), with its fee posted."""

from __future__ import annotations

import csv
import io
import stat
from datetime import date

import trio

from switch.core.credit.plan import Terms
from switch.core.credit.statement_file import HEADER
from switch.core.ledger import TransferKey
from switch.store import open_ledger_store
from tests.conftest import make_config
from tests.net.helpers import eventually
from tests.net.test_business_clock_e2e import simulated, start_on, stop

C = "C100000001"


def prepare(config: object) -> None:
    store = open_ledger_store(config)  # type: ignore[arg-type]
    store.open()
    try:
        store.open_wallet(C, "app:wallet", 2, "2027-01-05", 0.0)
        store.credit_open(C, "app:wallet", 2_000_000, statement_day=1, grace_days=9,
                          business_date=date(2027, 1, 5), at=0.0)  # fmt: skip
        store.credit_close(date(2027, 1, 11), Terms(), 0.0)
        for purchase_id, amount, instalments in (("701210000101", 600_000, 3),
                                                 ("701210000102", 46_000, None)):  # fmt: skip
            key = TransferKey("pos:test", purchase_id, "pay")
            store.credit_purchase(C, key=key, purchase_id=purchase_id, merchant_id="SHOP01",
                                  amount_fen=amount, instalments=instalments, terms=Terms(),
                                  at=0.0)  # fmt: skip
            store.credit_end_purchase(C, key, purchase_id, True, 0.0)
    finally:
        store.close()


async def test_the_statement_appears_at_the_cutoff_closing_the_day_before(
    nursery: trio.Nursery,
) -> None:
    config = make_config()
    prepare(config)
    path = config.settlement_out_dir() / "credit-statements-20270201.csv"
    app = await start_on(nursery, config, simulated())
    assert not path.exists()  # 22:55 on 31 January: nothing closed yet
    settlement = app.settlement
    assert settlement is not None and app.credit is not None
    await eventually(lambda: settlement.calendar.last_closed() == date(2027, 1, 31))
    await eventually(lambda: path.exists())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    rows = list(csv.reader(io.StringIO(path.read_text())))
    assert tuple(rows[0]) == HEADER
    assert [row[3:] for row in rows[1:]] == [
        [C, "0", "249000", "1", "instalment", "2027-01-12", "701210000101", "203000",
         "1/3 200000+3000 SHOP01"],
        [C, "0", "249000", "2", "purchase", "2027-01-12", "701210000102", "46000", "SHOP01"],
    ]  # fmt: skip
    assert {row[0] for row in rows[1:]} == {"2027-02-01"}
    assert {row[2] for row in rows[1:]} == {"2027-02-10"}
    await stop(app)
    store = open_ledger_store(config)
    store.open()
    try:
        status = store.credit_status(C)
        assert status.statement is not None
        assert (status.statement.period, status.statement.new_balance_fen) == ("2027-02", 249_000)
        fees = store.account("instalment_fee_income")
        assert fees is not None and fees.balances.balance == 3_000
        assert store.verify() == []
    finally:
        store.close()
