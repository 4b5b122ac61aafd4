"""``exporter deploy k8s``: manifests generated from a build's manifest.json, validated against the Kubernetes
schemas offline (kubernetes-validate, strict: unknown fields fail), and the properties each one exists for."""

from __future__ import annotations

import json
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from exporter.cli import main
from exporter.deploy import k8s
from exporter.errors import ConfigError

K8S_VERSION = "1.37.0"


def _manifest(tmp_path: Path, target: str = "cpu") -> Path:
    """A build directory whose manifest.json has the fields the generator reads (what ``exporter build`` writes)."""
    build = tmp_path / "model_repository"
    build.mkdir(parents=True)
    models = [{"name": "minilm-fp32", "precision": "fp32", "target_device": target, "dim": 384},
              {"name": "minilm-int8", "precision": "int8", "target_device": target, "dim": 384}]
    (build / "manifest.json").write_text(json.dumps({"format_version": 1, "models": models}), encoding="utf-8")
    return build


def _generate(tmp_path: Path, *extra: str, target: str = "cpu") -> dict[str, dict]:
    build = _manifest(tmp_path, target)
    out = tmp_path / "k8s"
    assert main(["deploy", "k8s", "--repository", "s3://bucket/emb/builds/b1", "--build", str(build),
                 "--out", str(out), *extra]) == 0
    return {p.relative_to(out).as_posix(): yaml.safe_load(p.read_text()) for p in out.rglob("*.yaml")}


def _kind(files: dict[str, dict], kind: str, name: str) -> dict:
    found = [d for d in files.values() if isinstance(d, dict) and d.get("kind") == kind
             and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def test_every_resource_validates_against_the_kubernetes_schema(tmp_path):
    files = _generate(tmp_path)
    kustomization = files.pop("kustomization.yaml")
    files.pop("prometheus-adapter-rule.yaml")
    kserve = files.pop("kserve/inferenceservice.yaml")
    assert sorted(kustomization["resources"]) == sorted(files)
    for resource in files.values():
        kubernetes_validate.validate(resource, K8S_VERSION, strict=True)  # raises on any schema violation
    assert kserve["kind"] == "InferenceService" and kserve["spec"]["predictor"]["model"]["storageUri"] == \
        "s3://bucket/emb/builds/b1"


def test_the_validation_catches_a_misspelt_field(tmp_path):
    """Guards the test above: strict validation must reject what a typo would produce."""
    deployment = _kind(_generate(tmp_path), "Deployment", "triton")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {"path": "/"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_triton_deployment_probes_repository_and_graceful_shutdown(tmp_path):
    files = _generate(tmp_path, "--request-timeout", "90", "--replicas", "3")
    deployment = _kind(files, "Deployment", "triton")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert "--model-repository=s3://bucket/emb/builds/b1" in container["args"]
    exit_timeout = int(next(a for a in container["args"] if a.startswith("--exit-timeout-secs=")).split("=")[1])
    drain = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert exit_timeout > 90, "Triton must let the longest request finish after SIGTERM"
    assert pod["terminationGracePeriodSeconds"] > drain + exit_timeout, "the kubelet must not kill it earlier"
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert "nvidia.com/gpu" not in json.dumps(container["resources"])
    assert deployment["spec"]["template"]["metadata"]["annotations"]["emb-provider/models"] == \
        "minilm-fp32,minilm-int8"


def test_gpu_build_gets_gpu_resources_by_default_and_cpu_flag_overrides(tmp_path):
    gpu_files = _generate(tmp_path / "a", target="cuda:9.0")
    gpu = _kind(gpu_files, "Deployment", "triton")
    assert gpu["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    cpu_files = _generate(tmp_path / "b", "--cpu", target="cuda:9.0")
    assert "nvidia.com/gpu" not in json.dumps(_kind(cpu_files, "Deployment", "triton"))
    # a GPU replica is full at a few ms of queue, a CPU one at tens (docs/scaling.md); the flag overrides both
    queue = {name: _kind(files, "HorizontalPodAutoscaler", "triton-hpa")["spec"]["metrics"][0]["pods"]["target"]
             for name, files in (("gpu", gpu_files), ("cpu", cpu_files),
                                 ("set", _generate(tmp_path / "c", "--queue-target-us", "20000")))}
    assert {k: v["averageValue"] for k, v in queue.items()} == {"gpu": "5000", "cpu": "50000", "set": "20000"}


def test_only_the_gateway_reaches_triton_and_hpa_scales_on_queue_time(tmp_path):
    files = _generate(tmp_path, "--max-replicas", "5")
    policy = _kind(files, "NetworkPolicy", "triton-ingress")
    assert policy["spec"]["podSelector"]["matchLabels"] == {k8s.LABEL: "triton"}
    inference = policy["spec"]["ingress"][0]
    assert inference["from"] == [{"podSelector": {"matchLabels": {k8s.LABEL: "gateway"}}}]
    assert {p["port"] for p in inference["ports"]} == {k8s.HTTP, k8s.GRPC}
    hpa = _kind(files, "HorizontalPodAutoscaler", "triton-hpa")
    assert hpa["spec"]["maxReplicas"] == 5 and hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == \
        k8s.QUEUE_METRIC
    rule = yaml.safe_load((tmp_path / "k8s" / "prometheus-adapter-rule.yaml").read_text())
    assert rule[0]["name"]["as"] == k8s.QUEUE_METRIC
    gateway = _kind(files, "Deployment", "gateway")["spec"]["template"]["spec"]["containers"][0]
    assert gateway["args"][:3] == ["python", "-m", "gateway"] and "triton:8000" in gateway["args"]


def test_no_gateway_leaves_out_gateway_and_policy(tmp_path):
    files = _generate(tmp_path, "--no-gateway")
    kinds = {(d["kind"], d["metadata"]["name"]) for d in files.values() if isinstance(d, dict) and "metadata" in d}
    assert ("Deployment", "gateway") not in kinds and ("NetworkPolicy", "triton-ingress") not in kinds


def test_pvc_repository_is_mounted_read_only(tmp_path):
    options = k8s.K8sOptions(repository="pvc://models/builds/b1")
    pod = k8s.triton_deployment(options, ["m"])["spec"]["template"]["spec"]
    mount = pod["containers"][0]["volumeMounts"][-1]
    assert mount == {"name": "model-repository", "mountPath": "/models", "readOnly": True, "subPath": "builds/b1"}
    assert pod["volumes"][-1]["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    kubernetes_validate.validate(k8s.triton_deployment(options, ["m"]), K8S_VERSION, strict=True)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("repository", "./model_repository", "expected an object-store URL"),
    ("repository", "http://bucket/x", "expected an object-store URL"),
    ("replicas", 0, "--replicas 0: expected an integer >= 1"),
    ("max_replicas", 1, "--max-replicas 1 is below --replicas 2"),
    ("namespace", "Emb_Provider", "--namespace 'Emb_Provider': expected a DNS label"),
])
def test_bad_options_are_named(field, value, message):
    kwargs = {"repository": "s3://b/p", field: value}
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        k8s.K8sOptions(**kwargs)


def test_missing_build_is_a_clear_cli_error(tmp_path, capsys):
    code = main(["deploy", "k8s", "--repository", "s3://b/p", "--build", str(tmp_path / "nope"),
                 "--out", str(tmp_path / "k8s")])
    assert code == 2 and "manifest.json is missing" in capsys.readouterr().err


def test_json_output_lists_the_files(tmp_path, capsys):
    build = _manifest(tmp_path)
    assert main(["deploy", "k8s", "--repository", "gs://b/p", "--build", str(build), "--out",
                 str(tmp_path / "k8s"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["models"] == ["minilm-fp32", "minilm-int8"] and len(out["files"]) == 11
