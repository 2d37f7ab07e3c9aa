"""security.md's online envelope: its sample frames to the byte, and step 1's refusals."""

from __future__ import annotations

import contextlib
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switch.net.clients import OnlineKey, UnverifiedAnswer
from switch.security import algorithms as alg
from switch.security.keystore import KeyStore, Lmk
from switch.security.software import SoftwareSecurityModule
from switch.wire import envelope
from switch.wire import online as wire

SECRET = bytes.fromhex("dd245b45470baa3ea93f22b6396f41506ec902e2e5f24e96f27225a6d09cdb93")
KEY_ID = "m-898310048990001-1"

REQUEST_FRAME = bytes.fromhex(
    "000000e985a66b65795f6964b36d2d3839383331303034383939303030312d31"
    "a27473ce69215877a56e6f6e6365b0513766324c6b39587742336e52387354a4"
    "626f6479c48186a474797065a87075726368617365a26964b14f52442d323032"
    "35313132322d30303031ab6d65726368616e745f6964af383938333130303438"
    "393930303031a6616d6f756e74cd2710a863757272656e6379a3434e59a46361"
    "726482a370616eb336323232303231303030313131313232323231a665787069"
    "7279a432383132a3736967c420730dfd9bae7563f5b7142aa7022205dde5371e"
    "4988210d0292eb97cf5ceabc67"
)
RESULT_FRAME = bytes.fromhex(
    "000000ee85a66b65795f6964b36d2d3839383331303034383939303030312d31"
    "a27473ce69215878a56e6f6e6365b45a70344863385665314d71365479305562"
    "324e77a4626f6479c48288a474797065a6726573756c74a26964b14f52442d32"
    "303235313132322d30303031a4636f6465a23030a8617070726f766564c3a372"
    "726eac353332363134303030313234a9617574685f636f6465a6413142324334"
    "af736574746c656d656e745f64617465aa323032352d31312d3232a76d657373"
    "616765a8617070726f766564a3736967c4208f97b789e9d68981e3033d0fa64f"
    "8a4771a68f1e320a492ec2b59b7c40e84b48"
)
REQUEST_SIG = "730dfd9bae7563f5b7142aa7022205dde5371e4988210d0292eb97cf5ceabc67"
RESULT_SIG = "8f97b789e9d68981e3033d0fa64f8a4771a68f1e320a492ec2b59b7c40e84b48"


def _payload(frame: bytes) -> bytes:
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    return frame[4:]


def _module(tmp_path: Path) -> SoftwareSecurityModule:
    """A store holding the sample's key, made with the sample's secret."""
    store, lmk = KeyStore(tmp_path / "store.json"), Lmk(bytes(range(32)))
    SoftwareSecurityModule.create_store(store, lmk)
    module = SoftwareSecurityModule(store, lmk, random_bytes=lambda n: SECRET[:n])
    module.create_online_key("merchant:898310048990001", tmp_path / "secret", key_id=KEY_ID)
    assert (tmp_path / "secret").read_text() == SECRET.hex() + "\n"
    return module


def test_the_sample_purchase_envelope_decodes_verifies_and_encodes_to_the_byte(
    tmp_path: Path,
) -> None:
    signed = envelope.decode(_payload(REQUEST_FRAME))
    assert (signed.key_id, signed.ts, signed.nonce) == (KEY_ID, 1763793015, "Q7f2Lk9XwB3nR8sT")
    assert len(signed.body) == 129
    assert REQUEST_FRAME.index(b"\xc4\x81") + 2 == REQUEST_FRAME.index(signed.body)
    request = wire.decode_request(signed.body)
    assert isinstance(request, wire.Purchase)
    assert (request.id, request.merchant_id, request.amount, request.currency) == (
        "ORD-20251122-0001", "898310048990001", 10000, "CNY",
    )  # fmt: skip
    assert (request.card.pan, request.card.expiry) == ("6222021000111122221", "2812")
    # The signed bytes, and the signature under the secret's 32 bytes.
    assert alg.signed_bytes(signed.key_id, signed.ts, signed.nonce, signed.body) == (
        b"m-898310048990001-1\n1763793015\nQ7f2Lk9XwB3nR8sT\n" + signed.body
    )
    assert signed.sig.hex() == REQUEST_SIG
    module = _module(tmp_path)
    assert module.online_principal(KEY_ID) == "merchant:898310048990001"
    assert module.verify_online(KEY_ID, signed.ts, signed.nonce, signed.body, signed.sig)
    assert not module.verify_online(KEY_ID, signed.ts + 1, signed.nonce, signed.body, signed.sig)
    # A client with the key's secret makes the very frame.
    key = OnlineKey(KEY_ID, SECRET)
    sealed = key.seal(signed.body, ts=1763793015, nonce="Q7f2Lk9XwB3nR8sT")
    assert len(sealed).to_bytes(4, "big") + sealed == REQUEST_FRAME


def test_the_sample_result_is_signed_by_the_module_to_the_byte(tmp_path: Path) -> None:
    sample = envelope.decode(_payload(RESULT_FRAME))
    result = wire.decode_response(sample.body)
    assert isinstance(result, wire.Result)
    assert (result.code, result.approved, result.rrn, result.auth_code) == (
        "00", True, "532614000124", "A1B2C4",
    )  # fmt: skip
    module = _module(tmp_path)
    ts, nonce = 1763793016, "Zp4Hc8Ve1Mq6Ty0Ub2Nw"
    sig = module.sign_online(KEY_ID, ts, nonce, sample.body)
    assert sig.hex() == RESULT_SIG
    encoded = envelope.encode(envelope.Envelope(KEY_ID, ts, nonce, sample.body, sig))
    assert len(encoded).to_bytes(4, "big") + encoded == RESULT_FRAME
    # The client takes it, on the sample's day, and refuses it 301 s later or altered.
    key = OnlineKey(KEY_ID, SECRET)
    assert key.open(sample, now=ts + 300) == sample.body
    with pytest.raises(UnverifiedAnswer, match="timestamp"):
        key.open(sample, now=ts + 301)
    altered = msgspec.structs.replace(sample, body=sample.body.replace(b"A1B2C4", b"A1B2C5"))
    with pytest.raises(UnverifiedAnswer, match="bad signature"):
        key.open(altered, now=ts)


def _frame(**fields: object) -> bytes:
    base: dict[str, object] = {
        "key_id": KEY_ID, "ts": 1, "nonce": "A" * 16,
        "body": wire.encode_request(wire.Status(id="S1", merchant_id="M", original_id="X")),
        "sig": bytes(32),
    }  # fmt: skip
    base.update(fields)
    return msgspec.msgpack.encode({k: v for k, v in base.items() if v is not _MISSING})


_MISSING = object()


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"sig": _MISSING}, "sig"),
        ({"sig": bytes(31)}, "sig"),
        ({"sig": "0" * 32}, "sig"),
        ({"nonce": "A" * 15}, "nonce"),
        ({"nonce": "A" * 33}, "nonce"),
        ({"nonce": "A" * 15 + "-"}, "nonce"),
        ({"ts": -1}, "ts"),
        ({"ts": "1"}, "ts"),
        ({"key_id": ""}, "key_id"),
        ({"key_id": "k" * 65}, "key_id"),
        ({"key_id": "a b"}, "key_id"),
        ({"body": "text"}, "body"),
        ({"extra": 1}, "extra"),
    ],
)
def test_a_frame_that_is_no_envelope_is_refused_naming_the_key(
    fields: dict[str, object], named: str
) -> None:
    with pytest.raises(envelope.EnvelopeDecodeError) as caught:
        envelope.decode(_frame(**fields))
    assert caught.value.key == named
    assert caught.value.request_id == ("S1" if "body" not in fields else None)


def test_a_frame_that_is_no_map_is_refused_without_an_id() -> None:
    for frame in (b"", b"\xc1", msgspec.msgpack.encode([1, 2]), b"\x85"):
        with pytest.raises(envelope.EnvelopeDecodeError) as caught:
            envelope.decode(frame)
        assert caught.value.request_id is None


def test_new_nonces_are_of_the_allowed_alphabet_and_length() -> None:
    nonces = {envelope.new_nonce() for _ in range(100)}
    assert len(nonces) == 100
    assert all(len(n) == envelope.NONCE_CHARS and n.isalnum() and n.isascii() for n in nonces)


@given(frame=st.binary(max_size=512))
@settings(max_examples=300, deadline=None)
def test_any_bytes_decode_or_raise_only_the_envelope_error(frame: bytes) -> None:
    with contextlib.suppress(envelope.EnvelopeDecodeError):
        envelope.decode(frame)


def test_demo_online_keys_exist_only_with_demo_keys(tmp_path: Path) -> None:
    from switch.security.errors import UnknownKeyError

    module = _module(tmp_path)
    for key_id in ("demo-app", "demo-m-SHOP01"):
        with pytest.raises(UnknownKeyError):
            module.online_principal(key_id)
    demo = SoftwareSecurityModule(module._store, module._lmk, demo_online_keys=True)
    assert demo.online_principal("demo-app") == "app:wallet"
    assert demo.online_principal("demo-m-SHOP01") == "merchant:SHOP01"
    assert demo.online_principal("demo-m-898310048990001") == "merchant:898310048990001"
    with pytest.raises(UnknownKeyError):
        demo.online_principal("demo-m-" + "1" * 16)  # no merchant id is 16 long
    body = b"\x80"
    demo_sig = OnlineKey.demo_merchant("SHOP01")
    signed = envelope.decode(demo_sig.seal(body))
    assert demo.verify_online(signed.key_id, signed.ts, signed.nonce, body, signed.sig)
    # The stored keys are still the store's.
    assert demo.online_principal(KEY_ID) == "merchant:898310048990001"
