"""On-device facial-expression recognition agent (no TensorFlow needed).

``agent`` owns the contracts shared with ``host_tools``: label order
(:mod:`agent.contracts.labels`), preprocessing (:mod:`agent.contracts.preprocess`), the bundle
manifest (:mod:`agent.contracts.manifest`) and the raw-tensor format
(:mod:`agent.contracts.rawtensor`).
"""

__version__ = "0.1.0"
