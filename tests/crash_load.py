"""Sustained POS load for the crash-safety test: terminals that keep selling through
kills and restarts of the switch, and remember every answer they got (or did not get).

Each terminal has its own connection, terminal id and card, and counts its STAN on
across restarts (its batch stays 1), as a real terminal does. Most sales are approved;
amounts ending in 68 fen are never answered by the simulator (the switch answers 68 and
reverses them) and 51 fen are declined. Some approved sales are voided or partly
refunded. A request whose answer never came (the switch was killed or stopped) is
reversed with a 0400 once the terminal is connected again, before anything else.

When told to stop, every terminal sends one last sale ending in 68: the bank falls
silent just as traffic ends, so the switch's circuit for it opens on those timeouts,
and their reversals must still get through once it is half-open again.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import trio

from switch.net.clients import PosClient
from switch.terminal import Terminal
from switch.wire.iso8583 import FieldValue
from tests.conftest import DIALECTS, REPO, luhn_complete
from tests.net.helpers import POS_CODEC

Message = tuple[str, dict[int, FieldValue]]

RESPONSE_TIMEOUT_S = 5.0
"""Far above the issuer timeout: a request unanswered this long is counted lost."""
RECONNECT_PAUSE_S = 0.05
CONNECTION_LOST = (OSError, EOFError, trio.BrokenResourceError, trio.ClosedResourceError)


def switch_head(tmp_path: Path, dsn: str | None, workers: int = 1) -> str:
    """The config the crash tests share, up to the journal: demo keys and terminals, ports 0."""
    backend = f'backend = "postgresql"\ndsn = "{dsn}"' if dsn else 'backend = "sqlite"'
    return f"""
[switch]
workers = {workers}
acquirer_id = "48990000"
utc_offset_h = 8
shutdown_grace_s = 3.0
dialects_dir = "{DIALECTS}"

[pos]
host = "127.0.0.1"
port = 0
read_deadline_s = 5.0

[online]
host = "127.0.0.1"
port = 0

[log]
level = "info"

[security]
demo_keys = true
demo_terminals = true

[journal]
{backend}
path = "{tmp_path / "journal.sqlite3"}"
key_file = "{REPO / "conf" / "card-keys.toml"}"
"""


def card_of(index: int) -> str:
    return luhn_complete(f"622202{index:012d}")  # ICBC's BIN, one card a terminal


@dataclass
class Sent:
    """One request a terminal sent and what came back."""

    terminal_id: str
    kind: str  # sale, void, refund, reversal
    mti: str
    stan: int
    amount: int
    epoch: int
    """The gate's epoch when it was sent: which start of the switch it went to (with
    workers, which span between two kills of one)."""
    code: str | None = None
    """Field 39, or None: no response (the connection broke or the answer never came)."""
    rrn: str | None = None
    auth_code: str | None = None


class SwitchGate:
    """Where terminals find the switch: its POS port while it is up; while it is down
    (between a kill or SIGTERM and the next start) they wait here."""

    def __init__(self) -> None:
        self.port = 0
        self.epoch = 0
        self._up = trio.Event()

    def opened(self, port: int) -> None:
        self.port = port
        self.epoch += 1
        self._up.set()

    def closing(self) -> None:
        """Called before the switch is stopped: new connections wait for the next start."""
        if self._up.is_set():
            self._up = trio.Event()

    async def wait_open(self) -> int:
        await self._up.wait()
        return self.port


@dataclass
class _Approved:
    stan: int
    rrn: str
    amount: int


@dataclass
class LoadTerminal:
    index: int
    rng: random.Random
    sent: list[Sent] = field(default_factory=list)
    host: str = "127.0.0.1"
    """Where the switch's POS listener is (the gate says its port)."""

    def __post_init__(self) -> None:
        self.terminal = Terminal(terminal_id=f"CRSH{self.index:04d}")
        self.pan = card_of(self.index)
        self._stan = 0
        self._unanswered: list[Message] = []
        self._approved: list[_Approved] = []
        self._last_sale_sent = False

    def _next_stan(self) -> int:
        self._stan += 1
        return self._stan

    def _next_message(self) -> tuple[str, Message, int]:
        """The next request: kind, message, amount."""
        rng, terminal = self.rng, self.terminal
        if self._approved and rng.random() < 0.12:
            original = self._approved.pop(rng.randrange(len(self._approved)))
            stan = self._next_stan()
            if rng.random() < 0.4:
                message = terminal.void(
                    stan, self.pan, original.amount, original.rrn, original.stan
                )
                return "void", message, original.amount
            amount = max(1, original.amount // rng.choice((2, 3, 4)))
            message = terminal.refund(stan, self.pan, amount, original.rrn, original.stan)
            return "refund", message, amount
        hook = rng.choices(("00", "68", "51"), weights=(88, 6, 6))[0]
        amount = rng.randint(1, 300) * 100 + int(hook)
        return "sale", terminal.sale(self._next_stan(), self.pan, amount), amount

    async def run(self, gate: SwitchGate, stop: trio.Event) -> None:
        """Sends until ``stop`` is set and every unanswered request has been reversed."""
        client: PosClient | None = None
        try:
            while True:
                if client is None:
                    port = await gate.wait_open()
                    try:
                        client = await PosClient.connect(self.host, port, POS_CODEC, self.terminal)
                    except OSError:
                        await trio.sleep(RECONNECT_PAUSE_S)
                        continue
                if self._unanswered:
                    kind, message = "reversal", self.terminal.reversal(self._unanswered[0])
                    amount = int(str(message[1][4]))
                elif stop.is_set():
                    if self._last_sale_sent:
                        return
                    self._last_sale_sent = True
                    amount = self.rng.randint(1, 300) * 100 + 68
                    kind, message = "sale", self.terminal.sale(self._next_stan(), self.pan, amount)
                else:
                    kind, message, amount = self._next_message()
                sent = Sent(
                    self.terminal.terminal_id,
                    kind,
                    message[0],
                    int(str(message[1][11])),
                    amount,
                    gate.epoch,
                )
                self.sent.append(sent)
                try:
                    with trio.fail_after(RESPONSE_TIMEOUT_S):
                        response = await client.request(message)
                except (*CONNECTION_LOST, trio.TooSlowError):
                    if kind != "reversal":
                        self._unanswered.append(message)
                    await trio.aclose_forcefully(client.stream)
                    client = None
                    await trio.sleep(RECONNECT_PAUSE_S)
                    continue
                fields = response.fields
                sent.code = str(fields.get(39))
                sent.rrn = str(fields[37]) if 37 in fields else None
                sent.auth_code = str(fields[38]) if 38 in fields else None
                if kind == "reversal":
                    if sent.code == "00":
                        self._unanswered.pop(0)
                    else:  # a real terminal repeats its reversal until it is taken
                        await trio.sleep(RECONNECT_PAUSE_S)
                elif kind == "sale" and sent.code == "00" and sent.rrn is not None:
                    self._approved.append(_Approved(sent.stan, sent.rrn, amount))
        finally:
            if client is not None:
                await trio.aclose_forcefully(client.stream)
