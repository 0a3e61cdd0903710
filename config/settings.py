"""The settings object: a YAML config file with ``JUICER_*`` environment overrides.

Precedence, highest first: keyword arguments to :func:`load_settings`, environment variables
(``JUICER_DATA_DIR``, nested fields with a double underscore: ``JUICER_LABEL_STUDIO__URL``), the config file
(``JUICER_CONFIG`` or the ``path`` argument), then the defaults below. pydantic-settings reads and merges them
with its own sources (``EnvSettingsSource``, ``YamlConfigSettingsSource``), chosen in
:meth:`Settings.settings_customise_sources`.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    YamlConfigSettingsSource,
)


class ConfigError(Exception):
    """A setting is missing or invalid; the message names it and says what is expected."""


def files_dir(data_dir: str | Path) -> Path:
    """``<data_dir>/files``: the folder Label Studio serves (its document root). It holds ``images/`` only; secrets,
    the store, models, embeddings and Label Studio's own data live beside it, out of Label Studio's reach."""
    return Path(data_dir) / "files"


def check_class_names(names: Sequence[Any]) -> list[str]:
    """The class names, stripped, once they are at least two, none empty, none repeated, none holding a control
    character (else ``ValueError``)."""
    cleaned = [str(name).strip() for name in names]
    if len(cleaned) < 2:
        raise ValueError("needs at least two class names")
    if any(not name for name in cleaned):
        raise ValueError("class names must not be empty")
    if any(not character.isprintable() for name in cleaned for character in name):
        raise ValueError("class names must not hold control characters (a labelling config cannot carry them)")
    duplicates = sorted({name for name in cleaned if cleaned.count(name) > 1})
    if duplicates:
        raise ValueError(f"class names must be unique; repeated: {', '.join(duplicates)}")
    return cleaned


class HoldoutSettings(BaseModel):
    """The holdout juicer reserves from the pool when none was given, labelled blind (``service.holdout:``).

    The default size is 20 labels per class, at most 500: the 95% Wilson interval of an accuracy near 0.8 is
    about +-14 points at 30 labels, +-5.5 at 200 and +-3.5 at 500, so 20 per class measures a 10-class model to
    about +-5 points and the cap stops paying for precision a retrain cannot use.
    """

    model_config = ConfigDict(extra="forbid")

    reserve: bool = Field(
        True, description="Reserve a holdout from the unlabelled pool when the labelled holdout given is smaller "
        "than min_labels (the demo's and an imported one count)"
    )
    size: int | None = Field(
        None, ge=1, le=100_000, description="Items reserved; unset: 20 per class, at most 500 (the 95% Wilson "
        "interval of an accuracy near 0.8 is +-5.5 points at 200 labels, +-3.5 at 500)"
    )
    max_pool_share: float = Field(
        0.2, gt=0, le=0.5, description="Never reserve more than this share of the pool (a small pool keeps most "
        "of its items for training); the reservation tops up as the pool grows"
    )
    seed: int = Field(0, description="Seed of the reservation's uniform draw (recorded in the store with the ids)")
    min_labels: int = Field(
        30, ge=1, description="Holdout labels below which the report says 'holdout too small to measure' (the 95% "
        "interval is about +-14 points at 30) and holdout tasks get priority over a small share"
    )
    share: float = Field(
        0.1, ge=0, le=0.5, description="Once min_labels are in, holdout tasks queued per refresh as a share of "
        "review_batch_size (0.1: about 1 task in 10), so the holdout keeps growing with the pool"
    )

    def target_size(self, n_classes: int) -> int:
        """Items to reserve at most: ``size``, or 20 per class capped at 500."""
        return self.size if self.size is not None else min(20 * n_classes, 500)


class ServiceSettings(BaseModel):
    """The HTTP service, its decision rule, review routing, retraining and upload limits (``service:``)."""

    model_config = ConfigDict(extra="forbid")

    classes: list[str] | None = Field(
        None, description="Class names, in order; unset: taken from the demo dataset or the store's first run"
    )
    decision_rule: Literal["argmax", "threshold", "margin", "entropy", "precision"] = Field(
        "threshold", description="How a prediction is decided accept or review (learner.rules); precision: a "
        "threshold chosen per model version on the holdout to keep target_precision"
    )
    decision_threshold: float = Field(
        0.8, gt=0, description="threshold: max probability >= it; margin: top-1 minus top-2 >= it; entropy: <= it (nats)"
    )
    target_precision: float = Field(
        0.95, gt=0, lt=1, description="precision rule: accuracy promised for auto-accepted predictions"
    )
    risk_confidence: float = Field(
        0.9, gt=0, lt=1, description="precision rule: confidence with which the holdout supports that promise"
    )
    temperature_scaling: bool = Field(
        False, description="precision rule: fit one temperature on the holdout before choosing the threshold"
    )
    forecast_targets: list[float] = Field(
        default_factory=lambda: [0.8, 0.9, 0.95], description="Accuracies GET /v1/forecast says the labels needed for"
    )
    forecast_max_multiple: float = Field(
        4.0, ge=1, le=100, description="The forecast answers up to this multiple of the largest labelled n"
    )
    forecast_backtest_tolerance: float = Field(
        0.03, gt=0, lt=1, description="The forecast refuses when its backtest misses the newest points by more"
    )
    gallery_size: int = Field(48, ge=1, le=1000, description="Holdout images shown by GET /gallery (a fixed sample)")
    report_thresholds: list[float] = Field(
        default_factory=lambda: [0.5, 0.8], description="Thresholds for coverage / selective accuracy in reports"
    )
    review_batch_size: int = Field(20, ge=1, le=10_000, description="Pool items sent to annotators per refresh")
    holdout: HoldoutSettings = Field(default_factory=HoldoutSettings, description="The holdout juicer reserves and annotators label blind")
    # A plain name here: config does not import learner, so the name is checked against learner.query's
    # registry where the settings meet the learner (app.core.training.query_strategy, at start-up).
    query_strategy: str = Field(
        "auto",
        description="How pool items are chosen for annotators: a name in learner.query.STRATEGIES (auto: typical "
        "picks while labels are few, then margin among distinct clusters)",
    )
    label_checks: bool = Field(
        True, description="After each retrain, check the labels (cleanlab on out-of-fold probabilities; CROWDLAB where "
        "an item has several answers) in the check-labels job: suspects listed, consensus labels train",
    )
    second_look_share: float = Field(
        0.2, ge=0.0, le=1.0, description="Suspected label errors sent back to annotators blind after each check, as a "
        "share of review_batch_size (0 sends none); suspected holdout labels are asked again first, within the same share",
    )
    second_looks_from_per_class: float = Field(
        10.0, ge=0.0, le=100_000, description="Second looks at suspected training labels start once the serving "
        "version trained on this many labels per class (0: from the first check); before, the whole batch goes to new "
        "items and the holdout (chosen on tuning seeds: benchmarks/label_noise.py, learner.budget)",
    )
    max_looks_per_item: int = Field(
        2, ge=1, le=10, description="Second looks one item may get: a suspect gets one; while its answers tie (one "
        "against one), another annotator is asked again, up to this many",
    )
    retrain_after_labels: int = Field(10, ge=1, description="Retrain once this many new labels arrived")
    warm_start_max_iter: int = Field(
        100, ge=1, le=100_000, description="Training steps of a warm-started retrain (the first fit uses the head's own)"
    )
    retrain_interval_s: float = Field(0, ge=0, description="Also retrain on this schedule when labels changed (0: off)")
    api_token: SecretStr | None = Field(
        None,
        description="Bearer token required for /v1/* (unset: generated on first start into <data_dir>/secrets/api-token; "
        "'none': no token at all, warned at every start)",
    )
    public_paths: list[str] = Field(
        default_factory=lambda: ["/healthz", "/readyz", "/openapi.json"],
        description="Paths outside /v1 served without the token: only what carries no user data (the report, gallery "
        "and /metrics need it; a browser asks for it, any user name, the token as password; add /metrics to expose it alone)",
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Browser origins (scheme://host[:port]) allowed to write; other cross-site writes get 403",
    )
    allowed_hosts: list[str] | None = Field(
        None,
        description="Host header values (names, no port) the service answers; others get 400, so a DNS-rebinding page "
        "cannot read it. None: the bind address, public_url's host, and localhost/127.0.0.1/::1 when bound to loopback "
        "or all interfaces; '*' accepts any",
    )
    max_request_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="Largest request body accepted")
    max_json_depth: int = Field(32, ge=2, le=1000, description="Deepest nesting of a JSON body (checked before parsing)")
    # Label Studio's largest recorded webhook body is about 2 KB (tests/unit/annotation/payloads); a bulk deletion
    # carries ~15 bytes per annotation id, so 256 KiB holds one of some 15,000 annotations.
    webhook_max_bytes: int = Field(
        256 * 1024, ge=4096, description="Largest webhook body (/v1/webhooks/label-studio, /label-studio-ml/webhook): 413 above"
    )
    max_pending_events: int = Field(
        10_000, ge=1, description="Webhook events waiting for the label job at most; more get 503 (the label pull catches up)"
    )
    keep_events_days: float = Field(7, gt=0, description="Processed webhook events (used, failed, dropped) are deleted after this")
    webhook_rate_per_s: float = Field(
        20, gt=0, description="Webhook events per second one remote address may send without the API token (429 above)"
    )
    webhook_burst: int = Field(200, ge=1, description="Webhook events one remote address may send at once before the rate applies")
    max_images_per_request: int = Field(64, ge=1, le=10_000, description="Most images in one request")
    max_request_pixels: int = Field(
        100_000_000, ge=1, description="Most pixels of all images in one request together (read from their headers)"
    )
    bulk_max_bytes: int = Field(
        1024**3, ge=1024, description="Largest tar body of POST /v1/items/bulk (streamed, never held; each image within "
        "max_request_bytes; the whole body must still arrive within request_deadline_s)",
    )
    embedding_memo_size: int = Field(
        20_000, ge=0, description="Embeddings held in memory (LRU; ~5 KB each at 1280 floats); the disk cache has all"
    )
    keep_served_days: float | None = Field(
        30, gt=0, description="Served images (never labelled, not queued) and their predictions are deleted after this (None: kept)"
    )
    workers: int = Field(1, ge=1, le=64, description="gunicorn worker processes (each loads the backbone; one runs the scheduler)")
    threads: int = Field(8, ge=1, le=256, description="Request threads per worker")
    max_connections: int = Field(64, ge=1, le=10_000, description="Open connections per worker at most (more wait in the backlog)")
    read_timeout_s: float = Field(30, gt=0, le=600, description="A client read or write waiting longer fails (slow clients)")
    request_deadline_s: float = Field(
        120, gt=0, le=3600, description="A request (line, headers, body) must arrive whole within this (trickling clients)"
    )
    worker_timeout_s: float = Field(120, gt=0, description="A worker silent this long is killed and replaced")
    host: str = Field("127.0.0.1", description="Address the service binds to")
    port: int = Field(8000, ge=1, le=65535, description="Port the service binds to")
    public_url: str | None = Field(
        None, description="URL Label Studio uses to reach the service's webhook (default http://host:port)"
    )
    pull_interval_s: float = Field(60, gt=0, description="Pull labels from Label Studio this often (webhook safety net)")
    deliver_interval_s: float = Field(5, gt=0, description="Deliver queued review tasks this often")
    connect_interval_s: float = Field(5, gt=0, description="Try to reach Label Studio this often while it was away at start")
    webhook_interval_s: float = Field(
        5, gt=0, description="Turn recorded webhook events into labels this often (a webhook also wakes the job at once)"
    )
    retrain_check_interval_s: float = Field(30, gt=0, description="Check this often whether retrain_after_labels were reached")
    queued_retrains_interval_s: float = Field(
        1, gt=0, description="Look this often for retrains queued by POST /v1/retrain or Label Studio in any worker"
    )
    refresh_queue_interval_s: float = Field(3600, gt=0, description="Re-score the pool and top up the review queue this often")
    prune_interval_s: float = Field(600, gt=0, description="Delete Label Studio prediction versions no editor shows this often")
    retention_interval_s: float = Field(6 * 3600, gt=0, description="Apply keep_served_days this often (first run 5 min after start)")
    deliver_batch_size: int = Field(100, ge=1, le=10_000, description="Review tasks sent to Label Studio per call")
    retry_backoff_s: float = Field(2, gt=0, description="First retry delay of a failed delivery; doubles each try")
    retry_backoff_max_s: float = Field(300, gt=0, description="Longest delay between delivery retries")
    delivery_max_attempts: int = Field(
        20, ge=1, description="Failed deliveries of one review task before it is marked failed (POST /v1/reviews/retry)"
    )
    demo_pool: int = Field(1000, ge=0, description="`juicer serve` demo: unlabelled Fashion-MNIST pool size")
    demo_holdout: int = Field(1000, ge=10, description="`juicer serve` demo: holdout size")
    demo_seed: int = Field(0, description="`juicer serve` demo: which images are picked")
    scheduler_retry_s: float = Field(
        1.0, gt=0, le=60, description="A worker without the scheduler lease tries to take it this often (failover delay)"
    )

    @field_validator("classes")
    @classmethod
    def _classes_unique(cls, value: list[str] | None) -> list[str] | None:
        return value if value is None else check_class_names(value)

    @field_validator("report_thresholds")
    @classmethod
    def _thresholds_in_range(cls, value: list[float]) -> list[float]:
        if not value or any(not 0 < t < 1 for t in value):
            raise ValueError("thresholds must be a non-empty list of numbers strictly between 0 and 1")
        return sorted(set(value))

    @model_validator(mode="after")
    def _rule_threshold(self) -> "ServiceSettings":
        if self.decision_rule in ("threshold", "margin") and not self.decision_threshold <= 1:
            raise ValueError(
                f"decision_threshold must be in (0, 1] for rule {self.decision_rule}, got {self.decision_threshold}"
            )
        return self


class PoolSampleSettings(BaseModel):
    """How many pool rows a review round and a retrain look at, at most (``learner.pool_sample:``).

    Above each size a seeded sample of the pool stands in for it, so a round's time and memory stop growing with
    the pool; at or above the pool's size the picks are the whole-pool ones. Smaller: a faster, leaner round whose
    picks come from fewer candidates. The defaults are learner's own (``learner.query.MARGIN_SAMPLE``,
    ``learner.selection.MAX_ROWS``, ``learner.semi.SemiSupervisedHead``'s ``max_unlabelled``).
    """

    model_config = ConfigDict(extra="forbid")

    margin: int = Field(
        100_000, ge=1, description="diverse_margin and auto score a seeded sample of this many pool rows for their "
        "least sure ones (the whole pool below it); each row costs one prediction per round"
    )
    cluster: int = Field(
        10_000, ge=1, description="typical, coverage and auto's typical picks cluster a seeded sample of this many pool "
        "rows (coverage holds a rows x rows boolean matrix: 100 MB at 10,000)"
    )
    semi_head: int = Field(
        5_000, ge=1, description="The semi-supervised head learns from a seeded sample of this many unlabelled pool "
        "rows at each retrain (read from the embedding cache)"
    )


class LearnerSettings(BaseModel):
    """How images are embedded and the head is trained."""

    backbone: str = Field("efficientnet-lite0", description="A known backbone name, a TF-Hub URL, or a SavedModel folder")
    input_size: int | None = Field(None, ge=32, le=1024, description="Override the backbone's input size (pixels)")
    batch_size: int = Field(32, ge=1, le=4096, description="Images per backbone call")
    mixed_precision: bool = Field(False, description="float16 compute on a GPU (ignored on the CPU)")
    max_image_pixels: int = Field(
        40_000_000, ge=1, description="Images with more pixels are rejected from their header (uploads, datasets, the pool)"
    )
    pool_sample: PoolSampleSettings = Field(
        default_factory=PoolSampleSettings, description="Pool rows a review round and a retrain look at, at most"
    )


class LabelStudioSettings(BaseModel):
    """The Label Studio server juicer runs (or uses) and the project annotators work in."""

    url: str | None = Field(
        None, description="Base URL of a Label Studio juicer does not run itself; None: run one on 127.0.0.1:port"
    )
    port: int = Field(8080, ge=1, le=65535, description="Port for the Label Studio juicer runs (127.0.0.1 only)")
    username: str = Field(
        "admin@juicer.local", pattern=r"^[^@\s]+@[^@\s]+$", description="The admin's login (Label Studio wants an email)"
    )
    password: str | None = Field(
        None, min_length=8, description="The admin's password (unset: generated into <data_dir>/secrets/ on first start)"
    )
    token: str | None = Field(
        None,
        min_length=8,
        description="The admin's API token (legacy token, set on first start; unset: generated into <data_dir>/secrets/)",
    )
    venv: Path = Field(Path(".venv-ls"), description="The venv that holds label-studio")
    data_dir: Path | None = Field(None, description="Label Studio's database and media; default <data_dir>/label-studio")
    project_title: str = Field("juicer", min_length=3, description="The Label Studio project annotators work in")
    webhook_secret: str | None = Field(
        None, min_length=8, description="Sent by Label Studio in X-Juicer-Secret (unset: generated into <data_dir>/secrets/)"
    )
    timeout_s: float = Field(10.0, gt=0, le=300, description="Timeout of every call to Label Studio (seconds)")
    image_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts whose http(s) task image URLs juicer's ML backend may fetch (Label Studio's own files always)",
    )
    images_group_readable: bool = Field(
        False,
        description="Images (and the folders above them) readable by the data folder's group too, not only by juicer's "
        "user: for a Label Studio that runs as another user in that group (compose.yaml); every other file stays 0600",
    )
    image_hosts_private: bool = Field(
        False,
        description="Allow image_hosts that resolve to loopback, private or link-local addresses (off: only public ones)",
    )


class StoreSettings(BaseModel):
    """Where juicer's state lives (``store:``): SQLite in the data folder, or a PostgreSQL server shared by replicas."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(
        None,
        pattern=r"^(sqlite|postgresql\+psycopg)://",
        description="SQLAlchemy URL of the store: unset means sqlite:///<data_dir>/juicer.db; "
        "postgresql+psycopg://user:password@host:5432/juicer for several workers or machines",
    )
    pool_size: int = Field(5, ge=1, le=100, description="PostgreSQL: connections kept open per process")


class Settings(BaseSettings):
    """Everything juicer can be configured with."""

    model_config = SettingsConfigDict(env_prefix="JUICER_", env_nested_delimiter="__", extra="forbid")

    data_dir: Path = Field(Path("data"), description="Images, models, embeddings and state live here")
    fashion_mnist_dir: Path = Field(
        Path("/usr/share/datasets/fashion-mnist"), description="idx files of Debian's dataset-fashion-mnist"
    )
    flowers_url: str = Field(
        "https://storage.googleapis.com/download.tensorflow.org/example_images/flower_photos.tgz",
        description="The public TF flowers archive (`juicer data flowers`)",
    )
    service: ServiceSettings = Field(default_factory=ServiceSettings)
    learner: LearnerSettings = Field(default_factory=LearnerSettings)
    label_studio: LabelStudioSettings = Field(default_factory=LabelStudioSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)

    @property
    def files_dir(self) -> Path:
        """What Label Studio may serve (its LOCAL_FILES_DOCUMENT_ROOT): the images folder and nothing else."""
        return files_dir(self.data_dir)

    @property
    def images_dir(self) -> Path:
        """Where the service keeps every image (uploads, the demo): Label Studio's local-files storage."""
        return self.files_dir / "images"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments, then the environment, then the config file (pydantic-settings merges them, nested
        sections key by key). Outside :func:`load_settings` a ``Settings(...)`` holds its arguments and the
        defaults only: nothing is read behind the caller's back."""
        loading = _LOADING.get()
        if loading is None:
            return (init_settings,)
        environment = env_settings if loading.environ is None else _Environment(settings_cls, loading.environ)
        return (init_settings, environment, *loading.config_file)


@dataclass(frozen=True)
class _Loading:
    """What :func:`load_settings` hands :meth:`Settings.settings_customise_sources` for one call."""

    environ: Mapping[str, str] | None  # None: os.environ, read by pydantic-settings' own source
    config_file: tuple[YamlConfigSettingsSource, ...]  # empty without a config file


# Set by load_settings around its one Settings(...) call: a context variable, so concurrent loads (threads,
# tests) each see their own file and environment.
_LOADING: ContextVar[_Loading | None] = ContextVar("juicer_settings_loading", default=None)


class _Environment(EnvSettingsSource):
    """pydantic-settings' environment source (prefix, ``__`` nesting, JSON for lists) over a given mapping
    instead of ``os.environ``, so that tests and tools hand theirs in; ``env_vars`` is the table it reads."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self.env_vars = {name if self.case_sensitive else name.lower(): value for name, value in environ.items()}


def _config_file(path: Path) -> YamlConfigSettingsSource:
    """pydantic-settings' YAML source for ``path``; :class:`ConfigError` naming the file when it cannot be used."""
    if not path.is_file():  # the source itself skips a missing file; a file asked for must be there
        raise ConfigError(f"cannot read config file {path}: no such file")
    try:
        return YamlConfigSettingsSource(Settings, yaml_file=path)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    except (TypeError, ValueError) as exc:  # a list or a scalar where the source expects a mapping
        raise ConfigError(f"config file {path} must hold a mapping of settings ({exc})") from exc


def _describe_one(loc: Sequence[Any], message: str) -> str:
    name = ".".join(str(part) for part in loc) or "(settings)"
    env = "JUICER_" + "__".join(str(part) for part in loc).upper()
    return f"  {name} (env {env}): {message}"


def _describe(error: ValidationError) -> str:
    return "invalid settings:\n" + "\n".join(_describe_one(item["loc"], item["msg"]) for item in error.errors())


def invalid_setting(loc: Sequence[str], message: str) -> ConfigError:
    """The error for one setting (``("service", "query_strategy")``) that code outside ``config`` found invalid,
    worded as :func:`load_settings` words its own (the dotted name, its environment variable, the message)."""
    return ConfigError("invalid settings:\n" + _describe_one(loc, message))


def load_settings(path: str | Path | None = None, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Load settings from the config file, the environment and ``overrides``; raise :class:`ConfigError` if invalid."""
    path = path or (os.environ if environ is None else environ).get("JUICER_CONFIG")
    loading = _Loading(environ, (_config_file(Path(path)),) if path else ())
    token = _LOADING.set(loading)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from exc
    except SettingsError as exc:  # an environment value that does not parse (bad JSON for a list)
        raise ConfigError(f"invalid settings in the environment: {exc}") from exc
    finally:
        _LOADING.reset(token)
