"""On-us payments in ``/metrics``, scraped over real HTTP from a running switch: their
counts and amounts by product and result (``payswitch_transactions_total``,
``payswitch_transaction_amount_fen_total``, bank ``on-us``), and, once their date is
settled, a payment the ledger does not agree with as a ``ledger_mismatch``
(``payswitch_recon_transactions``)."""

from __future__ import annotations

import time

import trio

from switch.core.ledger import TransferKey, TransferSpec
from tests.admin.http import get
from tests.admin.test_http import admin_config, labels, samples
from tests.net.helpers import pos_client, start_switch
from tests.net.test_onus_e2e import MERCHANT, WALLET, fund, in_store, issue, store_of


async def test_onus_payments_and_a_ledger_mismatch_are_in_the_metrics(
    nursery: trio.Nursery,
) -> None:
    app = await start_switch(nursery, admin_config())
    await fund(app, 50_000)
    client = await pos_client(app)
    terminal = client.terminal
    first = await client.request(terminal.code_sale(1, await issue(app), 2500))
    second = await client.request(terminal.code_sale(2, await issue(app), 1200))
    void = await client.request(
        terminal.code_void(3, str(second.fields[2]), 1200, str(second.fields[37]), 2)
    )
    low = await client.request(terminal.code_sale(4, await issue(app), 48_000))
    assert [r.fields[39] for r in (first, second, void, low)] == ["00", "00", "00", "51"]
    await client.aclose()
    # The ledger loses the first payment (a fault: its money back to the wallet) while
    # the journal has it approved.
    rrn = str(first.fields[37])
    principal = f"pos:{MERCHANT}:{terminal.terminal_id}"
    await in_store(
        app, store_of(app).transfer,
        TransferSpec(key=TransferKey(principal, "fault", "reversal"),
                     debit=f"merchant:{MERCHANT}", credit=WALLET, amount=2500, kind="void",
                     rrn=rrn, merchant_id=MERCHANT),
        time.time(),
    )  # fmt: skip
    settlement = app.settlement
    assert settlement is not None
    closed = await settlement.close_now()
    await settlement.settle(closed.business_date.isoformat())

    scrape = await get(app.admin_port, "/metrics")
    assert scrape.status == 200
    text = scrape.body.decode()
    counts = samples(text, "payswitch_transactions_total")
    on_us = {key: value for key, value in counts.items() if ("bank", "on-us") in key}
    assert on_us == {
        labels(channel="pos", kind="onus_sale", bank="on-us", code="00"): 2,
        labels(channel="pos", kind="onus_sale", bank="on-us", code="51"): 1,
        labels(channel="pos", kind="onus_void", bank="on-us", code="00"): 1,
    }
    amounts = samples(text, "payswitch_transaction_amount_fen_total")
    assert amounts[labels(channel="pos", kind="onus_sale", bank="on-us", code="00")] == 3700
    assert amounts[labels(channel="pos", kind="onus_sale", bank="on-us", code="51")] == 48_000
    assert amounts[labels(channel="pos", kind="onus_void", bank="on-us", code="00")] == 1200
    recon = samples(text, "payswitch_recon_transactions")
    assert recon[labels(category="ledger_mismatch", action="paid")] == 1
    # The sale voided the same date and its void cancel out; the one declined is not paid.
    assert recon[labels(category="matched", action="cancelled")] == 2
    assert recon[labels(category="matched", action="not_paid")] == 1
    assert (
        samples(text, "payswitch_recon_switch_amount_fen")[
            labels(category="ledger_mismatch", action="paid")
        ]
        == 2500
    )
    assert (
        samples(text, "payswitch_recon_bank_amount_fen")[
            labels(category="ledger_mismatch", action="paid")
        ]
        == 0
    )
