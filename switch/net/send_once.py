"""One message to a bank outside a transaction, as the reversal SAF and the advice
queue send theirs (``switch.net.saf``, ``switch.net.advice``): a link reserved without
waiting, the message built with the link's next STAN, sent, its answer awaited for the
bank's ``issuer_timeout_s``, the link released and the outcome told to the bank's
circuit (a reversal or an advice may be its probe).

What happened is a :class:`Sent`: the answer (of the expected MTI), or why there is
none; whether the message reached the bank (only those count as attempts); whether it
never can (a field its dialect cannot carry: no verdict on the bank).
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from switch.errors import SwitchError
from switch.net.bank_link import BankConnector, BankUnavailable, LinkNotSent, NotEncodable
from switch.wire.iso8583 import FieldValue, Iso8583Message

Build = Callable[[str], tuple[str, dict[int, FieldValue]]]
"""The link's STAN -> the message (MTI, fields)."""


class Sent:
    """What one send gave: the bank's answer, or in ``result`` why there was none."""

    __slots__ = ("never", "response", "result", "sent")

    def __init__(
        self,
        result: str,
        *,
        sent: bool,
        never: bool = False,
        response: Iso8583Message | None = None,
    ) -> None:
        self.result = result
        self.sent = sent
        """Whether it reached the bank (an attempt)."""
        self.never = never
        """Whether it never can as it is (its bank's dialect cannot carry a field)."""
        self.response = response
        """The bank's answer, of the expected MTI."""


async def send_once(
    connector: BankConnector, build: Build, *, response_mti: str, what: str
) -> Sent:
    """Sends ``build``'s message on a free link of ``connector`` and waits for the
    answer ``response_mti``; ``what`` names the message in results ("a reversal")."""
    try:
        link = connector.try_reserve_link()
    except BankUnavailable as exc:
        return Sent(f"not sent: {exc}", sent=False)
    if link is None:
        return Sent(f"not sent: no link of {connector.name} has room", sent=False)
    answered: bool | None = None
    try:
        mti, fields = build(connector.stans.next())
        with trio.move_on_after(connector.config.issuer_timeout_s):
            response = await link.exchange(mti, fields)
            answered = True
            if response.mti != response_mti:
                return Sent(f"bank answered {response.mti} to {what}", sent=True)
            return Sent(str(response.fields.get(39)), sent=True, response=response)
        answered = False
        return Sent("no answer in time", sent=True)
    except NotEncodable as exc:
        return Sent(f"not encodable: {exc}", sent=False, never=True)
    except LinkNotSent as exc:
        return Sent(f"not sent: {exc}", sent=False)
    except SwitchError as exc:
        answered = False
        return Sent(f"link failed: {exc}", sent=True)
    finally:
        connector.release(link)
        # A reversal or an advice may be the circuit's probe: its verdict must reach it.
        connector.record_result(answered=answered)
