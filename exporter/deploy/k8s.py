"""Kubernetes manifests for a built repository: Triton + the OpenAI-compatible gateway, generated from manifest.json.

We do not schedule anything ourselves: Kubernetes (or KServe) is the orchestrator and Triton the engine. What we
know better than a generic chart is the build: which models are served, on which device kind, with which batch
limits; so the manifests are generated from the build's ``manifest.json`` and validated against the Kubernetes
schemas in the tests (``kubernetes-validate``).

Design choices, each for a failure we want to avoid:

- **Graceful termination longer than the longest request.** On a rolling update Kubernetes sends SIGTERM; Triton
  then stops accepting new requests and finishes those in flight for ``--exit-timeout-secs``. The pod's grace
  period is that plus the pre-stop drain, so the kubelet never SIGKILLs a request that was already accepted.
- **A pre-stop sleep.** Endpoints are removed asynchronously; the sleep keeps the pod serving while Services stop
  routing to it, so no new request lands on a terminating pod.
- **Readiness on ``/v2/health/ready``**, which Triton answers only when every model loaded: a replica joins the
  Service only once it can answer; liveness on ``/v2/health/live`` with a long start-up allowance (model loads).
- **Only the gateway is exposed.** A NetworkPolicy admits traffic to Triton from the gateway pods only; metrics
  scraping is allowed from the namespace that runs Prometheus.
- **Autoscaling on queue time**, not CPU: a replica that is saturated shows it first as time spent in Triton's
  queue (``nv_inference_queue_duration_us``). The HPA reads it as a per-pod custom metric, which needs a metrics
  adapter; the rule it assumes is :data:`ADAPTER_RULE` (prometheus-adapter), written next to the manifests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import objectstore
from ..errors import ConfigError

TRITON_IMAGE = "emb-provider-triton:26.08"  # docker/Dockerfile: the NGC image + tokenizers/torch for our models
GATEWAY_IMAGE = "emb-provider-gateway:latest"
LABEL = "app.kubernetes.io/name"
PART_OF = "app.kubernetes.io/part-of"
HTTP, GRPC, METRICS, GATEWAY_PORT = 8000, 8001, 8002, 8080
QUEUE_METRIC = "triton_queue_time_us_per_request"
# HPA targets for the average queue time per request (docs/scaling.md): a GPU replica answers a batch of 64 short
# texts in ~7 ms (H200, p99 9.3 ms), so 5 ms of queue is already a full replica; a 2-core CPU replica takes ~0.6 s
# per such batch, so 50 ms is a tenth of one batch.
GPU_QUEUE_TARGET_US, CPU_QUEUE_TARGET_US = 5_000, 50_000
API_KEYS_ENV = "EMB_PROVIDER_GATEWAY_API_KEYS"
DRAIN_SECONDS = 10  # pre-stop sleep: long enough for endpoint removal to reach kube-proxy and the gateway
ADAPTER_RULE = f"""\
# prometheus-adapter rule for the HorizontalPodAutoscaler in triton-hpa.yaml: the average time a request waited in
# Triton's queue over the last minute, per pod, in microseconds. Put it under `rules:` in the adapter's config.
- seriesQuery: 'nv_inference_queue_duration_us{{namespace!="",pod!=""}}'
  resources:
    overrides:
      namespace: {{resource: "namespace"}}
      pod: {{resource: "pod"}}
  name:
    as: "{QUEUE_METRIC}"
  metricsQuery: >-
    sum(rate(nv_inference_queue_duration_us{{<<.LabelMatchers>>}}[1m])) by (<<.GroupBy>>)
    / clamp_min(sum(rate(nv_inference_request_success{{<<.LabelMatchers>>}}[1m])) by (<<.GroupBy>>), 1e-9)
"""
_SCHEMES = tuple(f"{scheme}://" for scheme in objectstore.SCHEMES)
_PVC = re.compile(r"^pvc://(?P<claim>[a-z0-9]([-a-z0-9]*[a-z0-9])?)(?P<sub>/.*)?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class K8sOptions:
    """What the generated deployment looks like; validated here so that a bad value never reaches the cluster.

    ``repository`` is where Triton reads the build: an object-store URL (``s3://``, ``gs://``, ``as://``; the NGC
    image reads them natively, credentials from ``credentials_secret``) or ``pvc://<claim>[/<subpath>]`` for a
    shared volume. ``request_timeout`` is the longest a request may take (the client's default is 60 s): the
    termination grace period is derived from it.
    """

    repository: str
    gpu: bool = False
    replicas: int = 2
    max_replicas: int = 8
    namespace: str = "emb-provider"
    triton_image: str = TRITON_IMAGE
    gateway_image: str = GATEWAY_IMAGE
    gateway: bool = True
    credentials_secret: str | None = None
    api_keys_secret: str = "emb-provider-gateway-keys"
    request_timeout: int = 60
    queue_target_us: int | None = None  # None: GPU_QUEUE_TARGET_US or CPU_QUEUE_TARGET_US by ``gpu``
    prometheus_namespace: str = "monitoring"

    def __post_init__(self) -> None:
        if self.queue_target_us is None:
            object.__setattr__(self, "queue_target_us", GPU_QUEUE_TARGET_US if self.gpu else CPU_QUEUE_TARGET_US)
        if not (self.repository.startswith(_SCHEMES) or _PVC.match(self.repository)):
            raise ConfigError(f"--repository {self.repository!r}: expected an object-store URL "
                              f"({', '.join(s + 'bucket/prefix' for s in _SCHEMES)}) or pvc://<claim>[/<subpath>]; "
                              "a local directory is not reachable from a cluster (publish it first)")
        for flag, value, low in (("--replicas", self.replicas, 1), ("--max-replicas", self.max_replicas, 1),
                                 ("--request-timeout", self.request_timeout, 1),
                                 ("--queue-target-us", self.queue_target_us, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"{flag} {value!r}: expected an integer >= {low}")
        if self.max_replicas < self.replicas:
            raise ConfigError(f"--max-replicas {self.max_replicas} is below --replicas {self.replicas}")
        for flag, value in (("--namespace", self.namespace), ("--prometheus-namespace", self.prometheus_namespace),
                            ("--credentials-secret", self.credentials_secret or "x"),
                            ("--api-keys-secret", self.api_keys_secret)):
            if len(value) > 63 or not _DNS_LABEL.match(value):
                raise ConfigError(f"{flag} {value!r}: expected a DNS label (lower-case letters, digits and '-', "
                                  "at most 63 characters)")

    @property
    def exit_timeout(self) -> int:
        """Triton's ``--exit-timeout-secs``: requests in flight at SIGTERM may run this long to completion."""
        return self.request_timeout + 5

    @property
    def grace_period(self) -> int:
        """The pod's termination grace: the drain sleep, then Triton's exit timeout, then a margin."""
        return DRAIN_SECONDS + self.exit_timeout + 5


def _labels(component: str) -> dict[str, str]:
    return {LABEL: component, PART_OF: "emb-provider"}


def _meta(name: str, options: K8sOptions, component: str) -> dict[str, Any]:
    return {"name": name, "namespace": options.namespace, "labels": _labels(component)}


def _probe(path: str, port: int, *, period: int, failures: int, initial: int = 0) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": port}, "periodSeconds": period, "failureThreshold": failures,
            "initialDelaySeconds": initial, "timeoutSeconds": 5}


def _repository_mount(options: K8sOptions) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    """(--model-repository value, volumes, volume mounts) for the repository location."""
    match = _PVC.match(options.repository)
    if not match:
        return options.repository, [], []
    volume = {"name": "model-repository",
              "persistentVolumeClaim": {"claimName": match["claim"], "readOnly": True}}
    mount = {"name": "model-repository", "mountPath": "/models", "readOnly": True}
    if match["sub"] and match["sub"].strip("/"):
        mount["subPath"] = match["sub"].strip("/")
    return "/models", [volume], [mount]


def triton_deployment(options: K8sOptions, models: list[str]) -> dict[str, Any]:
    """Triton with the build's repository: probes, resources, and a shutdown that finishes accepted requests."""
    repository, volumes, mounts = _repository_mount(options)
    resources: dict[str, Any] = {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "8Gi"}}
    if options.gpu:
        resources["limits"]["nvidia.com/gpu"] = 1
        resources["requests"]["nvidia.com/gpu"] = 1
    container: dict[str, Any] = {
        "name": "triton",
        "image": options.triton_image,
        "args": ["tritonserver", f"--model-repository={repository}", f"--exit-timeout-secs={options.exit_timeout}",
                 "--strict-readiness=true", "--log-verbose=0"],
        "ports": [{"name": "http", "containerPort": HTTP}, {"name": "grpc", "containerPort": GRPC},
                  {"name": "metrics", "containerPort": METRICS}],
        "readinessProbe": _probe("/v2/health/ready", HTTP, period=5, failures=3),
        "livenessProbe": _probe("/v2/health/live", HTTP, period=10, failures=6),
        # model loads (and a cold object-store download) can take minutes: liveness starts after this
        "startupProbe": _probe("/v2/health/live", HTTP, period=10, failures=60),
        "lifecycle": {"preStop": {"sleep": {"seconds": DRAIN_SECONDS}}},
        "resources": resources,
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}] + mounts,
    }
    if options.credentials_secret:
        container["envFrom"] = [{"secretRef": {"name": options.credentials_secret}}]
    pod_spec: dict[str, Any] = {
        "terminationGracePeriodSeconds": options.grace_period,
        "containers": [container],
        # the python backend passes tensors through shared memory; the default 64 MiB /dev/shm is too small
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}] + volumes,
    }
    if options.gpu:
        pod_spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    annotations = {"emb-provider/models": ",".join(models), "prometheus.io/scrape": "true",
                   "prometheus.io/port": str(METRICS)}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta("triton", options, "triton"),
        "spec": {
            "replicas": options.replicas,
            "selector": {"matchLabels": {LABEL: "triton"}},
            # one new pod at a time, never fewer ready pods than asked for: updates drop no capacity
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"metadata": {"labels": _labels("triton"), "annotations": annotations}, "spec": pod_spec},
        },
    }


def _service(name: str, options: K8sOptions, ports: list[tuple[str, int]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(name, options, name),
            "spec": {"selector": {LABEL: name},
                     "ports": [{"name": port_name, "port": port, "targetPort": port} for port_name, port in ports]}}


def triton_service(options: K8sOptions) -> dict[str, Any]:
    return _service("triton", options, [("http", HTTP), ("grpc", GRPC), ("metrics", METRICS)])


def disruption_budget(options: K8sOptions, component: str) -> dict[str, Any]:
    """At most one replica evicted at a time by voluntary disruptions (node drains, upgrades)."""
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": _meta(f"{component}-pdb", options, component),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {LABEL: component}}}}


def triton_autoscaler(options: K8sOptions) -> dict[str, Any]:
    """Scale on the per-pod queue time (custom metric from the adapter rule in :data:`ADAPTER_RULE`)."""
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": _meta("triton-hpa", options, "triton"),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "triton"},
            "minReplicas": options.replicas, "maxReplicas": options.max_replicas,
            "metrics": [{"type": "Pods", "pods": {
                "metric": {"name": QUEUE_METRIC},
                "target": {"type": "AverageValue", "averageValue": str(options.queue_target_us)}}}],
            # scale up fast on a spike, down slowly so that a lull does not drop warm replicas
            "behavior": {"scaleUp": {"stabilizationWindowSeconds": 30},
                         "scaleDown": {"stabilizationWindowSeconds": 300}},
        },
    }


def gateway_deployment(options: K8sOptions) -> dict[str, Any]:
    """The OpenAI-compatible gateway (``python -m gateway``) in front of the Triton Service, keys from a Secret."""
    container = {
        "name": "gateway",
        "image": options.gateway_image,
        "args": ["python", "-m", "gateway", "--triton-url", f"triton:{HTTP}", "--host", "0.0.0.0",
                 "--port", str(GATEWAY_PORT), "--api-key-env", API_KEYS_ENV],
        "env": [{"name": API_KEYS_ENV,
                 "valueFrom": {"secretKeyRef": {"name": options.api_keys_secret, "key": "api-keys"}}}],
        "ports": [{"name": "http", "containerPort": GATEWAY_PORT}],
        "readinessProbe": _probe("/ready", GATEWAY_PORT, period=5, failures=3),
        "livenessProbe": _probe("/health", GATEWAY_PORT, period=10, failures=3, initial=5),
        "lifecycle": {"preStop": {"sleep": {"seconds": DRAIN_SECONDS}}},
        "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
    }
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta("gateway", options, "gateway"),
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {LABEL: "gateway"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"metadata": {"labels": _labels("gateway")},
                         "spec": {"terminationGracePeriodSeconds": options.grace_period, "containers": [container]}},
        },
    }


def gateway_service(options: K8sOptions) -> dict[str, Any]:
    return _service("gateway", options, [("http", GATEWAY_PORT)])


def network_policy(options: K8sOptions) -> dict[str, Any]:
    """Triton accepts inference traffic from the gateway pods only, and metrics scrapes from Prometheus."""
    from_gateway = {"podSelector": {"matchLabels": {LABEL: "gateway"}}}
    from_prometheus = {"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": options.prometheus_namespace}}}
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": _meta("triton-ingress", options, "triton"),
        "spec": {
            "podSelector": {"matchLabels": {LABEL: "triton"}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [from_gateway], "ports": [{"port": HTTP}, {"port": GRPC}]},
                {"from": [from_prometheus], "ports": [{"port": METRICS}]},
            ],
        },
    }


def kserve_service(options: K8sOptions) -> dict[str, Any]:
    """The alternative to the Deployment: a KServe InferenceService on KServe's Triton runtime."""
    predictor: dict[str, Any] = {
        "minReplicas": options.replicas, "maxReplicas": options.max_replicas,
        "model": {"modelFormat": {"name": "triton"}, "storageUri": options.repository,
                  "runtimeVersion": options.triton_image.rsplit(":", 1)[-1],
                  "args": [f"--exit-timeout-secs={options.exit_timeout}", "--strict-readiness=true"]},
    }
    if options.gpu:
        predictor["model"]["resources"] = {"limits": {"nvidia.com/gpu": 1}}
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": _meta("emb-provider", options, "triton"), "spec": {"predictor": predictor}}


def manifests(options: K8sOptions, models: list[str]) -> dict[str, dict[str, Any]]:
    """File name -> resource, in apply order. KServe's InferenceService is the alternative, not part of the set."""
    resources = {
        "triton-deployment.yaml": triton_deployment(options, models),
        "triton-service.yaml": triton_service(options),
        "triton-pdb.yaml": disruption_budget(options, "triton"),
        "triton-hpa.yaml": triton_autoscaler(options),
    }
    if options.gateway:
        resources |= {"gateway-deployment.yaml": gateway_deployment(options),
                      "gateway-service.yaml": gateway_service(options),
                      "gateway-pdb.yaml": disruption_budget(options, "gateway"),
                      "networkpolicy.yaml": network_policy(options)}
    return resources


def served_models(manifest: dict[str, Any]) -> list[str]:
    """The public model names of a build's manifest.json (a ConfigError when it lists none)."""
    names = [str(m.get("name")) for m in manifest.get("models", []) if m.get("name")]
    if not names:
        raise ConfigError("the manifest lists no models: is it a repository written by 'exporter build'?")
    return names


def wants_gpu(manifest: dict[str, Any]) -> bool:
    """True when the build targets a GPU (any model's target device is cuda/rocm)."""
    return any(str(m.get("target_device", "cpu")).startswith(("cuda", "rocm")) for m in manifest.get("models", []))


def write(out: Path, options: K8sOptions, models: list[str]) -> list[Path]:
    """Write the manifests, a kustomization listing them, KServe's alternative and the adapter rule to ``out``."""
    import yaml

    out.mkdir(parents=True, exist_ok=True)
    written = []
    resources = manifests(options, models)
    for name, resource in resources.items():
        path = out / name
        path.write_text(yaml.safe_dump(resource, sort_keys=False), encoding="utf-8")
        written.append(path)
    kustomization = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                     "namespace": options.namespace, "resources": list(resources)}
    extras = {"kustomization.yaml": yaml.safe_dump(kustomization, sort_keys=False),
              "kserve/inferenceservice.yaml": yaml.safe_dump(kserve_service(options), sort_keys=False),
              "prometheus-adapter-rule.yaml": ADAPTER_RULE}
    for name, text in extras.items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
