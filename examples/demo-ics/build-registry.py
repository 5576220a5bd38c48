#!/usr/bin/env python3
"""Rebuilds registry.json for the fictional demo ICS from the demo keys in keys/.

Generate a demo system's key with `vpr-broker keys signing --demo-only --kid <client>-demo-1
--out keys/<client>.DEMO-ONLY.jwk`, then run this from examples/demo-ics/.
"""
import json

def pub(c):
    """The public part of a demo system's key (keys/<client>.DEMO-ONLY.jwk)."""
    key = json.load(open(f"keys/{c}.DEMO-ONLY.jwk"))
    return {k: v for k, v in key.items() if k not in ("d", "demo_only")}

PARTNERS = [
    ("XAC01", "Northmoor General Hospital NHS Trust (fictional)", "acute-trust",
     {"name": "Security management specialist", "telephone": "0113 496 0001", "email": "lsms@northmoor-general.example"},
     [("northmoor-ed", "Emergency department system", ["notices:write", "notices:read", "lookups", "subscriptions"],
       ["ed-clinician", "ed-receptionist", "security-management-specialist", "vpr-lead"])]),
    ("XAM01", "Northmoor Ambulance Service NHS Trust (fictional)", "ambulance-trust",
     {"name": "Violence reduction lead", "telephone": "0113 496 0002", "email": "vpr@northmoor-ambulance.example"},
     [("northmoor-cad", "Computer-aided dispatch", ["notices:write", "notices:read", "lookups", "subscriptions"],
       ["ambulance-dispatcher", "ambulance-clinician", "security-management-specialist", "vpr-lead"])]),
    ("XGP01", "Green Lane Surgery (fictional)", "gp-practice",
     {"name": "Practice manager", "telephone": "0113 496 0003"},
     [("ashdale-gp-green", "GP clinical system", ["notices:write", "notices:read", "lookups", "subscriptions"], ["gp-receptionist", "gp-clinician", "practice-manager"])]),
    ("XGP02", "Riverside Medical Centre (fictional)", "gp-practice",
     {"name": "Practice manager", "telephone": "0113 496 0004"},
     [("ashdale-gp-river", "GP clinical system", ["notices:write", "notices:read", "lookups", "subscriptions"], ["gp-receptionist", "gp-clinician", "practice-manager"])]),
    ("XPF01", "Northmoor Police (fictional)", "police-force",
     {"name": "Force control room", "telephone": "0113 496 0005", "email": "control@northmoor-police.example"},
     [("northmoor-police", "Force command and control", ["notices:write", "notices:read", "lookups", "subscriptions"], ["police-officer", "police-call-handler"])]),
    ("XLA01", "Ashdale Borough Council (fictional)", "local-authority",
     {"name": "Adult social care duty team", "telephone": "0113 496 0006"},
     [("ashdale-council", "Social care case system", ["notices:write", "notices:read", "lookups", "subscriptions"], ["social-worker"])]),
    ("XIC01", "NHS Northmoor and Ashdale ICB (fictional)", "icb",
     {"name": "Information governance team", "email": "ig@northmoor-ashdale-icb.example"},
     [("icb-ig", "IG console", ["notices:read", "lookups", "audit:read", "ig:write"], ["ig-lead", "caldicott-guardian", "dpo"])]),
]

registry = {
    "registry_version": 1,
    "demo_only": True,
    "ics": {
        "name": "Northmoor and Ashdale Integrated Care System (fictional)",
        "description": "DEMO ONLY: fictional partners, fictional telephone numbers (Ofcom drama range), demo keys committed to the repository.",
    },
    "partners": [
        {"ods_code": o, "name": n, "type": t, "contact": c,
         "systems": [{"client_id": cid, "name": sn, "scopes": sc, "roles": roles, "jwks": {"keys": [pub(cid)]}} for cid, sn, sc, roles in s]}
        for o, n, t, c, s in PARTNERS
    ],
}
with open("registry.json", "w") as f:
    json.dump(registry, f, indent=2)
    f.write("\n")
