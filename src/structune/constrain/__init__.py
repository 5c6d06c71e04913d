"""Schema-constrained decoding for local models, on llguidance, and extractive fields.

Only light modules are imported here; llguidance loads when a grammar is first compiled.
"""

from structune.constrain.extractive import (
    Extracted,
    bind_sources,
    check_extracted,
    extracted_fields,
    strip_extractive,
)

__all__ = ["Extracted", "bind_sources", "check_extracted", "extracted_fields", "strip_extractive"]
