"""Pipeline steps, listed in data-flow order (one module each):

  ingest.py             read corpora (local / S3), label documents: doc_id, source, text
  filters.py            COLA processing: quality filters per document
  formatting.py         COLA processing: Q&A records rendered with a reasoning section
  neardup.py            COLA processing: corpus-wide MinHash near-duplicate verdicts
  process.py            tokenize, split into chunks, exact-duplicate keys (the pool resolves them)
  activations.py        the model pass that fills the pool (cola_ray/pool/ owns its shards)
  perplexity.py         a model pass over the pool: token perplexity per chunk (a selector's input)
  sources.py            COLA source selection maths: coverage of capabilities, per-source quotas
  cluster.py            k-means (FAISS, one node) and nearest-centroid assignment
  kmeans_distributed.py k-means over Ray actors holding shards of the vectors
  kmeans_maths.py       its pure maths: exact fixed-point sums, the Lloyd step, the row hash
  select.py             one representative per cluster (nearest its centroid, ties by id)

base.py declares what a stage needs (resources, batch size, columns read and written, per-worker
`setup()`); runner.py is the only code that hands stages to Ray Data. Stages never import
workflows or each other (base.py and runner.py are not stages; process.py applies filters.py
per document inside its chunking task, so the text is read once).
"""
