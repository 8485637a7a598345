"""A Kubernetes API server emulator for the operator's tests.

kmock's ``KubernetesEmulator`` serves HTTP, records requests and lets tests
inject faults with its DSL; the subclass in :mod:`.server` replaces its
storage semantics, which are too loose for kopf (no resource versions, no
uids or generations, subresources patched as the main object, 200 for
creations, no garbage collection). :mod:`.store` holds those semantics,
written after the Kubernetes API concepts documentation and tested on their
own in ``tests/operator/test_apiserver.py``.
"""

from tests.operator.apiserver.server import ApiServer, running_apiserver
from tests.operator.apiserver.store import ApiError, Store

__all__ = ["ApiError", "ApiServer", "Store", "running_apiserver"]
