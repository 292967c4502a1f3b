"""Validates an OpenAPI document (standard input) with openapi-spec-validator
against the OpenAPI 3.1 schema; prints "valid", or the error and exits 1."""

import json
import sys

from openapi_spec_validator import OpenAPIV31SpecValidator

document = json.load(sys.stdin)
errors = [str(e) for e in OpenAPIV31SpecValidator(document).iter_errors()]
if errors:
    print("\n".join(errors))
    sys.exit(1)
print("valid")
