"""Independent validation of FHIR R4 resources emitted by the broker.

Reads {"resources": [...]} on stdin and checks each resource (Bundles with everything in them)
two ways, with code that shares nothing with the broker's:
  1. HL7's official FHIR R4 JSON Schema (fhir.schema.json, version 4.0; path in
     VPR_TEST_FHIR_SCHEMA), which checks structure, cardinality, primitive formats and the
     required code bindings;
  2. the fhir.resources R4 models (fhir.resources 6.4.0, FHIR 4.0.1).
Prints {"checked": n} or, if anything fails, the failures and exits non-zero.
"""
import json
import os
import sys

import jsonschema
from fhir.resources import construct_fhir_element


def main() -> None:
    resources = json.load(sys.stdin)["resources"]
    with open(os.environ["VPR_TEST_FHIR_SCHEMA"], encoding="utf-8") as f:
        schema = json.load(f)
    definitions = schema["definitions"]
    failures = []
    for i, resource in enumerate(resources):
        kind = resource.get("resourceType")
        if kind not in definitions:
            failures.append(f"#{i}: `{kind}` is not an R4 resource type")
            continue
        validator = jsonschema.Draft6Validator({"$ref": f"#/definitions/{kind}", "definitions": definitions})
        for error in sorted(validator.iter_errors(resource), key=lambda e: list(e.absolute_path)):
            best = jsonschema.exceptions.best_match([error])
            path = "/".join(str(p) for p in best.absolute_path)
            failures.append(f"#{i} {kind} (R4 JSON Schema) at /{path}: {best.message[:300]}")
        try:
            construct_fhir_element(kind, resource)
        except Exception as error:  # the models raise pydantic validation errors
            failures.append(f"#{i} {kind} (fhir.resources R4): {str(error)[:600]}")
    if failures:
        print(json.dumps({"failures": failures}, indent=1))
        sys.exit(1)
    print(json.dumps({"checked": len(resources)}))


if __name__ == "__main__":
    main()
