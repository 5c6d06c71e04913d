"""The citation student's experiments: not structune's API.

Recipes tried on one task, kept so that `benchmarks/` can repeat the runs that
docs/citation-student.md reports. Each plugs into the product through its public
mechanisms only: training data built beside the recorded conversations
(`citation_variants`, `recovery`) and `finetune(..., tokenize=...)` for answers cut or
weighed otherwise (`copies`, `decisions`). See README.md here.
"""
