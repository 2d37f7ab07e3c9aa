"""A crash between an on-us pre-authorisation step's journaled answer and its ledger step
(risk.md, "On-us funding"; wallet.md, "Ledger"): the ledger store fails the step (its
fault hook), the switch stops, and the next start ends it from the journal's answers as
the live path would have: an approved completion's hold part posted under its RRN with
its excess, a completion void's give-back posted and the pre-authorisation held again
(or ended ``voided`` when the journal says the funds were gone). Real listeners, real
journal and ledger files (both engines); each restart after changes nothing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

from switch.app import SwitchApp
from switch.config import SwitchConfig
from switch.core import ledger
from tests.net.helpers import pos_client, start_switch
from tests.net.test_credit_funding_e2e import RECEIVABLE, C, credit_code, open_credit, status
from tests.net.test_onus_e2e import balance, fund, in_store, issue, store_of
from tests.net.test_onus_preauth_e2e import (
    MERCHANT_ACCOUNT,
    WALLET,
    Desk,
    by_code,
    class_used,
    hold_state,
    onus_config,
    sound,
)
from tests.store.engines import journal_rows

__all__ = ["onus_config"]  # the fixture, both engines


def failing(app: SwitchApp, step: str) -> None:
    """The ledger store fails ``step`` (rolled back): as a crash right after the answer
    was journaled, before the ledger's step."""
    store = store_of(app)

    def fail(name: str) -> None:
        if name == step:
            raise RuntimeError("ledger lost")

    store.fault = fail  # type: ignore[attr-defined]
    store.errors = (*store.errors, RuntimeError)  # type: ignore[attr-defined]


def journaled(app: SwitchApp, kind: str) -> dict[str, Any]:
    """The last journaled transaction of ``kind``: its RRN, 38 and answer."""
    rows = journal_rows(
        app.config, "SELECT rrn, auth_code, state, stan FROM txn WHERE kind = ? ORDER BY rrn",
        kind,
    )  # fmt: skip
    return rows[-1]


async def life(
    config: SwitchConfig, body: Callable[[SwitchApp, Desk], Awaitable[None]], stan: int
) -> None:
    """One run of the switch on ``config``'s journal and ledger, then stopped."""
    async with trio.open_nursery() as nursery:
        app = await start_switch(nursery, config)
        desk = Desk(await pos_client(app))
        desk.stan = stan
        await body(app, desk)
        await desk.client.aclose()
        app.shutdown()


async def test_a_crash_after_a_journaled_completion_and_its_void_is_ended_at_start_up(
    onus_config: SwitchConfig,
) -> None:
    held: list[Any] = []

    async def first(app: SwitchApp, desk: Desk) -> None:
        await fund(app, 20_000)
        done, stan = await desk.preauth(await issue(app), 8_000)
        assert done.fields[39] == "00"
        held.extend((done, stan))
        failing(app, "hold_end_completion")
        completed, _ = await desk.complete(str(done.fields[2]), 9_000, done, stan)
        assert completed.fields[39] == "96"  # journaled approved, not posted
        assert journaled(app, "onus_completion")["state"] == "approved"
        assert hold_state(app, done.fields[37]) == "completed"
        assert await balance(app, WALLET) == (20_000, 9_000)  # hold and excess pending

    async def completed(app: SwitchApp, desk: Desk) -> None:
        # The hold's 8,000 and the excess's 1,000 posted, the hold under the
        # completion's RRN (settlement finds the whole completion by it).
        assert await balance(app, WALLET) == (11_000, 0)
        assert await balance(app, MERCHANT_ACCOUNT) == (9_000, 0)
        assert await class_used(app) == 9_000
        done = held[0]
        key = ledger.TransferKey(
            f"pos:{desk.terminal.merchant_id}:{desk.terminal.terminal_id}",
            f"{desk.terminal.batch:06d}{held[1]:06d}", "hold",
        )  # fmt: skip
        hold = await in_store(app, store_of(app).transfer_of, key)
        completion = journaled(app, "onus_completion")
        assert (hold.state, hold.posted_amount, hold.spec.rrn) == (
            "posted", 8_000, completion["rrn"]
        )
        assert hold_state(app, done.fields[37]) == "completed"
        await sound(app)

    async def void(app: SwitchApp, desk: Desk) -> None:
        await completed(app, desk)
        done = held[0]
        completion = journaled(app, "onus_completion")
        failing(app, "hold_end_uncompletion")
        frame = by_code(desk.terminal.completion_void(
            desk.next(), str(done.fields[2]), 9_000, completion["rrn"],
            completion["auth_code"], int(completion["stan"]),
        ))  # fmt: skip
        undone = await desk.client.request(frame)
        assert undone.fields[39] == "96"
        assert journaled(app, "onus_completion_void")["state"] == "approved"
        assert hold_state(app, done.fields[37]) == "open"
        assert await balance(app, MERCHANT_ACCOUNT) == (9_000, 9_000)  # given back: pending

    async def voided(app: SwitchApp, desk: Desk) -> None:
        # Given back, the excess out of the counts, the pre-authorisation held again.
        assert await balance(app, WALLET) == (20_000, 8_000)
        assert await balance(app, MERCHANT_ACCOUNT) == (0, 0)
        assert await class_used(app) == 8_000
        assert hold_state(app, held[0].fields[37]) == "open"
        await sound(app, pending=1)

    async def completed_again(app: SwitchApp, desk: Desk) -> None:
        await voided(app, desk)
        done, stan = held
        again, _ = await desk.complete(str(done.fields[2]), 7_000, done, stan)
        assert again.fields[39] == "00"
        assert await balance(app, WALLET) == (13_000, 0)
        assert await balance(app, MERCHANT_ACCOUNT) == (7_000, 0)
        await sound(app)

    await life(onus_config, first, 100)
    await life(onus_config, completed, 200)
    await life(onus_config, void, 300)  # a restart changed nothing; then the void
    await life(onus_config, voided, 400)
    await life(onus_config, completed_again, 500)  # nothing again; completed again


async def test_a_crash_after_a_completion_void_whose_funds_are_gone_ends_the_preauth(
    onus_config: SwitchConfig,
) -> None:
    held: list[Any] = []

    async def first(app: SwitchApp, desk: Desk) -> None:
        await fund(app, 10_000)
        done, stan = await desk.preauth(await issue(app), 10_000)
        held.extend((done, stan))
        completion, completion_stan = await desk.complete(str(done.fields[2]), 6_000, done, stan)
        assert completion.fields[39] == "00"
        spent = await desk.client.request(
            desk.terminal.code_sale(desk.next(), await issue(app), 3_000)
        )
        assert spent.fields[39] == "00"
        failing(app, "hold_end_uncompletion")
        undone = await desk.void_completion(
            str(done.fields[2]), 6_000, completion, completion_stan
        )
        assert undone.fields[39] == "96"
        assert hold_state(app, done.fields[37]) == "voided"  # 7,000 back, 10,000 to hold

    async def ended(app: SwitchApp, desk: Desk) -> None:
        assert await balance(app, WALLET) == (7_000, 0)
        assert await balance(app, MERCHANT_ACCOUNT) == (3_000, 0)
        assert await class_used(app) == 3_000  # the pre-authorisation's count gone
        await sound(app)
        done, stan = held
        late, _ = await desk.complete(str(done.fields[2]), 1_000, done, stan)
        assert late.fields[39] == "12"

    await life(onus_config, first, 100)
    await life(onus_config, ended, 200)
    await life(onus_config, ended, 300)


async def test_a_crash_after_a_credit_completion_and_its_void_is_ended_at_start_up(
    onus_config: SwitchConfig,
) -> None:
    held: list[Any] = []

    async def first(app: SwitchApp, desk: Desk) -> None:
        await open_credit(app, 100_000)
        done, stan = await desk.preauth(await credit_code(app, 3), 50_000)
        assert (done.fields[39], done.fields[63]) == ("00", "CRL")
        held.extend((done, stan))
        failing(app, "hold_end_completion")
        completed, _ = await desk.complete(str(done.fields[2]), 55_000, done, stan)
        assert completed.fields[39] == "96"

    async def completed(app: SwitchApp, desk: Desk) -> None:
        # The completion is the purchase, with the code's instalments on its amount.
        assert await balance(app, RECEIVABLE) == (-55_000, 0)
        assert await balance(app, MERCHANT_ACCOUNT) == (55_000, 0)
        completion = journaled(app, "onus_completion")
        plan = await in_store(app, store_of(app).credit_plan, C, completion["rrn"])
        assert (plan.principal_fen, plan.instalments) == (55_000, 3)
        assert (await status(app)).available_fen == 45_000
        await sound(app)

    async def void(app: SwitchApp, desk: Desk) -> None:
        await completed(app, desk)
        done = held[0]
        completion = journaled(app, "onus_completion")
        failing(app, "hold_end_uncompletion")
        frame = by_code(desk.terminal.completion_void(
            desk.next(), str(done.fields[2]), 55_000, completion["rrn"],
            completion["auth_code"], int(completion["stan"]),
        ))  # fmt: skip
        assert (await desk.client.request(frame)).fields[39] == "96"

    async def voided(app: SwitchApp, desk: Desk) -> None:
        # The purchase voided, the hold a pending purchase again: completed again.
        assert await balance(app, RECEIVABLE) == (0, 50_000)
        assert await balance(app, MERCHANT_ACCOUNT) == (0, 0)
        assert (await status(app)).available_fen == 50_000
        assert hold_state(app, held[0].fields[37]) == "open"
        await sound(app, pending=1)

    async def completed_again(app: SwitchApp, desk: Desk) -> None:
        await voided(app, desk)
        done, stan = held
        again, _ = await desk.complete(str(done.fields[2]), 50_000, done, stan)
        assert again.fields[39] == "00"
        assert await balance(app, RECEIVABLE) == (-50_000, 0)
        await sound(app)

    await life(onus_config, first, 100)
    await life(onus_config, completed, 200)
    await life(onus_config, void, 300)
    await life(onus_config, voided, 400)
    await life(onus_config, completed_again, 500)


async def test_a_crash_after_a_journaled_reversal_of_a_completion_void_is_ended_at_start_up(
    onus_config: SwitchConfig,
) -> None:
    held: list[Any] = []

    async def first(app: SwitchApp, desk: Desk) -> None:
        await fund(app, 20_000)
        done, stan = await desk.preauth(await issue(app), 8_000)
        held.append(done)
        code = str(done.fields[2])
        completion, completion_stan = await desk.complete(code, 9_000, done, stan)
        assert completion.fields[39] == "00"
        void = by_code(desk.terminal.completion_void(
            desk.next(), code, 9_000, str(completion.fields[37]),
            str(completion.fields[38]), completion_stan,
        ))  # fmt: skip
        assert (await desk.client.request(void)).fields[39] == "00"
        failing(app, "hold_restand")
        reversal = await desk.client.request(desk.terminal.reversal(void))
        assert reversal.fields[39] == "96"
        assert hold_state(app, done.fields[37]) == "completed"  # journaled: stands again
        assert await balance(app, WALLET) == (20_000, 8_000)

    async def stands(app: SwitchApp, desk: Desk) -> None:
        # Paid again, the hold released: as after the completion.
        assert await balance(app, WALLET) == (11_000, 0)
        assert await balance(app, MERCHANT_ACCOUNT) == (9_000, 0)
        assert await class_used(app) == 9_000
        assert hold_state(app, held[0].fields[37]) == "completed"
        await sound(app)

    await life(onus_config, first, 100)
    await life(onus_config, stands, 200)
    await life(onus_config, stands, 300)
