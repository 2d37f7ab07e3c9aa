"""The book's changes are carried out by the switchboard at once after the machine's
step that returned them (issue #20): refunds handed over together, over real
connections, see each other's reservations."""

from __future__ import annotations

import trio

from tests.net.helpers import PAN_CMB, pos_client, start_switch


async def test_refunds_sent_together_on_several_connections_never_exceed_their_sale(
    nursery: trio.Nursery,
) -> None:
    app = await start_switch(nursery)
    seller = await pos_client(app)
    sale = await seller.request(seller.terminal.sale(1, PAN_CMB, 10000))
    assert sale.fields[39] == "00"
    rrn = str(sale.fields[37])
    clients = [await pos_client(app) for _ in range(6)]
    codes: list[str] = []

    async def refund(index: int) -> None:
        client = clients[index]
        answer = await client.request(client.terminal.refund(10 + index, PAN_CMB, 3000, rrn, 1))
        codes.append(str(answer.fields[39]))

    async with trio.open_nursery() as together:
        for index in range(len(clients)):
            together.start_soon(refund, index)
    # 3 x 3,000 of 10,000 fit; the others find what is left reserved (61).
    assert sorted(codes) == ["00", "00", "00", "61", "61", "61"]
    assert app.switchboard is not None
    held = app.switchboard.book.by_rrn(rrn)
    assert held is not None and (held.refunded, held.refund_reserved) == (9000, 0)
    bank_refunds = [
        m for m in app.simulators["cmb"].received if m.mti == "0200" and m.fields[3] == "200000"
    ]
    assert len(bank_refunds) == 3
