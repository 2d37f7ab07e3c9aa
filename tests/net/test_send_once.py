"""The one-message exchange the reversal SAF and the advice queue share
(``switch.net.send_once``), on a real bank link to a bank of the test's own: an answer
of the expected type, one of another type, none in time, a message the dialect cannot
carry, and no link to send on; the link is given back every time and the circuit
hears of each send that reached the bank."""

from __future__ import annotations

import trio

from switch.core import bank as bankmsg
from switch.core.bank import OriginalData, ReversalSubject
from switch.core.clock import WALL_CLOCK
from switch.net.send_once import send_once
from switch.wire.iso8583 import FieldValue, Iso8583Message
from tests.net.helpers import H2H, PAN_ICBC
from tests.net.rogue_bank import Reply, RogueBank, echoed
from tests.net.test_bank_faults import rogue_switch


def answer(request: Iso8583Message) -> list[Reply]:
    amount = int(str(request.fields[4]))
    if amount == 1:
        return [echoed(request, "0410", f39="00")]
    if amount == 2:
        return [echoed(request, "0210", f39="00")]
    return []  # never answered


def reversal(amount: int, terminal_id: str = "POS00001"):  # type: ignore[no-untyped-def]
    subject = ReversalSubject(
        pan=PAN_ICBC, processing_code="000000", amount=amount, currency="156",
        rrn="532614000001", terminal_id=terminal_id, merchant_id="898310048990001",
        original=OriginalData(mti="0200", stan="000001", transmission="1122150211"),
    )  # fmt: skip

    def build(stan: str) -> tuple[str, dict[int, FieldValue]]:
        institution = bankmsg.Institution(acquirer_id="48990000")
        return bankmsg.reversal_request(subject, stan, WALL_CLOCK.stamp(8), institution)

    return build


def in_flight(connector: object) -> list[object]:
    return [link.statistics()["in_flight"] for link in connector.links]  # type: ignore[attr-defined]


async def test_each_outcome_of_one_exchange(nursery: trio.Nursery) -> None:
    rogue = RogueBank(H2H, answer)
    app = await rogue_switch(nursery, rogue, issuer_timeout_s=0.3, circuit_timeouts=1)
    connector = app.connectors["icbc"]
    idle = in_flight(connector)

    answered = await send_once(connector, reversal(1), response_mti="0410", what="a reversal")
    assert (answered.result, answered.sent, answered.never) == ("00", True, False)
    assert answered.response is not None and answered.response.fields[37] == "532614000001"

    wrong = await send_once(connector, reversal(2), response_mti="0410", what="a reversal")
    assert (wrong.result, wrong.sent, wrong.response) == (
        "bank answered 0210 to a reversal", True, None,
    )  # fmt: skip

    # 41 longer than the dialect's 8: never sendable as it is, no verdict on the bank.
    bad = await send_once(
        connector, reversal(1, terminal_id="POS000001"), response_mti="0410", what="a reversal"
    )
    assert (bad.sent, bad.never) == (False, True) and bad.result.startswith("not encodable")
    assert not connector.circuit_open()

    # No answer in time: an attempt, and the circuit (one timeout opens it) hears of it.
    silent = await send_once(connector, reversal(3), response_mti="0410", what="a reversal")
    assert (silent.result, silent.sent) == ("no answer in time", True)
    assert connector.circuit_open()

    # The circuit open: not sent, nothing waits.
    refused = await send_once(connector, reversal(1), response_mti="0410", what="a reversal")
    assert (refused.sent, refused.result.startswith("not sent")) == (False, True)

    # Every link given back each time; the bank saw the three that were sent.
    assert in_flight(connector) == idle
    assert [m.fields[4] for m in rogue.received if m.mti == "0400"] == [
        f"{n:012d}" for n in (1, 2, 3)
    ]
