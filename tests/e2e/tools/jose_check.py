"""Independent check of a webhook body, with jwcrypto (not the JOSE code that produced it).

Reads a JSON request on stdin: {"body": <the HTTP body>, "jwks": <the broker's JWKS>,
"private_jwk": <the subscriber's private key, if the body is encrypted>}. Decrypts the JWE if
there is a key, verifies the JWS against the JWKS (ES256, by kid), and prints the headers and
claims as JSON. Exits non-zero if anything does not verify.
"""
import json
import sys

from jwcrypto import jwe, jwk, jws


def main() -> None:
    req = json.load(sys.stdin)
    body = req["body"]
    out = {}
    if req.get("private_jwk"):
        token = jwe.JWE()
        token.deserialize(body, key=jwk.JWK(**req["private_jwk"]))
        out["jwe_header"] = json.loads(token.objects["protected"])
        body = token.payload.decode()
    keys = jwk.JWKSet.from_json(json.dumps(req["jwks"]))
    signed = jws.JWS()
    signed.deserialize(body)
    header = signed.jose_header
    signed.verify(keys.get_key(header["kid"]), alg="ES256")
    out["jws_header"] = header
    out["claims"] = json.loads(signed.payload)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
