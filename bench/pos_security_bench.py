"""The CPU of security.md on the POS channel, in process: a sign-on (0800 in, 0810 with
fresh working keys under the TMK out), and what a sale adds (its MAC verified, its PIN
checked, its answer MAC'd, its PIN block translated to the link's ZPK, its bank request
MAC'd and the bank's answer's MAC checked), against the same sale without them. The
software security module on ``cryptography``, as the switch runs it. ``python -m
bench.pos_security_bench [--n N]``; prints one JSON object."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from switch.core.model import Origin, Outcome, SignOn
from switch.core.stats import TransactionStats
from switch.core.terminal_keys import TerminalKeys
from switch.log import configure_logging
from switch.net.pos import PosProtocol, PosWork
from switch.security import algorithms as alg
from switch.security.keystore import KeyStore, load_lmk, write_new_lmk_file
from switch.security.port import KeyComponent, TerminalProfile
from switch.security.software import SoftwareSecurityModule
from switch.terminal import DEMO_TMK, Terminal, TerminalSecurity, with_pin
from switch.wire.dialect import load_dialect
from switch.wire.framing import join_pos_frame, split_pos_frame
from switch.wire.iso8583 import Iso8583Codec

REPO = Path(__file__).resolve().parent.parent
ZMK = bytes.fromhex("6EB6B3253864862AF23D2FA1042A38BA")
PAN = "6222021000111122221"


class _Switchboard:
    """Answers a sign-on at once, as the switch's does, and nothing else."""

    stats = TransactionStats()
    paycode_prefix = None

    def network_management(self, request: SignOn, stamp: object, origin: object) -> Outcome:
        return Outcome(code="00", rrn="532614000122", batch=f"{int(request.batch) + 1:06d}")

    def check_merchant(self, merchant_id: str) -> None:
        pass

    def business_date(self, stamp: object) -> str:
        return "2026-12-07"


def _module(folder: Path) -> SoftwareSecurityModule:
    write_new_lmk_file(folder / "lmk")
    store = KeyStore(folder / "keys.json")
    lmk = load_lmk(lmk_file=folder / "lmk")
    SoftwareSecurityModule.create_store(store, lmk)
    module = SoftwareSecurityModule(store, lmk)
    for kind, owner, key, profile in (
        ("tmk", "*", DEMO_TMK, TerminalProfile(merchant="*")),
        ("zmk", "icbc", ZMK, None),
    ):
        mask = bytes(16)
        parts = [bytes(a ^ 0x5A for a in key), bytes(b ^ 0x5A for b in mask)]
        components = [KeyComponent(value=p, kcv=alg.kcv("3des", p).hex()) for p in parts]
        module.import_key_from_components(
            kind, owner, "3des", components,  # type: ignore[arg-type]
            confirm_kcv=alg.kcv("3des", key).hex(), profile=profile,
        )  # fmt: skip
    return module


def _cpu_us(n: int, call: Callable[[], object]) -> float:
    started = time.process_time()
    for _ in range(n):
        call()
    return (time.process_time() - started) / n * 1e6


def measure(n: int) -> dict[str, Any]:
    codec = Iso8583Codec(load_dialect(REPO / "conf" / "dialects" / "cup-pos.toml"))
    with tempfile.TemporaryDirectory() as folder:
        module = _module(Path(folder))
        keys = TerminalKeys(module, lifetime_s=86400, max_terminals=n + 10)
        secured = PosProtocol(codec, _Switchboard(), acquirer_id="48990000", utc_offset_h=8,  # type: ignore[arg-type]
                              keys=keys)  # fmt: skip
        plain = PosProtocol(codec, _Switchboard(), acquirer_id="48990000", utc_offset_h=8)  # type: ignore[arg-type]
        origin = Origin("pos", 1, 0.0)
        terminal = Terminal(terminal_id="B0000001", batch=0)
        envelope = terminal.envelope
        sign_on = join_pos_frame(envelope, codec.encode(*terminal.sign_on(1)))
        results: dict[str, Any] = {"n": n}

        async def main() -> None:
            # A sign-on: the same terminal again and again (each replaces its keys).
            results["sign_on_cpu_us"] = _cpu_us(n, lambda: secured.accept(sign_on, origin))
            answer = secured.accept(sign_on, origin)
            assert isinstance(answer, bytes)
            response = codec.decode(split_pos_frame(answer)[1])
            security = TerminalSecurity(DEMO_TMK)
            security.accept_sign_on(response.fields[62], str(response.fields[60])[2:8])  # type: ignore[arg-type]
            sale_terminal = Terminal(terminal_id="B0000001", batch=1)
            sale = sale_terminal.sale(7, PAN, 100)
            maced = join_pos_frame(
                envelope, security.encode(codec, *with_pin(sale, security, "123456"))
            )
            mti, fields = sale
            fields = {**fields, 22: "022"}
            unmaced = join_pos_frame(envelope, codec.encode(mti, fields))
            work = secured.accept(maced, origin)
            assert isinstance(work, PosWork) and work.keys is not None
            bare = plain.accept(unmaced, origin)
            assert isinstance(bare, PosWork)
            results["accept_sale_plain_us"] = _cpu_us(n, lambda: plain.accept(unmaced, origin))
            results["accept_sale_maced_pin_us"] = _cpu_us(n, lambda: secured.accept(maced, origin))
            reply = Outcome(code="00", rrn="532614000123", auth_code="A1B2C3")

            def answer_plain() -> object:
                return plain._reply(bare.envelope, "0200", bare.message.fields, reply, bare.stamp)

            def answer_maced() -> object:
                return secured._reply(
                    work.envelope, "0200", work.message.fields, reply, work.stamp, keys=work.keys
                )

            results["answer_plain_us"] = _cpu_us(n, answer_plain)
            results["answer_maced_us"] = _cpu_us(n, answer_maced)
            bank = module.make_bank_keys("zmk:icbc", "icbc.0")
            card = getattr(work.request, "card", None)
            assert card is not None and card.pin_block is not None and card.pin_key is not None
            pik, block, pan = card.pin_key, card.pin_block, card.pan
            results["translate_pin_us"] = _cpu_us(
                n, lambda: module.translate_pin(pik, bank.zpk, block, pan)
            )
            # The bank link's X9.19 MACs: the request's made, the answer's checked (a
            # bank sale's MAB is about 150 bytes).
            mab = bytes(range(150))
            mac = module.make_bank_mac(bank.zak, mab)
            results["bank_macs_us"] = _cpu_us(
                n,
                lambda: (
                    module.make_bank_mac(bank.zak, mab),
                    module.verify_bank_mac(bank.zak, mab, mac),
                ),
            )

        trio.run(main)
    results["sale_added_cpu_us"] = (
        results["accept_sale_maced_pin_us"] - results["accept_sale_plain_us"]
        + results["answer_maced_us"] - results["answer_plain_us"]
        + results["translate_pin_us"] + results["bank_macs_us"]
    )  # fmt: skip
    return {key: round(value, 1) if isinstance(value, float) else value
            for key, value in results.items()}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=5000, help="repetitions of each (5000)")
    args = parser.parse_args()
    with open(os.devnull, "wb") as sink:
        # The switch's JSON lines, as it writes them (a sign-on writes two), to nowhere.
        configure_logging("info", stream=sink)
        print(json.dumps(measure(args.n), indent=2))


if __name__ == "__main__":
    main()
