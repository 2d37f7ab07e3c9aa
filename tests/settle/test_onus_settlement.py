"""On-us payments in the day's settlement (wallet.md, "Settlement and files";
settlement.md): they count as card sales of their merchant, with the same fees, in
the same payout row, never held; the on-us ledger gets their fees and payouts; each is
reconciled against the ledger (``ledger_mismatch``, the ledger corrected to the
journal). Real files (SQLite) and
a real PostgreSQL database, through the settlement service as ``switch run`` drives
it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, time
from pathlib import Path

import trio

from switch.core.book import TxnRecord
from switch.core.calendar import BusinessCalendar, DateClosed
from switch.core.ledger import TransferKey, TransferSpec
from switch.core.merchants import MerchantBook, MerchantTerms
from switch.core.wallet import BoundAccount, MoneyAsk, WalletSettings
from switch.net.settlement import SettlementService
from switch.store.hold_store import HoldTaken
from switch.store.ledger_port import Reserved
from switch.store.ledger_store import LedgerStoreBase
from tests.settle.ledger_days import Place, record_of, txn
from tests.settle.test_business_day import local, stores

D = "2026-12-07"
APP = "app:wallet"
C = "C100000001"
M = "898110054110001"  # wallet.md's sample merchant: 38 bps, cap 26.00
POS = f"pos:{M}:POS00001"
TOPUP = "898310065400001"  # [wallet] topup_merchant_id
TERMS = [
    MerchantTerms(merchant_id=M, name="京东便利店 JD Mart", mcc="5411", mdr_bps=38,
                  fee_cap_fen=2600, account="6222020200112233445"),
]  # fmt: skip
ACCOUNT = BoundAccount(account="6222021000111133335", account_name="张三", bank_code="102100099996")
SAMPLE_PAYOUTS = (
    b"business_date,value_date,merchant_id,account,sales_count,sales_fen,refunds_count,"
    b"refunds_fen,fees_fen,held_fen,carried_in_fen,net_fen,payout_fen,carried_out_fen\n"
    b"2026-12-07,2026-12-08,898110054110001,6222020200112233445,1,8800,1,2000,33,0,0,6767,"
    b"6767,0\n"
)
RECON_HEADER = (
    b"business_date,category,bank,rrn,terminal_id,merchant_id,masked_pan,switch_fen,"
    b"bank_fen,action\n"
)
ACCOUNTS = [f"wallet:{C}", f"merchant:{M}", "bank_clearing:icbc", "withdrawals_payable",
            "merchant_fee_income", "payouts"]  # fmt: skip


def onus(kind: str, rrn: str, amount: int, **fields: object) -> TxnRecord:
    return txn(D, amount, rrn=rrn, kind=kind, bank="on-us", merchant_id=M, sent=None,
               pan_masked="882750******0572", stan=rrn[-6:], **fields)  # fmt: skip


def balances(ledger: LedgerStoreBase, names: list[str]) -> list[int]:
    found = []
    for name in names:
        view = ledger.account(name)
        found.append(0 if view is None else view.balances.balance)
    return found


def paid(ledger: LedgerStoreBase, rrn: str, amount: int, customer: str = C, *,
         leg: str = "pay", debit: str | None = None, credit: str | None = None,
         post: bool = True) -> None:  # fmt: skip
    """A transfer as the ledger desk leaves it: reserved, then posted (or voided)."""
    spec = TransferSpec(
        key=TransferKey(POS, rrn, leg), debit=debit or f"wallet:{customer}",
        credit=credit or f"merchant:{M}", amount=amount, kind=leg, rrn=rrn, merchant_id=M,
    )  # fmt: skip
    ledger.reserve(spec, 1.0)
    (ledger.post if post else ledger.void)(spec.key, 2.0)


def top_up(ledger: LedgerStoreBase, customer: str, amount: int) -> None:
    ledger.open_wallet(customer, APP, 2, D, 0.0)
    key = TransferKey(APP, f"topup-{customer}", "topup")
    ledger.reserve_topup(
        TransferSpec(key=key, debit="bank_clearing:icbc", credit=f"wallet:{customer}",
                     amount=amount, kind="topup", rrn="634110000100"), "icbc", D, 1.0,
    )  # fmt: skip
    ledger.end_payment(key, True, 2.0)


def settlement(
    place: Place,
    ledger: LedgerStoreBase | None,
    closed: tuple[str, ...] = (D,),
    clock: Callable[[], float] = lambda: 5000.0,
) -> SettlementService:
    """The service, its store holding ``closed`` closed, no bank links (the banks'
    records, if any, accepted into the store by the test)."""
    store, journal = stores(place)
    store.open()
    for number, day in enumerate(closed):
        store.record_close(DateClosed(date.fromisoformat(day), 1000.0 + number, False))
    calendar = BusinessCalendar(cutoff=time(23, 0), utc_offset_h=8, closes=store.closes())
    return SettlementService(
        store=store, journal=journal, calendar=calendar,
        merchants=MerchantBook(TERMS), connectors={},
        clearing_dir=lambda bank: place.folder / "clearing", out_dir=place.folder / "out",
        banks=lambda: [], institution_of=lambda bank: "0", settle_deadline="03:00",
        utc_offset_h=8, nudge=lambda bank: None, clock=clock, ledger=ledger,
        own_merchants=(TOPUP,),
    )  # fmt: skip


def out(place: Place, name: str) -> bytes:
    return (place.folder / "out" / name).read_bytes()


async def test_the_sample_day_of_wallet_md_settles_to_its_last_row(place: Place) -> None:
    """wallet.md's day: a ¥500 top-up, the ¥88.00 QR payment, ¥20.00 refunded, ¥100.00
    withdrawn and its file posted; settled: fee 33, payout 6,767, and the balances of the
    sample's last row (merchant 0, fee income 33, payouts 16,767). Settled again: the
    same bytes, nothing posted twice."""
    ledger = place.open_ledger()
    top_up(ledger, C, 50000)
    paid(ledger, "634110000131", 8800)
    paid(ledger, "634110000132", 2000, leg="refund", debit=f"merchant:{M}",
         credit=f"wallet:{C}")  # fmt: skip
    ledger.bind_account(C, APP, ACCOUNT, 7.0)
    withdraw = TransferSpec(key=TransferKey(APP, "wd-1", "withdraw"), debit=f"wallet:{C}",
                            credit="withdrawals_payable", amount=10000, kind="withdraw",
                            rrn="634114000140")  # fmt: skip
    ask = MoneyAsk(customer_id=C, amount=10000, counted="withdraw", channel="none",
                   verification=None, local_date=D)  # fmt: skip
    reserved = ledger.reserve_payment(ask, withdraw, WalletSettings(), 8.0, app=APP,
                                      withdraw_to=ACCOUNT, order=("634114000140", D))  # fmt: skip
    assert isinstance(reserved, Reserved)
    ledger.end_payment(withdraw.key, True, 9.0)
    assert balances(ledger, ACCOUNTS) == [33200, 6800, -50000, 10000, 0, 0]
    # The withdrawals file, at the date's close (the close's own work, as it posts it).
    [line] = ledger.withdrawals(D)
    ledger.transfer(TransferSpec(key=TransferKey(D, "withdrawals", line.rrn),
                                 debit="withdrawals_payable", credit="payouts",
                                 amount=line.amount, kind="withdrawals_file"), 10.0)  # fmt: skip
    assert balances(ledger, ACCOUNTS) == [33200, 6800, -50000, 0, 0, 10000]
    place.write_journal([
        onus("onus_sale", "634110000131", 8800),
        onus("onus_refund", "634110000132", 2000, original_rrn="634110000131"),
    ])  # fmt: skip
    service = settlement(place, ledger)
    status = await service.settle(D)
    assert out(place, "payouts-20261207.csv") == SAMPLE_PAYOUTS
    assert out(place, "recon-20261207.csv") == RECON_HEADER
    assert balances(ledger, ACCOUNTS) == [33200, 0, -50000, 0, 33, 16767]
    assert [(c.category, c.action, c.count) for c in status.categories] == [("matched", "paid", 2)]
    # The settlement's own ledger has nothing of it: on-us money is on the on-us ledger.
    assert await service.ledger_balances(f"merchant:{M}") == []
    await service.settle(D)  # again
    assert out(place, "payouts-20261207.csv") == SAMPLE_PAYOUTS
    assert balances(ledger, ACCOUNTS) == [33200, 0, -50000, 0, 33, 16767]
    assert not ledger.verify()
    service.store.close()
    ledger.close()


async def test_a_day_of_discrepancies_is_corrected_to_the_journal(place: Place) -> None:
    """Sales standing on both sides, one voided and one partly refunded (matched); one
    the journal has approved and the ledger voided (journal only), one the journal
    declined and the ledger posted (ledger only), one posted for less: each a
    ``ledger_mismatch`` line (bank ``on-us``, the masked code, the journal's and the
    ledger's amounts), paid as the journal has it; the ledger is corrected to the
    journal (a wallet debited at most to zero, ``recon_loss`` the rest), and the
    merchant's on-us account is left at zero."""
    ledger = place.open_ledger()
    top_up(ledger, C, 100000)
    top_up(ledger, "C2", 3500)
    paid(ledger, "634110000201", 5000)  # A: stands
    paid(ledger, "634110000202", 3000)  # B: voided
    paid(ledger, "634110000203", 3000, leg="void", debit=f"merchant:{M}", credit=f"wallet:{C}")
    paid(ledger, "634110000204", 4000)  # C: refunded 1000
    paid(ledger, "634110000205", 1000, leg="refund", debit=f"merchant:{M}",
         credit=f"wallet:{C}")  # fmt: skip
    paid(ledger, "634110000206", 2500, post=False)  # D: journal only (the hold voided)
    paid(ledger, "634110000207", 1500)  # E: ledger only
    paid(ledger, "634110000208", 6000)  # F: 7000 in the journal
    paid(ledger, "634110000209", 3000, "C2", post=False)  # G: journal only
    paid(ledger, "634110000211", 2500, "C2")  # I: stands, and leaves C2 1000
    paid(ledger, "634110000210", 700)  # H: reversed by its terminal, on both sides
    paid(ledger, "634110000210", 700, leg="reversal", debit=f"merchant:{M}",
         credit=f"wallet:{C}")  # fmt: skip
    place.write_journal([
        onus("onus_sale", "634110000201", 5000),
        onus("onus_sale", "634110000202", 3000, voided=True),
        onus("onus_void", "634110000203", 3000, original_rrn="634110000202"),
        onus("onus_sale", "634110000204", 4000, refunded=1000),
        onus("onus_refund", "634110000205", 1000, original_rrn="634110000204"),
        onus("onus_sale", "634110000206", 2500),
        onus("onus_sale", "634110000207", 1500, state="declined", code="51", auth_code=None),
        onus("onus_sale", "634110000208", 7000),
        onus("onus_sale", "634110000209", 3000),
        onus("onus_sale", "634110000210", 700, reversed=True),
        onus("onus_sale", "634110000211", 2500),
    ])  # fmt: skip
    service = settlement(place, ledger)
    await service.settle(D)
    assert out(place, "recon-20261207.csv") == RECON_HEADER + (
        b"2026-12-07,ledger_mismatch,on-us,634110000206,POS00001,898110054110001,"
        b"882750******0572,2500,,paid\n"
        b"2026-12-07,ledger_mismatch,on-us,634110000207,POS00001,898110054110001,"
        b"882750******0572,,1500,not_paid\n"
        b"2026-12-07,ledger_mismatch,on-us,634110000208,POS00001,898110054110001,"
        b"882750******0572,7000,6000,paid\n"
        b"2026-12-07,ledger_mismatch,on-us,634110000209,POS00001,898110054110001,"
        b"882750******0572,3000,,paid\n"
    )
    # Paid: A 5000, C 4000, D 2500, F 7000, G 3000, I 2500 (B and its void cancel out;
    # H does not stand); refunded 1000. Fees at 38 bps, half up:
    # 19 + 15 + 10 + 27 + 11 + 10 = 92.
    lines = out(place, "payouts-20261207.csv").decode().splitlines()
    assert lines[1] == ("2026-12-07,2026-12-08,898110054110001,6222020200112233445,"
                        "6,24000,1,1000,92,0,0,22908,22908,0")  # fmt: skip
    names = [f"wallet:{C}", "wallet:C2", f"merchant:{M}", "recon_loss", "merchant_fee_income",
             "payouts"]  # fmt: skip
    # C: 100000 less what stands (5000 + 4000 - 1000 + 2500 + 7000); C2 gave its 1000 of
    # G's 3000, recon_loss the other 2000.
    assert balances(ledger, names) == [82500, 0, 0, -2000, 92, 22908]
    assert not ledger.verify()
    await service.settle(D)  # again: nothing posted twice
    assert balances(ledger, names) == [82500, 0, 0, -2000, 92, 22908]
    service.store.close()
    ledger.close()


async def test_ledger_postings_wait_for_a_ledger_that_cannot_take_them(
    place: Place, tmp_path: Path
) -> None:
    """A correction the ledger refuses (its key already used for another transfer) is
    not marked done: it stays pending, and the orders before it are made once."""
    ledger = place.open_ledger()
    top_up(ledger, C, 10000)
    paid(ledger, "634110000301", 2000, post=False)
    # Something else under the correction's key: the hand-over must not pass it by.
    ledger.transfer(TransferSpec(key=TransferKey(D, "recon", "634110000301"),
                                 debit="bank_clearing:icbc", credit=f"wallet:{C}", amount=1,
                                 kind="adjust"), 1.0)  # fmt: skip
    place.write_journal([onus("onus_sale", "634110000301", 2000)])
    service = settlement(place, ledger)
    await service.settle(D)
    pending = service.store.pending_ledger_orders()
    assert [(o.request_id, o.leg) for o in pending] == [("recon", "634110000301")]
    await trio.lowlevel.checkpoint()
    service.store.close()
    ledger.close()


async def test_top_ups_are_matched_unpaid_and_their_wallets_corrected(place: Place) -> None:
    """settlement.md and wallet.md: top-ups are card sales of ``topup_merchant_id``,
    matched against the bank's file like any other, but in no payout row and with no
    fee (their money went to the wallet at approval); where a verdict changes the money
    the wallet is corrected: the bank's file lists one for less (amount_mismatch, paid
    at the bank's amount: the wallet gives the difference back), and one it never lists
    is reversed after its 2 dates (the wallet gives it all back, as far as it can)."""
    days = (D, "2026-12-08", "2026-12-09")
    ledger = place.open_ledger()
    ledger.open_wallet(C, APP, 2, D, 0.0)
    short, missing = "634110000401", "634110000402"
    for rrn, amount in ((short, 50000), (missing, 20000)):
        key = TransferKey(APP, f"topup-{rrn}", "topup")
        ledger.reserve_topup(
            TransferSpec(key=key, debit="bank_clearing:icbc", credit=f"wallet:{C}",
                         amount=amount, kind="topup", rrn=rrn), "icbc", D, 1.0,
        )  # fmt: skip
        ledger.end_payment(key, True, 2.0)
    topups = [txn(D, 50000, rrn=short, merchant_id=TOPUP),
              txn(D, 20000, rrn=missing, merchant_id=TOPUP)]  # fmt: skip
    place.write_journal(topups)
    service = settlement(place, ledger, days)
    service.store.accept_clearing_file("icbc", D, "icbc-20261207.clr",
                                       [record_of(topups[0], amount=49000)], at=1.0)  # fmt: skip
    async with trio.open_nursery() as nursery:
        await nursery.start(service.journal.run)
        await service.settle(D)
        assert out(place, "payouts-20261207.csv").count(b"\n") == 1  # the header alone
        recon = out(place, "recon-20261207.csv").decode().splitlines()[1:]
        assert [line.split(",")[1:4] + line.split(",")[7:] for line in recon] == [
            ["amount_mismatch", "icbc", short, "50000", "49000", "paid"],
            ["switch_only", "icbc", missing, "20000", "", "held"],
        ]
        names = [f"wallet:{C}", "bank_clearing:icbc", "recon_loss"]
        assert balances(ledger, names) == [69000, -69000, 0]
        for day in days[1:]:
            service.store.accept_clearing_file("icbc", day, "icbc.clr", [], at=1.0)
            await service.settle(day)
        assert balances(ledger, names) == [49000, -49000, 0]
        recon = out(place, "recon-20261209.csv").decode().splitlines()[1:]
        assert [line.split(",")[1:4] + line.split(",")[7:] for line in recon] == [
            ["switch_only", "icbc", missing, "20000", "", "reversal_queued"],
        ]
        # The settlement's own ledger has no sale of the top-up merchant to pay.
        assert await service.ledger_balances(f"merchant:{TOPUP}") == []
        nursery.cancel_scope.cancel()
    assert not ledger.verify()
    service.store.close()
    ledger.close()


async def test_orders_a_crash_left_are_made_when_the_service_starts(place: Place) -> None:
    """The settlement committed, then the switch stopped before the on-us ledger got its
    fee and payout: the service starting again makes them, once."""
    ledger = place.open_ledger()
    top_up(ledger, C, 50000)
    paid(ledger, "634110000131", 8800)
    place.write_journal([onus("onus_sale", "634110000131", 8800)])
    crashed = settlement(place, None)  # as if it had stopped before its hand-over
    await crashed.settle(D)
    assert len(crashed.store.pending_ledger_orders()) == 2  # the fee and the payout
    crashed.store.close()
    assert balances(ledger, [f"merchant:{M}", "payouts"]) == [8800, 0]
    again = settlement(place, ledger, clock=lambda: local("2026-12-08 10:00:00"))
    async with trio.open_nursery() as nursery:
        await nursery.start(again.run)
        nursery.cancel_scope.cancel()
    assert again.store.pending_ledger_orders() == []
    assert balances(ledger, [f"merchant:{M}", "merchant_fee_income", "payouts"]) == [
        0, 33, 8767,
    ]  # fmt: skip
    again.store.close()
    ledger.close()


async def test_an_onus_completion_settles_as_a_sale_its_preauth_and_void_never(
    place: Place,
) -> None:
    """risk.md: a completion by payment code is paid like an on-us sale (its fee on its
    amount), matched against what the ledger posted under its RRN (the hold's part and
    the excess); a pre-authorisation and its void are never paid."""
    ledger = place.open_ledger()
    top_up(ledger, C, 50000)
    held, completion, other, void = "634110000301", "634110000302", "634110000303", "634110000304"

    def hold(rrn: str, stan: str, amount: int) -> None:
        spec = TransferSpec(key=TransferKey(POS, stan, "hold"), debit=f"wallet:{C}",
                            credit=f"merchant:{M}", amount=amount, kind="pay", rrn=rrn,
                            merchant_id=M)  # fmt: skip
        ask = MoneyAsk(customer_id=C, amount=amount, counted="pay", channel="code",
                       verification="B", local_date=D)  # fmt: skip
        assert isinstance(ledger.reserve_payment(ask, spec, WalletSettings(), 3.0), Reserved)
        ledger.hold_keep(spec, customer_id=C, funding="wallet", verification="B",
                         instalments=None, at=3.0)  # fmt: skip

    hold(held, "000017000301", 10000)
    key = TransferKey(POS, "000017000302", "pay")
    taken = ledger.hold_complete(held, key, amount=11000, rrn=completion, local_date=D,
                                 settings=WalletSettings(), terms=None, at=4.0)  # fmt: skip
    assert isinstance(taken, HoldTaken) and (taken.held, taken.excess) == (10000, 1000)
    ledger.hold_end_completion(held, key, amount=11000, rrn=completion, approved=True,
                               terms=None, at=5.0)  # fmt: skip
    hold(other, "000017000303", 3000)
    assert ledger.hold_release(other, 6.0)
    assert balances(ledger, ACCOUNTS[:2]) == [39000, 11000]
    place.write_journal([
        onus("onus_preauth", held, 10000, hold_state="completed"),
        onus("onus_completion", completion, 11000, original_rrn=held),
        onus("onus_preauth", other, 3000, hold_state="voided", voided=True),
        onus("onus_preauth_void", void, 3000, original_rrn=other),
    ])  # fmt: skip
    service = settlement(place, ledger)
    status = await service.settle(D)
    assert out(place, "recon-20261207.csv") == RECON_HEADER
    assert [(c.category, c.action, c.count) for c in status.categories] == [("matched", "paid", 1)]
    # 11000 at 38 bps: 41.8, half up 42.
    lines = out(place, "payouts-20261207.csv").decode().splitlines()
    assert lines[1] == ("2026-12-07,2026-12-08,898110054110001,6222020200112233445,"
                        "1,11000,0,0,42,0,0,10958,10958,0")  # fmt: skip
    assert balances(ledger, ACCOUNTS) == [39000, 0, -50000, 0, 42, 10958]
    assert not ledger.verify()
    service.store.close()
    ledger.close()
