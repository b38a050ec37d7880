#!/usr/bin/env python3
"""A second, independent reader of the service's checkpoints, written from the C2SP
signed-note and tlog-checkpoint specifications (and docs/verifying.md) alone, with Python's
`cryptography` for Ed25519. The end-to-end tests run it on checkpoints the service signed.

Usage: verify_checkpoint.py VERIFIER_KEY NOTE_FILE
Prints {"origin", "size", "root"} (root in hex) and exits 0 when a signature by that key
verifies; exits 1 with a reason otherwise.
"""

import base64
import hashlib
import json
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def fail(reason):
    print(reason, file=sys.stderr)
    sys.exit(1)


def main():
    vkey, path = sys.argv[1], sys.argv[2]
    name, key_hash, key_data = vkey.split("+", 2)
    raw = base64.b64decode(key_data)
    if len(raw) != 33 or raw[0] != 0x01:
        fail("not an Ed25519 verifier key")
    public = raw[1:]
    key_id = hashlib.sha256(name.encode() + b"\n" + b"\x01" + public).digest()[:4]
    if key_id.hex() != key_hash:
        fail("the verifier key's hash does not match its name and key")

    note = open(path, encoding="utf-8").read()
    if "\n\n" not in note or not note.endswith("\n"):
        fail("not a signed note")
    text, signatures = note.rsplit("\n\n", 1)
    text += "\n"
    verified = False
    for line in signatures.splitlines():
        if not line.startswith("\u2014 "):
            fail("a signature line must start with an em dash and a space")
        signer, signature = line[2:].split(" ", 1)
        blob = base64.b64decode(signature)
        if signer != name or blob[:4] != key_id:
            continue
        try:
            Ed25519PublicKey.from_public_bytes(public).verify(blob[4:], text.encode())
        except InvalidSignature:
            fail("the signature does not verify")
        verified = True
    if not verified:
        fail("no signature by this key")

    lines = text.split("\n")
    origin, size, root = lines[0], int(lines[1]), base64.b64decode(lines[2])
    if len(root) != 32:
        fail("the root hash is not 32 bytes")
    print(json.dumps({"origin": origin, "size": size, "root": root.hex()}))


main()
