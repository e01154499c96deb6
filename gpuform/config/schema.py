"""The configuration schema: one pydantic model per resource kind.

Every model forbids unknown fields and describes every field (``gpuform schema`` turns them into a JSON
Schema for editors). Defaults follow RunPod Serverless where a RunPod user would expect them: idle timeout
5 s, execution timeout 600 s, TTL 24 h, max workers 3, scaler ``queue_delay`` with value 4.
Pool models are contributed by providers (subclasses of :class:`PoolBase`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from pydantic import Field, field_validator, model_validator

from gpuform.config.types import Duration, Model, Name, Price, Secret, Size
from gpuform.workerspec import TEMPLATES

Scalar = str | int | float | bool
DEFAULT_PRICE_NOTE = "Unknown prices show as unknown in plans, never as $0."


class ResourceKind(StrEnum):
    """The kinds of resource a configuration declares; an address is ``KIND.NAME``."""

    POOL = "pool"
    VOLUME = "volume"
    POLICY = "policy"
    GATEWAY = "gateway"
    ENDPOINT = "endpoint"


class SSHHost(Model):
    """A machine reached over SSH."""

    address: str = Field(description="Host name or IP address the control plane and gateway connect to.")
    port: int = Field(22, ge=1, le=65535, description="SSH port.")
    user: str = Field("root", description="SSH user.")
    identity_file: str | None = Field(None, description="Private key file; omit to use the SSH agent.")
    name: Name | None = Field(None, description="Short name shown in plans and status; defaults to the address.")
    cordon: bool = Field(False, description="No new workers start here; running ones drain. Set before removing.")

    @property
    def label(self) -> str:
        return self.name or self.address


class PoolBase(Model):
    """Fields every pool has, whatever its provider."""

    provider: str = Field(description="Provider that drives the pool's hosts: local, docker or baremetal.")
    price_per_gpu_second: dict[str, Price] = Field(
        default_factory=dict,
        description="Price per GPU-second by GPU type (e.g. H100-80GB), and per worker-second for `cpu`. "
        + DEFAULT_PRICE_NOTE)
    max_workers: int | None = Field(None, ge=0, le=100_000,
                                    description="Cap on workers across all endpoints in this pool.")

    def host_labels(self) -> list[str]:
        """Names of the pool's hosts, as shown in plans."""
        return []


class ScheduleWindow(Model):
    """A recurring window during which an endpoint keeps at least ``min_workers`` warm."""

    cron: str = Field(description='Start of each window, a 5-field cron expression in the policy time zone, '
                                  'e.g. "0 8 * * 1-5".')
    duration: Duration = Field(description="How long each window lasts, e.g. 10h.")
    min_workers: int = Field(ge=0, le=10_000, description="Workers kept running during the window.")

    @field_validator("cron")
    @classmethod
    def _cron_parses(cls, value: str) -> str:
        from gpuform.util.cron import check_cron

        check_cron(value)
        return value


class Policy(Model):
    """Warm-worker schedules shared by endpoints."""

    schedule: list[ScheduleWindow] = Field(default_factory=list, description="Windows of extra warm workers.")
    timezone: str = Field("UTC", description="IANA time zone the cron expressions are read in.")

    @field_validator("timezone")
    @classmethod
    def _zone_exists(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f'unknown time zone "{value}"; use an IANA name such as Europe/Berlin') from exc
        return value


class Volume(Model):
    """Model weights on every host of a pool: staged from a source directory on this machine, or (without
    ``source``) a directory already there (NFS, a pre-pulled copy) that gpuform checks but never writes."""

    pool: Name = Field(description="Pool whose hosts hold the files.")
    path: str = Field(description="Absolute directory on each host where the files are kept.")
    source: str | None = Field(None, min_length=1,
                               description="Local directory to copy from, relative to the configuration directory; "
                                           "not the configuration directory itself, an ancestor of it, or its state "
                                           "directory. Without it, `path` must already exist on every host: gpuform "
                                           "checks it and never writes or deletes there.")
    manifest: str | None = Field(None, min_length=1,
                                 description="For a volume without `source`: a file of sha256 sums (what `sha256sum` "
                                             "prints, `HEX  RELPATH` per line; relative to the configuration "
                                             "directory) of files that must be under `path` on every host; refresh "
                                             "checks them (a file re-hashed only when its size or mtime changed).")
    parallel_hosts: int = Field(4, ge=1, le=64, description="Hosts staged at the same time.")
    host_to_host: bool = Field(True, description="A host that already holds a file sends it to the others over SSH "
                                                 "(with a key gpuform installs for the staging and removes after), "
                                                 "so each file leaves this machine once; SSH pools only.")
    prevent_destroy: bool = Field(False, description="Refuse any plan that would delete this volume.")
    depends_on: list[str] = Field(default_factory=list, description="Extra dependencies as KIND.NAME addresses; "
                                                                   "this resource is applied after them.")

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must be an absolute path on the host, e.g. /srv/models/qwen")
        return value.rstrip("/") or "/"


class GatewayTimings(Model):
    """Timeouts and intervals of the runtime; every one can be set down to seconds (tests do)."""

    lease_timeout: Duration = Field(12.0, description="A job whose worker sends no heartbeat for this long "
                                                      "is requeued (a lost host's jobs run again elsewhere "
                                                      "after this; keep it 3-4 heartbeats long).")
    ping_interval: Duration = Field(3.0, description="How often workers send a heartbeat (renewing the leases "
                                                     "of the jobs they hold).")
    reconcile_interval: Duration = Field(1.0, description="How often the autoscaler compares desired and "
                                                          "actual workers.")
    result_retention_run: Duration = Field(1800.0, description="How long /run results are kept (RunPod: 30 min).")
    result_retention_sync: Duration = Field(60.0, description="How long /runsync results are kept (RunPod: 1 min).")
    runsync_wait: Duration = Field(90.0, description="Default wait of /runsync before it answers a non-final "
                                                     "status (RunPod: 90 s).")
    take_timeout: Duration = Field(30.0, description="How long a worker's job-take long-poll waits for work.")
    max_job_attempts: int = Field(3, ge=1, le=100, description="Times a job is handed out before it fails because its "
                                                       "workers keep dying.")
    webhook_retries: int = Field(2, ge=0, le=20, description="Extra webhook deliveries after a failed one (RunPod: 2).")
    webhook_retry_delay: Duration = Field(10.0, description="Wait between webhook deliveries (RunPod: 10 s).")
    start_backoff: Duration = Field(10.0, description="First back-off after a worker fails to start; doubles "
                                                      "each time.")
    start_backoff_max: Duration = Field(300.0, description="Longest back-off between failed worker starts.")
    drain_timeout: Duration = Field(30.0, description="How long a stopping worker may finish its jobs.")
    shutdown_delay: Duration | None = Field(None, description="How long a stopping gateway replica keeps serving "
                                            "with /healthz answering 503 (draining) before it closes its port, so "
                                            "a load balancer's health checks take it out first and no request is "
                                            "sent to a closing port. Default: 3 s with replicas (HAProxy checking "
                                            "every 1 s, down after 2, as in examples/ha), 0 for one gateway.")
    request_history: Duration = Field(7 * 86400.0, gt=0, description="How long the request history keeps each "
                                      "finished request (arrival, delay, execution, status, worker, key; never "
                                      "its input or output), long after its result is deleted.")
    host_metrics_interval: Duration = Field(15.0, gt=0, description="How often the gateway reads its pools' hosts "
                                            "(GPUs used and free; nvidia-smi utilisation and memory) for /metrics.")


class ApiKey(Model):
    """A client key with its rights and limits (a plain string is a key with none of these set)."""

    key: Secret = Field(description="The key; use ${env.NAME} so it stays out of files. Kept only as a hash.")
    shared: bool = Field(False, description="Sees and acts on every job of its endpoints (RunPod's behaviour); "
                                            "otherwise a key sees only the jobs it submitted.")
    scope: Literal["client", "metrics"] = Field("client", description="metrics: reads /metrics of every "
                                                "endpoint and nothing else (for Prometheus).")
    rate_limit: float | None = Field(None, gt=0, le=1e6, description="Requests per second on client routes "
                                     "(429 with Retry-After above it; bursts of twice the rate pass).")
    max_open_jobs: int | None = Field(None, ge=1, le=10_000_000, description="Jobs of this key queued or running "
                                      "at once (429 above).")
    max_queued: int | None = Field(None, ge=1, le=10_000_000, description="Jobs of this key waiting in queues "
                                   "(429 above).")


class LogRotation(Model):
    """How the logs of the gateway and of the workers it starts are rotated: a file that passes ``max_size``
    becomes ``NAME.1`` (``NAME.1`` becomes ``NAME.2`` …) and only ``max_files`` rotated files are kept.
    Docker pools pass the same to the json-file log driver; systemd units log to the journal, which
    journald rotates."""

    max_size: Size = Field(50_000_000, ge=1024, description="Size at which a log file is rotated, e.g. 50MB.")
    max_files: int = Field(3, ge=1, le=100, description="Rotated files kept besides the current one.")


class WebhookPolicy(Model):
    """Where webhooks may be delivered. By default not to loopback, link-local, private or other reserved
    addresses (the gateway would become a proxy into its own network); the address a name resolves to is
    checked again at every delivery, and redirects are not followed."""

    allow_private: bool = Field(False, description="Allow private, loopback and link-local destinations.")
    allow: list[str] = Field(default_factory=list, description="Destinations allowed even when private: host "
                                                                "names, addresses or CIDRs.")


class GatewayLimits(Model):
    """What one client may send or hold at the gateway's edge; anything over a limit is refused with a 4xx
    and never slows other clients. Long polls, /runsync waits and streams are not request reads: unaffected."""

    max_header_bytes: Size = Field(65_536, ge=1024, description="Request line and headers, in bytes (431 above).")
    max_headers: int = Field(100, ge=8, le=10_000, description="Headers per request (431 above).")
    max_request_line: Size = Field(16_384, ge=256, description="Method, path and query, in bytes (414 above).")
    header_timeout: Duration = Field(10.0, gt=0, description="Time to send a request's headers, from the first "
                                                             "byte or from connecting (408 after).")
    body_timeout: Duration = Field(30.0, gt=0, description="Longest pause while sending a body (408 after).")
    max_connections: int = Field(10_000, ge=1, le=1_000_000, description="Open connections in total (503 above).")
    max_connections_per_peer: int = Field(1_000, ge=1, le=1_000_000, description="Open connections from one "
                                          "address (429 above); behind a load balancer see trusted_proxies.")
    max_admin_body: Size = Field(1_000_000, description="Largest body on admin routes.")
    max_other_body: Size = Field(65_536, description="Largest body on routes that take none (status, health, …).")
    json_depth: int = Field(64, ge=2, le=1000, description="Deepest JSON nesting accepted in a body (400 above).")


class GatewayStore(Model):
    """Where a gateway keeps what must survive it: its queue, workers, ledger and endpoints."""

    type: Literal["sqlite", "postgres"] = Field("sqlite", description="sqlite: one file in WAL mode on the "
                                                "gateway's host; postgres: a database (needed for replicas).")
    url: Secret | None = Field(None, description='postgres: the connection URL, e.g. "${env.GATEWAY_DB_URL}"; it '
                                                 "holds a password, so state and plans keep only its hash.")
    schema_name: str | None = Field(None, pattern=r"^[a-z_][a-z0-9_]{0,62}$", description="postgres: the schema "
                                    "holding the gateway's tables (default: gpuform_gateway_NAME); one per gateway "
                                    "and deployment sharing a database.")

    @model_validator(mode="after")
    def _fields_of_type(self) -> GatewayStore:
        if self.type == "postgres" and self.url is None:
            raise ValueError('a postgres store needs `url`, e.g. url: "${env.GATEWAY_DB_URL}"')
        if self.type == "sqlite" and (self.url is not None or self.schema_name is not None):
            raise ValueError("`url` and `schema_name` belong to a postgres store; remove them, or set type: postgres")
        return self


class GatewayTls(Model):
    """TLS on the gateway: it serves only HTTPS. Paths are files on the machine that runs gpuform (relative
    to the configuration directory); apply copies them to the gateway's host (the keys with mode 0600)."""

    cert_file: str = Field(min_length=1, description="PEM certificate (chain) the gateway presents; it must "
                           "name advertise_url's host.")
    key_file: str = Field(min_length=1, description="PEM private key of cert_file (unencrypted).")
    client_ca_file: str | None = Field(None, min_length=1, description="mTLS: PEM CA certificate(s); every "
                                       "client must present a certificate signed by one (refused at the handshake "
                                       "otherwise), gpuform's CLI and workers included (client_cert_file).")
    ca_file: str | None = Field(None, min_length=1, description="PEM CA certificate(s) gpuform's CLI and the "
                                "workers verify the gateway's certificate against (a private CA); default: the "
                                "system's trusted roots. Workers get it, with the public roots, as SSL_CERT_FILE.")
    client_cert_file: str | None = Field(None, min_length=1, description="mTLS: the certificate gpuform's CLI and "
                                         "its workers present (signed by a CA in client_ca_file).")
    client_key_file: str | None = Field(None, min_length=1, description="mTLS: the private key of client_cert_file.")

    @model_validator(mode="after")
    def _client_pairs(self) -> GatewayTls:
        if (self.client_cert_file is None) != (self.client_key_file is None):
            raise ValueError("client_cert_file and client_key_file go together: set both, or neither")
        if self.client_ca_file is not None and self.client_cert_file is None:
            raise ValueError("with client_ca_file (mTLS) the gateway refuses clients without a certificate, gpuform's "
                             "CLI and workers included: set client_cert_file and client_key_file to a certificate "
                             "signed by that CA")
        if self.client_ca_file is None and self.client_cert_file is not None:
            raise ValueError("client_cert_file is presented only to a gateway that asks for it: set client_ca_file "
                             "(mTLS), or remove client_cert_file and client_key_file")
        return self

    def files(self) -> dict[str, str]:
        """Each configured file by field name."""
        return {k: v for k, v in self.model_dump().items() if k.endswith("_file") and v is not None}


# Gateway fields a running gateway takes by re-reading its configuration (hot reload: no restart, no
# outage); a change to any other field restarts it (replace fields aside). Keys, timings, the pools it drives
# and where webhooks may go are read per request or per tick; the port, the store, the edge's limits, the
# admin key (the reload itself is authenticated with it) and the build of gpuform it runs are fixed at start.
GATEWAY_RELOADABLE: frozenset[str] = frozenset({"api_keys", "webhook_secret", "timings", "pools", "webhooks"})


class Gateway(Model):
    """The gateway: endpoint URLs, the durable queue, the autoscaler and the metering ledger."""

    pool: Name = Field(description="Pool whose (first) host runs the gateway.")
    listen: str = Field("127.0.0.1:8080", description="host:port the gateway binds.")
    advertise_url: str | None = Field(None, description="URL workers and clients use to reach the gateway; "
                                                        "defaults to http://LISTEN (127.0.0.1 only works for "
                                                        "the local pool).")
    api_keys: dict[Name, Secret | ApiKey] = Field(default_factory=dict, description="Client API keys by name: "
                                                  "the key, or {key, shared, scope, rate_limit, …}. Use "
                                      "${env.NAME} so keys stay out of files; stored only as salted hashes.")
    admin_key: Secret | None = Field(None, description="Key for the CLI's admin calls; when omitted, generated "
                                                    "once and kept with the state (a 0600 file beside a local "
                                                    "state; sealed with GPUFORM_SECRETS_KEY in postgres).")
    webhook_secret: Secret | None = Field(None, description="Key for the HMAC-SHA256 signature of webhook deliveries "
                                                         "(header X-Gpuform-Signature); use ${env.NAME}.")
    store: GatewayStore = Field(default_factory=GatewayStore, description="Where the gateway keeps "
                                "jobs, workers, the ledger and endpoints: {type: sqlite} (default) or {type: "
                                "postgres, url: ...}.")
    replicas: int = Field(1, ge=1, le=64, description="Gateway processes serving clients and workers; more than "
                                                      "one needs a postgres store. Replica i runs on the pool's "
                                                      "i-th host (a local pool: on port + i).")
    queue: Literal["sqlite"] | None = Field(None, exclude=True, json_schema_extra={"deprecated": True},
                                            description="Deprecated: write `store: {type: sqlite}`. Still read, "
                                                        "with a warning; never recorded.")
    data_dir: str | None = Field(None, description="Directory on the gateway host for the queue and logs; "
                                                   "defaults to the provider's data directory.")
    max_payload_run: Size = Field(10_000_000, description="Largest /run body (RunPod: 10 MB).")
    max_payload_runsync: Size = Field(20_000_000, description="Largest /runsync body (RunPod: 20 MB).")
    timings: GatewayTimings = Field(default_factory=GatewayTimings, description="Runtime timeouts and intervals.")
    limits: GatewayLimits = Field(default_factory=GatewayLimits, description="Limits at the edge (sizes, "
                                                                            "timeouts, connections).")
    webhooks: WebhookPolicy = Field(default_factory=WebhookPolicy, description="Where webhooks may go.")
    tls: GatewayTls | None = Field(None, description="Serve HTTPS: {cert_file, key_file}, optionally client_ca_file "
                                   "(mTLS), ca_file (a private CA clients verify against) and client_cert_file/"
                                   "client_key_file (what gpuform's CLI and workers present under mTLS).")
    trusted_proxies: list[str] = Field(default_factory=list, description="Addresses or CIDRs of load balancers "
                                       "in front of the gateway: their X-Forwarded-For (or PROXY protocol) names "
                                       "the client.")
    proxy_protocol: bool = Field(False, description="Trusted proxies open each connection with a PROXY protocol "
                                                    "v1 line (HAProxy's send-proxy).")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Gateway log level.")
    log_format: Literal["text", "json"] = Field("text", description="text, or json: one JSON object per line "
                                                "(time, level, logger, message, and job_id/endpoint/worker_id on "
                                                "lines about a job or worker).")
    logs: LogRotation = Field(default_factory=LogRotation, description="Rotation by size of the gateway's log and "
                                                                       "of its workers' logs.")
    depends_on: list[str] = Field(default_factory=list, description="Extra dependencies as KIND.NAME addresses; "
                                                                   "this resource is applied after them.")

    @field_validator("api_keys", mode="before")
    @classmethod
    def _list_to_names(cls, value: Any) -> Any:
        if isinstance(value, list):
            return {f"key{i + 1}": key for i, key in enumerate(value)}
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        import ipaddress

        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError as exc:
                raise ValueError(f'"{item}" is not an address or CIDR, e.g. 10.0.0.5 or 10.0.0.0/24') from exc
        return value

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f'"{value}" is not host:port, e.g. 0.0.0.0:8080')
        return value

    @model_validator(mode="after")
    def _tls_fits(self) -> Gateway:
        if self.tls is None:
            return self
        if self.advertise_url and not self.advertise_url.startswith("https://"):
            raise ValueError(f'with tls the gateway speaks only HTTPS: advertise_url "{self.advertise_url}" must '
                             "start with https://")
        if self.proxy_protocol:
            raise ValueError("proxy_protocol cannot be combined with tls: the PROXY line would come before the TLS "
                             "handshake; terminate TLS at the proxy, or trust its X-Forwarded-For instead")
        return self

    def resolved_advertise_url(self) -> str:
        if self.advertise_url:
            return self.advertise_url.rstrip("/")
        host, _, port = self.listen.rpartition(":")
        if host in ("0.0.0.0", "::", "[::]"):
            host = "127.0.0.1"
        return f"{'https' if self.tls else 'http'}://{host}:{port}"


class WorkerSpec(Model):
    """What runs in each worker and how."""

    template: Literal["custom", "echo", "vllm", "embeddings", "pytorch"] = Field(
        "custom", description="custom: your command or image; echo: a built-in handler that returns its input; "
                              "vllm: the official vLLM OpenAI server with the model from a volume; embeddings: "
                              "text embeddings (OpenAI /v1/embeddings) with a transformers model from a volume; "
                              "pytorch: a TorchScript or torch.export model from a volume. `gpuform templates` "
                              "lists them with what each needs.")
    image: str | None = Field(None, description="Container image (docker pools).")
    command: list[str] | None = Field(None, description="argv of the worker process, e.g. "
                                                        "[python, handler.py]; relative paths are resolved from "
                                                        "the configuration directory on local pools.")
    python: str | None = Field(None, description="Python interpreter (or virtualenv directory) that runs the "
                                                 "worker on local and baremetal pools.")
    workdir: str | None = Field(None, description="Working directory of the worker process.")
    env: dict[str, Scalar] = Field(default_factory=dict, description="Environment passed to every worker.")
    concurrency: int | None = Field(None, ge=1, le=1024, description="Jobs one worker holds at once; the gateway "
                                    "enforces it (a take beyond it waits for a free slot). Unset: the worker "
                                    "decides (gpuform SDK: start(concurrency=...), else 1; runpod SDK: "
                                    "concurrency_modifier; vllm: MAX_CONCURRENCY).")
    runpod_system_checks: bool = Field(False, description="Let the runpod SDK run its start-up fitness checks "
                                                         "(they probe the internet); off by default.")
    ready_timeout: Duration = Field(600.0, description="A worker not ready this long after start is unhealthy.")
    keep_stopped: bool = Field(True, description="Keep a stopped worker's container for a fast restart "
                                                 "(docker pools).")
    sleep_mode: bool = Field(False, description="vLLM on GPUs: put idle workers to sleep instead of stopping "
                                                "them (unverified on a GPU; see README).")
    sleep_timeout: Duration = Field(3600.0, description="A sleeping worker is stopped after this long asleep.")
    requirements: list[str] = Field(default_factory=list, description="pip requirements of the handler (e.g. "
                                    "runpod==1.12.0), installed from uploaded wheels on baremetal pools.")


class ModelSpec(Model):
    """The model a worker serves."""

    name: str = Field(description="Model name clients send (OpenAI `model`) and /v1/models lists.")
    volume: Name | None = Field(None, description="Volume holding the weights; mounted read-only.")
    path: str = Field("", description="Directory of the model inside the volume; the volume root by default.")


class GpuSpec(Model):
    """GPU types in priority order and GPUs per worker."""

    types: list[str] = Field(default_factory=lambda: ["cpu"], min_length=1,
                             description="GPU types in priority order, spelled as derived from nvidia-smi "
                                         "(H100-80GB, A100-80GB); `cpu` for CPU workers.")
    count: int = Field(1, ge=1, le=16, description="GPUs per worker (CPU workers: ignored for placement, "
                                                   "multiplies the cpu price).")

    @field_validator("types")
    @classmethod
    def _no_duplicates(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("GPU types must not repeat")
        return value


class LearnedKeepAlive(Model):
    """The learned keep-alive window (Shahrad et al., USENIX ATC'20, hybrid histogram policy): a histogram of
    the endpoint's idle gaps (end of its last job to the next arrival)."""

    bin: Duration = Field(60.0, gt=0, description="Width of a histogram bin (the paper: 1 minute).")
    history: Duration = Field(14400.0, gt=0, description="Gaps older than this are forgotten (at most 1024 are "
                                                          "kept); default 4 h.")
    low_percentile: float = Field(5.0, ge=0, le=100, description="Pre-warm: a worker is started so that it is "
                                                                 "ready at this percentile of the gaps.")
    high_percentile: float = Field(99.0, gt=0, le=100, description="Keep-alive: one worker stays until this "
                                                                   "percentile of the gaps (plus margin).")
    margin: float = Field(0.1, ge=0, le=10, description="Added to the keep-alive, as a fraction of it.")
    min_samples: int = Field(10, ge=1, le=1000, description="Below this many gaps, the fixed idle_timeout "
                                                            "alone decides.")

    @model_validator(mode="after")
    def _low_le_high(self) -> LearnedKeepAlive:
        if self.low_percentile > self.high_percentile:
            raise ValueError(f"low_percentile ({self.low_percentile:g}) is above high_percentile "
                             f"({self.high_percentile:g}); lower low_percentile or raise high_percentile")
        return self


class ForecastSettings(Model):
    """The rate_forecast scaler's view of the load (jobs queued or running, averaged per window)."""

    window: Duration = Field(10.0, gt=0, description="Width of a load window.")
    windows: int = Field(6, ge=2, le=1000, description="Complete windows the trend is fitted through.")


class Scaling(Model):
    """How many workers run, and what makes more of them start."""

    min_workers: int = Field(0, ge=0, le=10_000, description="Workers always running (billed while idle). RunPod: "
                                                             "active workers, default 0.")
    max_workers: int = Field(3, ge=0, le=10_000, description="Most workers at once (RunPod default 3).")
    idle_timeout: Duration = Field(5.0, description="A worker stops after this long without a job (RunPod: 5 s).")
    scaler: Literal["queue_delay", "request_count", "rate_forecast"] = Field(
        "queue_delay", description="queue_delay: add a worker when the oldest job waited longer than "
                                   "scaler_value seconds; request_count: ceil((queued+running)/scaler_value); "
                                   "rate_forecast: like request_count on the load forecast one cold_start ahead "
                                   "(the trend of the last forecast.windows).")
    scaler_value: float = Field(4.0, gt=0, le=1e6, description="Seconds (queue_delay) or jobs per worker "
                                                       "(request_count, rate_forecast); RunPod default 4.")
    keep_alive: Literal["fixed", "learned"] = Field(
        "fixed", description="fixed: idle_timeout alone; learned: also keep one worker after the endpoint goes "
                             "idle until the high percentile of its past idle gaps, or start one ahead of the "
                             "low percentile (settings in learned).")
    learned: LearnedKeepAlive = Field(default_factory=LearnedKeepAlive,
                                      description="Settings of keep_alive: learned.")
    forecast: ForecastSettings = Field(default_factory=ForecastSettings,
                                       description="Settings of scaler: rate_forecast.")
    cold_start: Duration = Field(30.0, description="Expected time from a worker's start to its first job: "
                                                   "learned pre-warms start this early, rate_forecast looks this "
                                                   "far ahead.")

    @model_validator(mode="after")
    def _min_le_max(self) -> Scaling:
        if self.min_workers > self.max_workers:
            raise ValueError(f"min_workers ({self.min_workers}) is greater than max_workers "
                             f"({self.max_workers}); raise max_workers or lower min_workers")
        return self


class Endpoint(Model):
    """A serverless endpoint: a queue, its workers and its URL."""

    pool: Name = Field(description="Pool whose hosts run the workers.")
    gateway: Name | None = Field(None, description="Gateway serving the endpoint; the only one by default.")
    worker: WorkerSpec = Field(default_factory=WorkerSpec, description="What each worker runs.")
    model: ModelSpec | None = Field(None, description="Model served (required for the vllm template).")
    gpu: GpuSpec = Field(default_factory=GpuSpec, description="GPU types and GPUs per worker.")
    scaling: Scaling = Field(default_factory=Scaling, description="Worker counts and the scaler.")
    execution_timeout: Duration = Field(600.0, description="A job running longer fails and its worker is "
                                                           "stopped (RunPod: 600 s).")
    ttl: Duration = Field(86400.0, description="A job's whole lifespan from submission (RunPod: 24 h).")
    policy: Name | None = Field(None, description="Warm-worker policy applied to this endpoint.")
    api_keys: list[Name] | None = Field(None, description="Names of gateway keys allowed here; all by default.")
    max_queue: int | None = Field(None, ge=1, le=10_000_000,
                                  description="Queued jobs above this get 429 with Retry-After.")
    spend_limit_per_day: float | None = Field(None, ge=0, le=1e9, description="UTC-day spending cap in the pool's "
                                                                      "currency; above it no scale-up beyond "
                                                                      "min_workers.")
    prevent_destroy: bool = Field(False, description="Refuse any plan that would delete this endpoint.")
    depends_on: list[str] = Field(default_factory=list, description="Extra dependencies as KIND.NAME addresses; "
                                                                   "this resource is applied after them.")

    @model_validator(mode="after")
    def _template_needs(self) -> Endpoint:
        template = TEMPLATES[self.worker.template]
        if template.needs_model and self.model is None:
            raise ValueError(f"the {template.name} template needs `model: {{name: ..., volume: ...}}`")
        if template.needs_volume and (self.model is None or self.model.volume is None):
            raise ValueError(f"the {template.name} template loads its model from a volume: set `model: {{name: ..., "
                             "volume: ...}`")
        if self.execution_timeout < 1 or self.ttl < 1:
            raise ValueError("execution_timeout and ttl must be at least 1s")
        return self


class Backend(Model):
    """Where gpuform keeps its state: a directory beside the configuration (``local``), or a PostgreSQL database
    a team shares (``postgres``). Every backend holds one state per workspace."""

    type: Literal["local", "postgres"] = Field("local", description="local: a state file in a directory "
                                               "(locked with flock); postgres: rows in a database (locked with "
                                               "an advisory lock), for teams and CI.")
    path: str | None = Field(None, description="local: directory of the state, relative to the configuration "
                                               "directory (default: state). `--state-dir` overrides it.")
    url: str | None = Field(None, description='postgres: the connection URL; use "${env.GPUFORM_BACKEND_URL}" '
                                              "(GPUFORM_BACKEND_URL and -backend-config url=… also set it).")
    schema_name: str | None = Field(None, pattern=r"^[a-z_][a-z0-9_]{0,62}$", description="postgres: the schema "
                                    "holding gpuform's tables (default: gpuform); one per project sharing a "
                                    "database.")
    history: int = Field(20, ge=1, le=10_000, description="postgres: serials kept per workspace "
                                                          "(`gpuform state list --history`).")


class Settings(Model):
    """Settings of gpuform itself (Terraform's ``terraform {}`` block)."""

    required_version: str | None = Field(None, description='Versions of gpuform this configuration works with, as '
                                         'a PEP 440 specifier such as ">=0.2, <1"; any other refuses to run.')

    @field_validator("required_version")
    @classmethod
    def _specifier(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                SpecifierSet(value)
            except InvalidSpecifier:
                raise ValueError(f'"{value}" is not a version constraint; write it like ">=0.2, <1"') from None
        return value


SECTIONS: dict[str, str] = {
    "gpuform": "Settings of gpuform itself (required_version).",
    "backend": "Where state lives (default: {type: local}).",
    "variables": "Values for ${var.NAME}; override with --var NAME=VALUE or GPUFORM_VAR_NAME.",
    "pools": "GPU hosts by name.",
    "volumes": "Model weights staged onto pool hosts.",
    "policies": "Warm-worker schedules.",
    "gateway": "The gateway (one per configuration directory is usual).",
    "endpoints": "Serverless endpoints.",
    "import": "Existing objects to bring under management at the next apply, as ADDRESS: ID (Terraform's import "
              "blocks); the ID of a gpuform object is its name.",
}
KIND_OF_SECTION: dict[str, ResourceKind] = {
    "pools": ResourceKind.POOL, "volumes": ResourceKind.VOLUME, "policies": ResourceKind.POLICY,
    "gateway": ResourceKind.GATEWAY, "endpoints": ResourceKind.ENDPOINT}
MODEL_OF_KIND: dict[str, type[Model]] = {ResourceKind.VOLUME: Volume, ResourceKind.POLICY: Policy,
                                         ResourceKind.GATEWAY: Gateway, ResourceKind.ENDPOINT: Endpoint}
