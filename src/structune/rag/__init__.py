"""RAG over a PDF with the seed notebook's own stack (PyMuPDF, LlamaIndex, all-MiniLM-L6-v2).

`structune.rag.ingest` turns a PDF into a persisted vector index and retrieves its chunks.
"""
