"""On-device facial-expression recognition agent (no TensorFlow needed).

``agent`` owns the contracts shared with ``host_tools``: label order
(:mod:`agent.labels`), preprocessing (:mod:`agent.preprocess`), the bundle
manifest (:mod:`agent.manifest`) and the raw-tensor format
(:mod:`agent.rawtensor`).
"""

__version__ = "0.1.0"
