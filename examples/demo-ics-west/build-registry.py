#!/usr/bin/env python3
"""Rebuilds registry.json for the fictional neighbouring demo ICS (Westmere and Dale) from the
demo keys in keys/, and the Northmoor broker's copy of this broker's public keys.

Generate a demo system's key with `vpr-broker keys signing --demo-only --kid <client>-demo-1
--out keys/<client>.DEMO-ONLY.jwk`, then run this from examples/demo-ics-west/.
"""
import json

def pub(path):
    """The public part of a demo key."""
    key = json.load(open(path))
    return {k: v for k, v in key.items() if k not in ("d", "demo_only")}

PARTNERS = [
    ("YAC01", "Westmere Royal Infirmary NHS Foundation Trust (fictional)", "acute-trust",
     {"name": "Security management specialist", "telephone": "0113 496 0101", "email": "lsms@westmere-royal.example"},
     [("westmere-ed", "Emergency department system", ["notices:write", "notices:read", "lookups", "subscriptions"],
       ["ed-clinician", "ed-receptionist", "security-management-specialist", "vpr-lead"])]),
    ("YAM01", "Dale Valley Ambulance Service NHS Trust (fictional)", "ambulance-trust",
     {"name": "Violence reduction lead", "telephone": "0113 496 0102", "email": "vpr@dale-ambulance.example"},
     [("dale-cad", "Computer-aided dispatch", ["notices:write", "notices:read", "lookups", "subscriptions"],
       ["ambulance-dispatcher", "ambulance-clinician", "security-management-specialist", "vpr-lead"])]),
    ("YGP01", "Millbeck Surgery (fictional)", "gp-practice",
     {"name": "Practice manager", "telephone": "0113 496 0103"},
     [("millbeck-gp", "GP clinical system", ["notices:write", "notices:read", "lookups", "subscriptions"], ["gp-receptionist", "gp-clinician", "practice-manager"])]),
    ("YIC01", "NHS Westmere and Dale ICB (fictional)", "icb",
     {"name": "Information governance team", "email": "ig@westmere-dale-icb.example"},
     [("westmere-ig", "IG console", ["notices:read", "lookups", "audit:read", "ig:write"], ["ig-lead", "caldicott-guardian", "dpo"])]),
]

registry = {
    "registry_version": 1,
    "demo_only": True,
    "ics": {
        "name": "Westmere and Dale Integrated Care System (fictional)",
        "description": "DEMO ONLY: the neighbouring ICS of the Northmoor and Ashdale demo; fictional partners and telephone numbers, demo keys committed to the repository.",
    },
    "partners": [
        {"ods_code": o, "name": n, "type": t, "contact": c,
         "systems": [{"client_id": cid, "name": sn, "scopes": sc, "roles": roles,
                      "jwks": {"keys": [pub(f"keys/{cid}.DEMO-ONLY.jwk")]}} for cid, sn, sc, roles in s]}
        for o, n, t, c, s in PARTNERS
    ],
}
with open("registry.json", "w") as f:
    json.dump(registry, f, indent=2)
    f.write("\n")
# What each broker gives the other: its public signing keys.
for here, there in (("keys/broker-signing.DEMO-ONLY.jwk", "../demo-ics/peers/westmere-dale.jwks.json"),
                    ("../demo-ics/keys/broker-signing.DEMO-ONLY.jwk", "peers/northmoor-ashdale.jwks.json")):
    with open(there, "w") as f:
        json.dump({"keys": [pub(here)]}, f, indent=2)
        f.write("\n")
