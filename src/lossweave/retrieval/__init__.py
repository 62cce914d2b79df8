"""From embeddings to answers: an index searched on the device, threshold calibration, open-set matching.

Exact search runs with ``keras.ops`` on any backend in query chunks x gallery
blocks (memory O(query block x gallery block)); an approximate search on FAISS
sits behind the same interface when ``faiss-cpu`` is installed.
"""

from lossweave.retrieval.calibration import Calibration, calibrate, sweep
from lossweave.retrieval.index import Index, SearchResult
from lossweave.retrieval.matching import evaluate_classification, match

__all__ = ["Calibration", "Index", "SearchResult", "calibrate", "evaluate_classification", "match", "sweep"]
