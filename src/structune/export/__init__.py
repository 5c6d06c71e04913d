"""Export: trained adapters in formats other serving stacks load."""
