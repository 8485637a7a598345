"""Kubernetes operator for the ``BrokerCluster`` custom resource.

A kopf operator that reconciles each ``BrokerCluster`` into a coordinator
Deployment and Service, a comm-server StatefulSet behind a headless Service
(plus a hub StatefulSet in hub topology), PodDisruptionBudgets and an optional
ServiceMonitor, and reports what it sees in the resource's status.

The work is split so that almost all of it is plain functions of data:
:mod:`.spec` parses and checks the resource, :mod:`.manifests` turns a spec
into the desired objects, :mod:`.applying` computes the patch that moves a
live object to its desired state, :mod:`.conditions` derives status and
:mod:`.autoscaler` decides replica counts. Only :mod:`.kube` (API calls),
:mod:`.reconcile` (the sequence of calls) and :mod:`.handlers` (kopf
registration) touch the cluster.

The folder is ``operator/`` but the import name is ``broker_operator``: a
package named ``operator`` would shadow the standard library's.
"""

GROUP = "webrtc-broker.io"
VERSION = "v1alpha1"
PLURAL = "brokerclusters"
KIND = "BrokerCluster"
API_VERSION = f"{GROUP}/{VERSION}"
