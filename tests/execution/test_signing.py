"""The signer against the documented vectors (``order-entry-protocols.md`` section 1.5 and the method examples)."""

from __future__ import annotations

import base64
import os
import pickle
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from flox_trio import ConfigError
from flox_trio.execution._signing import Ed25519Signer, HmacSigner, payload

DOC_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
DOC_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"

ASCII_PARAMS = {
    "symbol": "BTCUSDT", "side": "SELL", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.01000000",
    "price": "52000.00", "recvWindow": 100, "timestamp": 1645423376532, "apiKey": DOC_KEY,
    "signature": "------ FILL ME ------",
}
UNICODE_PARAMS = {
    "symbol": "１２３４５６", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "1.00000000",
    "price": "0.10000000", "recvWindow": 5000, "timestamp": 1645423376532, "apiKey": DOC_KEY,
}


def test_payload_is_sorted_and_unencoded() -> None:
    assert payload(ASCII_PARAMS) == (
        f"apiKey={DOC_KEY}&price=52000.00&quantity=0.01000000&recvWindow=100&side=SELL&symbol=BTCUSDT"
        "&timeInForce=GTC&timestamp=1645423376532&type=LIMIT")
    assert "symbol=１２３４５６" in payload(UNICODE_PARAMS)


@pytest.mark.parametrize(("params", "signature"), [
    (ASCII_PARAMS, "aa1b5712c094bc4e57c05a1a5c1fd8d88dcd628338ea863fec7b88e59fe2db24"),
    (UNICODE_PARAMS, "b33892ae8e687c939f4468c6268ddd4c40ac1af18ad19a064864c47bae0752cd"),
    # session.logon (1.6), order.place (1.7), order.cancel (1.8), order.status (1.9), account.status (1.11)
    ({"apiKey": DOC_KEY, "timestamp": 1649729878532},
     "1cf54395b336b0a9727ef27d5d98987962bc47aca6e13fe978612d0adee066ed"),
    ({"symbol": "BTCUSDT", "side": "SELL", "type": "LIMIT", "timeInForce": "GTC", "price": "23416.10000000",
      "quantity": "0.00847000", "apiKey": DOC_KEY, "timestamp": 1660801715431},
     "15af09e41c36f3cc61378c2fbe2c33719a03dd5eba8d0f9206fbda44de717c88"),
    ({"symbol": "BTCUSDT", "origClientOrderId": "4d96324ff9d44481926157", "apiKey": DOC_KEY,
      "timestamp": 1660801715830}, "33d5b721f278ae17a52f004a82a6f68a70c68e7dd6776ed0be77a455ab855282"),
    ({"symbol": "BTCUSDT", "orderId": 12569099453, "apiKey": DOC_KEY, "timestamp": 1660801720951},
     "2c3aab5a078ee4ea465ecd95523b77289f61476c2f238ec10c55ea6cb11a6f35"),
    ({"apiKey": DOC_KEY, "timestamp": 1660801839480},
     "83303b4a136ac1371795f465808367242685a9e3a42b22edb4d977d0696eb45c"),
])
def test_hmac_reproduces_the_documented_signatures(params: dict[str, object], signature: str) -> None:
    assert HmacSigner(DOC_SECRET).sign_params(params) == signature


def test_ed25519_reproduces_rfc8032_test_1() -> None:
    # Binance's Ed25519 examples are signed with a key the docs do not publish; RFC 8032
    # section 7.1 TEST 1 pins the algorithm and the base64 encoding instead.
    secret = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    signer = Ed25519Signer(Ed25519PrivateKey.from_private_bytes(secret))
    expected = bytes.fromhex(
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe"
        "24655141438e7a100b")
    assert base64.b64decode(signer.sign("")) == expected


def test_ed25519_signs_the_documented_payload_verifiably() -> None:
    key = Ed25519PrivateKey.generate()
    signer = Ed25519Signer(key)
    sig = signer.sign_params(ASCII_PARAMS)
    key.public_key().verify(base64.b64decode(sig), payload(ASCII_PARAMS).encode())
    assert len(sig) == 88  # as the documented Ed25519 signatures


def test_signers_hide_their_keys(tmp_path: Path) -> None:
    hmac_signer = HmacSigner(DOC_SECRET)
    assert DOC_SECRET not in repr(hmac_signer) and DOC_SECRET not in str(hmac_signer)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(hmac_signer)
    pem = Ed25519PrivateKey.generate().private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    path = tmp_path / "key.pem"
    path.write_bytes(pem)
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600") as info:
        Ed25519Signer.from_file(path)
    assert pem.decode() not in str(info.value)
    os.chmod(path, 0o600)
    signer = Ed25519Signer.from_file(path)
    assert "PRIVATE" not in repr(signer)
    path.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ConfigError, match="not a readable PEM") as info:
        Ed25519Signer.from_file(path)
    assert "not a key" not in str(info.value) and info.value.__cause__ is None
