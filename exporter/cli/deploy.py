"""``exporter deploy k8s``: Kubernetes manifests for a built repository, from its manifest.json."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..deploy import k8s
from ..triton.repository import read_manifest
from .build import DEFAULT_REPOSITORY
from .context import add_output_arguments, configure_logging


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", choices=("k8s",), help="what to generate (k8s: Deployment/Service/PDB/HPA, "
                        "gateway, NetworkPolicy, and a KServe InferenceService as the alternative)")
    parser.add_argument("--repository", required=True, metavar="URL",
                        help="where Triton reads the build: s3://, gs://, as:// or pvc://<claim>[/<subpath>]")
    parser.add_argument("--build", default=DEFAULT_REPOSITORY, metavar="DIR",
                        help=f"the local build whose manifest.json describes it (default ./{DEFAULT_REPOSITORY})")
    parser.add_argument("--out", default="deploy/k8s", metavar="DIR", help="output directory (default deploy/k8s)")
    device = parser.add_mutually_exclusive_group()
    device.add_argument("--gpu", dest="gpu", action="store_true", default=None,
                        help="request one GPU per Triton pod (default: when the build targets a GPU)")
    device.add_argument("--cpu", dest="gpu", action="store_false", help="CPU pods even for a GPU build")
    defaults = k8s.K8sOptions(repository="s3://x")
    parser.add_argument("--replicas", type=int, default=defaults.replicas, help="Triton replicas (HPA minimum)")
    parser.add_argument("--max-replicas", type=int, default=defaults.max_replicas, help="HPA maximum")
    parser.add_argument("--namespace", default=defaults.namespace)
    parser.add_argument("--triton-image", default=defaults.triton_image)
    parser.add_argument("--gateway-image", default=defaults.gateway_image)
    parser.add_argument("--no-gateway", dest="gateway", action="store_false",
                        help="Triton only (no gateway Deployment, no NetworkPolicy)")
    parser.add_argument("--credentials-secret", metavar="NAME",
                        help="Secret with the object store's credentials (AWS_*, GOOGLE_APPLICATION_CREDENTIALS, "
                        "AZURE_STORAGE_*), passed to Triton as environment variables")
    parser.add_argument("--request-timeout", type=int, default=defaults.request_timeout, metavar="S",
                        help="longest request in seconds; termination grace is derived from it")
    parser.add_argument("--queue-target-us", type=int, metavar="US",
                        help="the HPA adds Triton replicas when the average queue time per request passes this "
                        f"(default {k8s.GPU_QUEUE_TARGET_US} on GPU, {k8s.CPU_QUEUE_TARGET_US} on CPU; "
                        "docs/scaling.md)")
    add_output_arguments(parser)


def run(args: argparse.Namespace) -> int:
    configure_logging(args)
    manifest = read_manifest(Path(args.build))
    models = k8s.served_models(manifest)
    options = k8s.K8sOptions(
        repository=args.repository, gpu=k8s.wants_gpu(manifest) if args.gpu is None else args.gpu,
        replicas=args.replicas, max_replicas=args.max_replicas, namespace=args.namespace,
        triton_image=args.triton_image, gateway_image=args.gateway_image, gateway=args.gateway,
        credentials_secret=args.credentials_secret, request_timeout=args.request_timeout,
        queue_target_us=args.queue_target_us)
    written = k8s.write(Path(args.out), options, models)
    if args.json:
        print(json.dumps({"out": args.out, "files": [str(p) for p in written], "models": models,
                          "gpu": options.gpu, "replicas": options.replicas}))
        return 0
    print(f"wrote {len(written)} files to {args.out} for {', '.join(models)} "
          f"({'GPU' if options.gpu else 'CPU'}, {options.replicas}-{options.max_replicas} Triton replicas)")
    print(f"  apply:    kubectl create namespace {options.namespace}; kubectl apply -k {args.out}")
    if options.gateway:
        print(f"  keys:     kubectl -n {options.namespace} create secret generic {options.api_keys_secret} "
              "--from-literal=api-keys=KEY1,KEY2")
    print(f"  autoscale needs the metrics adapter rule in {args.out}/prometheus-adapter-rule.yaml")
    print(f"  KServe instead: kubectl apply -f {args.out}/kserve/inferenceservice.yaml")
    return 0
