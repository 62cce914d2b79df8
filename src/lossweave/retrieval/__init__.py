"""From embeddings to answers: an index searched on the device, threshold calibration, open-set matching.

Exact search runs with ``keras.ops`` on any backend in query chunks x gallery
blocks (memory O(query block x gallery block)); an approximate search on FAISS
sits behind the same interface when ``faiss-cpu`` is installed.
"""
