"""Schema-constrained decoding for local models, on llguidance, and extractive fields.

Only light modules are imported here; llguidance loads when a grammar is first compiled.
"""

from structune.constrain.extractive import (
    Extracted,
    Extraction,
    SourceAudit,
    audit_extracted,
    bind_sources,
    check_extracted,
    extracted_fields,
    strip_extractive,
    with_extraction,
)

__all__ = [
    "Extracted",
    "Extraction",
    "SourceAudit",
    "audit_extracted",
    "bind_sources",
    "check_extracted",
    "extracted_fields",
    "strip_extractive",
    "with_extraction",
]
