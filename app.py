"""Run the speech2image Flow on this machine: gateway → WhisperExecutor → StableDiffusionExecutor.

    python app.py --offline          # no network: whisper "embedded", diffusion "tiny"
    python app.py                    # the real models (downloaded once)

The pipeline is defined once, in flow.yml; this runs its gateway and each of its executors from
gateway/config.yml and executors/<name>/config.yml instead of container images. gRPC on
--port, HTTP (the OpenAI-compatible API) on --port + 1; everything on loopback unless --listen.
"""

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from speech2image.asr import options as asr_options  # options only: no model library
from speech2image.imaging import options as imaging_options
from speech2image.limits import ReplicaLimits
from speech2image.serving.network import (
    GRPC_SERVER_OPTIONS,
    LOOPBACK,
    METRICS_HOST,
    check_exposure,
    is_loopback,
    metrics_bind_from_environment,
)
from speech2image.serving.processes import start_flow_processes_from_a_forkserver

# every process of the Flow imports this file before Jina starts its metrics server there
# (multiprocessing runs the main module as __mp_main__ in each child): they bind the address app.py
# chose, not all interfaces
metrics_bind_from_environment()

ROOT = Path(__file__).resolve().parent
PROTOCOLS = ("grpc", "http")  # the gateway's, on --port and --port + 1
OFFLINE_MODELS = {"whisper": asr_options.OFFLINE_MODEL, "diffusion": imaging_options.OFFLINE_MODEL}


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def build_parser() -> argparse.ArgumentParser:
    """app.py's options (docs/configuration.md lists them from here)."""
    parser = argparse.ArgumentParser(description="Serve the speech2image Flow locally.")
    parser.add_argument("--offline", action="store_true",
                        help=f"use the models that need no network (whisper {OFFLINE_MODELS['whisper']}: tiny.en, "
                             f"diffusion {OFFLINE_MODELS['diffusion']}: random weights)")
    parser.add_argument("--port", type=int, default=54322,
                        help="the gateway's gRPC port; its HTTP port (the OpenAI-compatible API) is the next one")
    parser.add_argument("--listen", default=LOOPBACK, metavar="ADDRESS",
                        help="where the gateway listens (default 127.0.0.1: this machine only; 0.0.0.0: every "
                             "interface, which needs --api-keys). Executors and metrics stay on loopback")
    parser.add_argument("--api-keys", metavar="FILE",
                        help="require Authorization: Bearer KEY on every call but health checks; one key per line, "
                             "(16 characters or more) or sha256:HEX; lines starting with # are comments")
    parser.add_argument("--allow-unauthenticated", action="store_true",
                        help="let --listen expose the service without --api-keys, on purpose")
    parser.add_argument("--allowed-hosts", metavar="NAME,...", default="",
                        help="host names the HTTP port answers to besides localhost and IP addresses (a request for "
                             "any other is refused: DNS rebinding), e.g. the name clients reach it under")
    parser.add_argument("--public-url", metavar="URL",
                        help="the base of the URLs of images kept for response_format=url, e.g. "
                             "https://images.example.com (default: URLs relative to the server)")
    parser.add_argument("--tls-cert", metavar="FILE", help="serve gRPC and HTTP over TLS with this certificate chain")
    parser.add_argument("--tls-key", metavar="FILE", help="… and this private key")
    parser.add_argument("--max-queued-requests", type=int, metavar="N",
                        help=f"requests that may wait for each executor replica; one more is refused at once as busy "
                             f"(default {ReplicaLimits().max_queued_requests})")
    parser.add_argument("--grace-seconds", type=float, default=30.0,
                        help="on SIGTERM or Ctrl-C, how long requests in flight may finish (default 30)")
    parser.add_argument("--max-request-bytes", type=int,
                        help="the largest gRPC message accepted (HTTP bodies: also bounded by route, one audio "
                             "file or 1 MiB of fields); default max_documents x max_audio_bytes + 1 MiB of the "
                             "Whisper executor's limits")
    whisper, diffusion = asr_options.WhisperConfig(), imaging_options.DiffusionConfig()
    parser.add_argument("--whisper-model",
                        help=f"Whisper name, local path, 'embedded' or 'embedded-base' (default {whisper.model})")
    parser.add_argument("--whisper-backend", choices=asr_options.BACKENDS, help=f"default {whisper.backend}")
    parser.add_argument("--whisper-compute-type", help=f"e.g. int8, float16, float32 (default {whisper.compute_type})")
    parser.add_argument("--diffusion-model",
                        help=f"diffusers model id, local directory or 'tiny' (default {diffusion.model})")
    parser.add_argument("--diffusion-dtype", choices=imaging_options.DTYPES,
                        help=f"default {diffusion.dtype}: float16 on CUDA, bfloat16 on CPUs that have it natively, "
                             "else float32")
    parser.add_argument("--diffusion-vae", choices=imaging_options.VAES,
                        help=f"default {diffusion.vae}: the tiny VAE on a CPU, the model's own on a GPU")
    parser.add_argument("--diffusion-compile", action="store_true", help="torch.compile the UNet and VAE decoder")
    parser.add_argument("--diffusion-replicas", type=int, default=1,
                        help="replicas of the diffusion executor; with several GPUs each takes its own")
    parser.add_argument("--device", help=f"cpu, cuda or cuda:N for both executors (default {whisper.device}: CUDA with a GPU)")
    parser.add_argument("--no-monitoring", dest="monitoring", action="store_false",
                        help="do not serve Prometheus metrics (served by default)")
    parser.add_argument("--monitoring-port", type=int,
                        help="fixed metrics ports: the gateway's, then one more per executor replica (default: free ports)")
    parser.add_argument("--tracing", metavar="URL",
                        help="send OpenTelemetry traces to this OTLP gRPC collector, e.g. http://localhost:4317")
    parser.add_argument("--prometheus", nargs="?", type=int, const=9090, metavar="PORT",
                        help="also start a Prometheus on loopback (default port 9090) that scrapes the Flow "
                             "and serves the dashboard")
    parser.add_argument("--flow", type=Path, default=ROOT / "flow.yml", help=argparse.SUPPRESS)
    return parser


def quiet_start_up() -> None:
    """Silence the known noise of start-up, and Jina's telemetry, here and in the processes the
    Flow spawns."""
    from speech2image.quiet import quiet_jina

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # loading bars of diffusers, transformers
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # e.g. "requires torchvision" notices
    quiet_jina(spawned_processes=True)


def executor_specs(args: argparse.Namespace) -> list[dict]:
    """flow.yml's executors, each set up to run from its local config.yml with args applied."""
    import yaml

    specs = []
    for executor in yaml.safe_load(args.flow.read_text())["executors"]:
        name = executor["name"]
        uses_with = dict(executor.get("uses_with", {}))
        if args.device:
            uses_with["device"] = args.device
        model = getattr(args, f"{name}_model") or (OFFLINE_MODELS[name] if args.offline else None)
        if model:
            uses_with["model"] = model
        if args.max_queued_requests is not None:
            uses_with["max_queued_requests"] = args.max_queued_requests
        if name == "whisper":
            if args.whisper_backend:
                uses_with["backend"] = args.whisper_backend
            if args.whisper_compute_type:
                uses_with["compute_type"] = args.whisper_compute_type
        elif name == "diffusion":
            if args.offline:
                uses_with["local_files_only"] = True
            for option in ("dtype", "vae"):
                if getattr(args, f"diffusion_{option}"):
                    uses_with[option] = getattr(args, f"diffusion_{option}")
            if args.diffusion_compile:
                uses_with["compile"] = True
        specs.append(dict(
            name=name,
            uses=str(ROOT / "executors" / name / "config.yml"),
            host=LOOPBACK,  # only the gateway, on this machine, reaches the executors
            uses_with=uses_with,
            replicas=args.diffusion_replicas if name == "diffusion" else 1,
            timeout_ready=-1,  # model loading is never cut short
            timeout_ctrl=5,  # seconds (Pod.close reads it so) Jina waits for a replica to stop: a dead one never does
            grpc_server_options=GRPC_SERVER_OPTIONS,
            allow_concurrent=executor.get("allow_concurrent", True),  # requests queue in the executor's scheduler
            **observability(args),
        ))
        if args.monitoring and args.monitoring_port:
            first = args.monitoring_port + 1 + sum(spec["replicas"] for spec in specs[:-1])
            specs[-1]["port_monitoring"] = list(range(first, first + specs[-1]["replicas"]))
        if name == "diffusion" and args.diffusion_replicas > 1 and args.device in (None, "auto", "cuda"):
            # Jina gives replica k GPU k mod (GPUs nvidia-smi lists); without GPUs it does nothing
            specs[-1]["env"] = {"CUDA_VISIBLE_DEVICES": "RR"}
    return specs


def observability(args: argparse.Namespace) -> dict:
    """Jina's monitoring and tracing arguments, the same for the gateway and every executor."""
    settings = dict(monitoring=args.monitoring)
    if args.tracing:
        host, _, port = args.tracing.rpartition(":")
        if not host or not port.isdigit():
            raise SystemExit(f"invalid --tracing {args.tracing!r}: use http://HOST:PORT (an OTLP gRPC collector)")
        # Jina's exporter needs the scheme: http:// for a plaintext collector
        settings.update(tracing=True, traces_exporter_host=host if "://" in host else f"http://{host}",
                        traces_exporter_port=int(port))
    return settings


def metrics_urls(flow) -> dict[str, list[str]]:
    """Every metrics endpoint of a running Flow: the gateway's and each executor replica's."""
    from gateway.jina_internals import replica_monitoring_ports

    urls = {"gateway": [f"http://{LOOPBACK}:{flow.port_monitoring}/metrics"]}
    for name, deployment in flow:
        if name != "gateway":
            urls[name] = [f"http://{LOOPBACK}:{port}/metrics" for port in replica_monitoring_ports(deployment)]
    return urls


EXECUTOR_ARGUMENTS = {"whisper": asr_options.WhisperArguments, "diffusion": imaging_options.DiffusionArguments}


def executor_arguments(specs: list[dict]) -> dict:
    """Each executor's arguments (WhisperArguments, DiffusionArguments), built and checked as the
    executor builds them (ConfigurationError, one line, on a wrong type or an unknown name)."""
    from speech2image.options import configure

    return {spec["name"]: configure(spec["uses_with"], EXECUTOR_ARGUMENTS[spec["name"]])[0] for spec in specs}


def model_configs(specs: list[dict]) -> dict:
    """Each executor's model config (WhisperConfig, DiffusionConfig)."""
    return {name: arguments.model for name, arguments in executor_arguments(specs).items()}


def fetch_models(specs: list[dict]) -> None:
    """Download what is not cached yet, so a missing model stops start-up with one line."""
    from speech2image.asr import transcription
    from speech2image.imaging import diffusion

    configs = model_configs(specs)
    transcription.fetch_model(configs["whisper"])
    diffusion.fetch_model(configs["diffusion"])


def gateway_arguments(args: argparse.Namespace, specs: list[dict]) -> dict:
    """The gateway's own arguments: flow.yml's gateway `uses_with` (e.g. its connection limits),
    then its keys, the largest request (from the Whisper executor's limits), the most documents and
    the longest time a request may take (what every executor accepts) and the grace period."""
    import yaml

    from speech2image.limits import max_request_bytes

    built = executor_arguments(specs)
    whisper = built["whisper"]
    configured = (yaml.safe_load(args.flow.read_text()).get("gateway") or {}).get("uses_with") or {}
    return {**configured, "api_keys": str(Path(args.api_keys).resolve()) if args.api_keys else None,
            "max_request_bytes": args.max_request_bytes or max_request_bytes(whisper.audio, whisper.request),
            "max_audio_bytes": whisper.audio.max_audio_bytes,
            "max_documents": min(arguments.request.max_documents for arguments in built.values()),
            "request_timeout_seconds": max(arguments.request.request_timeout_seconds for arguments in built.values()),
            "grace_seconds": args.grace_seconds, **({"public_url": args.public_url} if args.public_url else {}),
            **({"allowed_hosts": [name.strip() for name in args.allowed_hosts.split(",") if name.strip()]}
               if args.allowed_hosts else {})}


def check_front_door(args: argparse.Namespace) -> None:
    """Refuse (ConfigurationError, one line) what would open the service wider than asked."""
    from speech2image.api.keys import ApiKeys
    from speech2image.errors import ConfigurationError

    check_exposure(args.listen, "--api-keys FILE (one key per line)", bool(args.api_keys), args.allow_unauthenticated,
                   "it")
    if args.api_keys:
        ApiKeys.load(args.api_keys)  # a file that holds no key stops here, not in the gateway
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ConfigurationError("TLS needs both --tls-cert FILE and --tls-key FILE")
    if args.public_url:
        from urllib.parse import urlsplit

        url = urlsplit(args.public_url)
        if url.scheme not in ("http", "https") or not url.hostname or url.query or url.fragment:
            raise ConfigurationError(f"--public-url {args.public_url!r}: give http(s)://HOST[:PORT][/PATH], the "
                                     "address clients reach this server's HTTP port at")


def build_flow(args: argparse.Namespace, specs: list[dict]):
    """The Flow of flow.yml's gateway settings (its `with:`) and `specs`: the gateway on args' ports
    and --listen address, the executors on loopback."""
    import yaml
    from jina import Flow

    from gateway.jina_internals import show_addresses
    from speech2image.serving.deadline import stop_seconds

    gateway = {k: v for k, v in yaml.safe_load(args.flow.read_text()).get("with", {}).items()
               if k not in ("protocol", "port", "monitoring", "port_monitoring")}  # app.py's flags decide
    if args.monitoring and args.monitoring_port:
        gateway["port_monitoring"] = args.monitoring_port
    tls = {"ssl_certfile": str(Path(args.tls_cert).resolve()), "ssl_keyfile": str(Path(args.tls_key).resolve())} \
        if args.tls_cert else {}  # the gateway's only: the executors, on loopback, speak plain gRPC to it
    flow = Flow(protocol=list(PROTOCOLS), port=[args.port, args.port + 1], host=args.listen, **gateway,
                timeout_ctrl=stop_seconds(args.grace_seconds),  # s: the gateway drains first (README: Admission)
                **observability(args))
    flow = flow.config_gateway(uses=str(ROOT / "gateway" / "config.yml"), uses_with=gateway_arguments(args, specs),
                               **tls)
    for spec in specs:
        flow = flow.add(**spec)
    show_addresses(flow, args.listen)  # not this machine's public address, looked up on the web
    return flow


def main(argv=None) -> int:
    args = parse_args(argv)
    start_flow_processes_from_a_forkserver()
    quiet_start_up()
    os.environ.setdefault("JINA_LOG_LEVEL", "WARNING")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")  # our own one-line errors say what failed
    if args.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ[METRICS_HOST] = LOOPBACK  # read by every process the Flow spawns (metrics_bind_from_environment)
    specs = executor_specs(args)
    from speech2image.errors import ConfigurationError, ModelLoadError

    try:
        check_front_door(args)
        executor_arguments(specs)  # every argument checked before anything starts
        fetch_models(specs)
    except ConfigurationError as e:
        print(f"speech2image: {e}", file=sys.stderr)
        return 2
    except ModelLoadError as e:
        print(f"speech2image: {e}; or start with --offline", file=sys.stderr)
        return 2
    from jina.excepts import RuntimeFailToStart

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop_now() if stop.is_set() else stop.set())
    flow = build_flow(args, specs)
    code = 0
    try:
        with flow:
            secure = "s" if args.tls_cert else ""
            shown = "localhost" if is_loopback(args.listen) else args.listen
            addresses = f"grpc{secure}://{shown}:{args.port}, http{secure}://{shown}:{args.port + 1}"
            configs = model_configs(specs)
            models = "; ".join(f"{s['name']}: {configs[s['name']].model}" + (f" x{s['replicas']}" if s["replicas"] > 1 else "")
                               for s in specs)
            print(f"speech2image ready on {addresses} ({models}); OpenAI base URL http{secure}://{shown}:"
                  f"{args.port + 1}/v1{'; API keys required' if args.api_keys else ''}", flush=True)
            urls = metrics_urls(flow) if args.monitoring else {}
            if urls:
                print(f"metrics: {' '.join(url for group in urls.values() for url in group)}", flush=True)
            with start_prometheus(args, urls):
                code = watch(flow, stop)
            print(f"speech2image stopping: requests in flight may finish for {args.grace_seconds:g} s "
                  "(a second Ctrl-C stops at once)", flush=True)
    except RuntimeFailToStart:
        print("speech2image: an executor failed to start; its error is in the log above", file=sys.stderr)
        return 1
    print("speech2image stopped", flush=True)
    return code


def watch(flow, stop: threading.Event) -> int:
    """Serve until `stop` is set (0), or until an executor has no replica left (3: a supervisor —
    systemd, Docker's restart policy, Kubernetes — starts the service again; Jina does not restart
    a lost replica). A replica lost beside others that serve is told once."""
    lost: set = set()
    while not stop.wait(1.0):
        for name, workers in executor_processes(flow).items():
            dead = [worker for worker in workers if not process_runs(worker.pid)]
            for worker in dead:
                if worker.pid not in lost:
                    lost.add(worker.pid)
                    print(f"speech2image: a {name} replica (pid {worker.pid}) died; {len(workers) - len(dead)} of "
                          f"{len(workers)} serve", file=sys.stderr, flush=True)
            if len(dead) == len(workers):
                print(f"speech2image: no {name} replica is left: stopping (exit 3) so that a supervisor starts the "
                      "service again", file=sys.stderr, flush=True)
                return 3
    return 0


def process_runs(pid: int) -> bool:
    """Whether a replica's process runs, asked of the system: Jina's worker learns of its process's
    end through the forkserver it was forked from, whose own end would read as all of theirs."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def executor_processes(flow) -> dict[str, list]:
    """Each executor's replica processes (Jina's pods' multiprocessing workers)."""
    from gateway.jina_internals import replica_processes

    return {name: replica_processes(deployment) for name, deployment in flow if name != "gateway"}


def stop_now() -> None:
    """A second Ctrl-C (or SIGTERM): every process of the Flow ends at once."""
    import psutil

    print("speech2image: stopping at once", file=sys.stderr, flush=True)
    for child in psutil.Process().children(recursive=True):
        child.kill()
    os._exit(130)


@contextlib.contextmanager
def start_prometheus(args: argparse.Namespace, urls: dict[str, list[str]]):
    """With --prometheus: a Prometheus on loopback scraping `urls`, for as long as the Flow runs."""
    if args.prometheus is None:
        yield
        return
    from speech2image.errors import PrometheusError
    from tools.prometheus import Prometheus

    if not urls:
        print("speech2image: --prometheus needs monitoring; drop --no-monitoring", file=sys.stderr)
        yield
        return
    try:
        prometheus = Prometheus(urls, args.prometheus)
    except PrometheusError as e:
        print(f"speech2image: {e}; the Flow serves on without it", file=sys.stderr)
        yield
        return
    print(f"dashboard: {prometheus.dashboard} (Prometheus {prometheus.url})", flush=True)
    with prometheus:
        yield


def cli() -> None:
    """The `speech2image-app` command."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())


if __name__ == "__main__":
    cli()
