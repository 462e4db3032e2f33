"""lorapod's settings: one pydantic-settings model from the environment and ``config.toml``.

Precedence, highest first: environment variables, ``config.toml``, ``~/.runpod/config.toml`` (the RunPod
API key only), defaults. ``LORAPOD_HOME``, when set, holds the whole installation (config, ledger, job
workdirs, caches); unset, the XDG locations are used (~/.config/lorapod, ~/.local/share/lorapod,
~/.cache/lorapod).
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import platformdirs
from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from engine.config import Provider
from store.errors import SettingsError

APP = "lorapod"
ENV_PREFIX = "LORAPOD_"
HOME_VARIABLE = "LORAPOD_HOME"
RUNPOD_CONFIG = Path("~/.runpod/config.toml")


@dataclass(frozen=True)
class Paths:
    """Where lorapod keeps its files."""

    config_dir: Path
    data_dir: Path
    cache_dir: Path
    origin: str  # "LORAPOD_HOME" or "XDG"

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.toml"

    @property
    def ledger(self) -> Path:
        return self.data_dir / "ledger.sqlite"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def artifacts_dir(self) -> Path:
        """The local artifact store: packages at ``jobs/<job id>/<file>``."""
        return self.data_dir / "artifacts"

    @property
    def reports_dir(self) -> Path:
        """Client reports the dashboard writes (``lorapod report`` writes where it is told)."""
        return self.data_dir / "reports"


def resolve_paths(environ: dict[str, str] | None = None) -> Paths:
    """The installation's folders from ``LORAPOD_HOME`` or, unset, the XDG base directories."""
    env = os.environ if environ is None else environ
    home = env.get(HOME_VARIABLE, "").strip()
    if home:
        root = Path(home).expanduser().absolute()
        return Paths(config_dir=root, data_dir=root, cache_dir=root / "cache", origin=HOME_VARIABLE)
    return Paths(
        config_dir=Path(platformdirs.user_config_dir(APP)),
        data_dir=Path(platformdirs.user_data_dir(APP)),
        cache_dir=Path(platformdirs.user_cache_dir(APP)),
        origin="XDG",
    )


def _secret(env_name: str, description: str) -> Any:
    return Field(
        None,
        validation_alias=AliasChoices(env_name, env_name.lower()),
        description=description,
        json_schema_extra={"secret": True, "env": env_name},
    )


class Settings(BaseSettings):
    """Every setting lorapod reads. Non-secret fields come from LORAPOD_<NAME> or config.toml's <name>."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", populate_by_name=True, validate_default=True
    )

    default_provider: Provider = Field(Provider.LOCAL, description="Where new jobs run: local or runpod.")
    default_preset: str = Field("balanced", description="Preset used when a command names none.")
    monthly_budget_usd: float = Field(400.0, ge=0, description="Spend allowed per calendar month (UTC).")
    per_job_ceiling_usd: float = Field(150.0, ge=0, description="A job whose estimate exceeds this is refused.")
    alert_thresholds: list[float] = Field(
        default_factory=lambda: [0.8, 0.95], description="Shares of the monthly budget that raise alerts."
    )
    hard_cap_usd: float = Field(200.0, ge=0, description="A running job that costs this much is cancelled.")
    max_duration_hours: float = Field(24.0, gt=0, description="A running job this old is cancelled.")
    local_rate_usd_per_hour: float = Field(0.0, ge=0, description="Notional hourly rate of local jobs.")
    auto_resume: bool = Field(False, description="Resume an interrupted job by itself (budget permitting).")
    max_resume_attempts: int = Field(3, ge=1, le=20, description="Attempts per job, the first included.")
    supervisor_idle_exit_minutes: float = Field(
        5.0, ge=0, description="The background supervisor exits this long after the last live job ended."
    )
    playground_idle_minutes: float = Field(
        15.0, gt=0, description="A RunPod job's playground pod is deleted this long after its last prompt."
    )
    gpu_prices: dict[str, float] = Field(
        default_factory=dict,
        description='Price overrides, USD per GPU-hour: {"<gpu id>" = 2.5} or {"<gpu id>:COMMUNITY" = 1.9}.',
    )
    artifact_store: Literal["local", "supabase"] = Field(
        "local", description="Where jobs keep their packages: local (the data dir's artifacts/) or supabase (Storage)."
    )
    supabase_bucket: str = Field(
        "model-artifacts", min_length=3, description="Supabase Storage bucket of the packages (private)."
    )
    sync_interval_s: float = Field(
        60.0, ge=0, description="How often the open dashboard syncs with SUPABASE_DB_URL, in seconds; 0: never."
    )
    supabase_user_id: str | None = Field(
        None, description="Supabase auth user written as created_by on pushed jobs, so the web app shows them."
    )

    notify_email_to: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Addresses that receive notices by e-mail (comma-separated or a list)."
    )
    notify_email_from: str | None = Field(None, description="The notices' sender address (default: the SMTP user).")
    notify_smtp_host: str | None = Field(None, description="SMTP server that sends the e-mail notices.")
    notify_smtp_port: int | None = Field(
        None, ge=1, le=65535, description="SMTP port (default: 587 for starttls, 465 for ssl, 25 for plain)."
    )
    notify_smtp_security: Literal["starttls", "ssl", "plain"] = Field(
        "starttls", description="How the SMTP connection is protected: starttls, ssl or plain."
    )
    notify_smtp_user: str | None = Field(None, description="SMTP login, when the server asks for one.")
    notify_desktop: bool = Field(False, description="Show notices on this desktop with notify-send, when present.")
    notify_max_attempts: int = Field(5, ge=1, le=20, description="Tries per notice and channel before giving up.")

    runpod_image: str | None = Field(
        None,
        description="The pod image built from Dockerfile.gpu (e.g. ghcr.io/you/lorapod-gpu:0.1.0); unset: RunPod's "
        "stock PyTorch image, which installs the train stack at start (docs/runpod.md).",
    )
    runpod_network_volume_id: str | None = Field(
        None, description="Network volume for RunPod jobs whose spec names none (checkpoints survive pods)."
    )
    runpod_transport: Literal["auto", "ssh", "http"] = Field(
        "auto", description="How to reach a pod: auto (SSH when it has a public IP), ssh or http; falls back."
    )
    runpod_ssh_user: str = Field("root", min_length=1, description="The user lorapod logs in as over SSH.")
    runpod_pod_linger_s: float = Field(
        600.0, ge=0, le=86_400, description="Seconds a finished pod waits for a supervisor, then deletes itself."
    )
    runpod_start_timeout_s: float = Field(
        900.0, gt=0, le=7200, description="Seconds a new pod may take to become reachable before it is given up."
    )
    runpod_volume_mount_path: str = Field(
        "/workspace", pattern=r"^/", description="Where the pod's volume is mounted (its workdirs live there)."
    )
    runpod_secrets_dir: str = Field(
        "/dev/shm/lorapod", pattern=r"^/", description="The tmpfs folder in a pod where its secrets are delivered."
    )
    runpod_api_url: str = Field("https://rest.runpod.io/v1", description="RunPod's REST API.")
    runpod_graphql_url: str = Field("https://api.runpod.io/graphql", description="RunPod's GPU price query.")
    runpod_proxy_url: str = Field(
        "https://{pod_id}-{port}.proxy.runpod.net", description="Where a pod's HTTP port is reached."
    )

    runpod_api_key: SecretStr | None = _secret("RUNPOD_API_KEY", "RunPod API key.")
    supabase_url: SecretStr | None = _secret("SUPABASE_URL", "Supabase project URL.")
    supabase_service_role_key: SecretStr | None = _secret("SUPABASE_SERVICE_ROLE_KEY", "Supabase service key.")
    supabase_db_url: SecretStr | None = _secret("SUPABASE_DB_URL", "Postgres URL of the Supabase project.")
    supabase_jwt_secret: SecretStr | None = _secret(
        "SUPABASE_JWT_SECRET", "The project's JWT secret: signs a pod's upload credential for its job's folder only."
    )
    supabase_anon_key: SecretStr | None = _secret("SUPABASE_ANON_KEY", "The project's anon (public) API key.")
    hf_token: SecretStr | None = _secret("HF_TOKEN", "Hugging Face token for gated models.")
    training_webhook_secret: SecretStr | None = _secret("TRAINING_WEBHOOK_SECRET", "Webhook HMAC secret.")
    notify_webhook_url: SecretStr | None = _secret(
        "LORAPOD_NOTIFY_WEBHOOK_URL", "Slack-compatible incoming webhook for notices (its path is a token)."
    )
    notify_smtp_password: SecretStr | None = _secret("LORAPOD_NOTIFY_SMTP_PASSWORD", "SMTP password for notices.")

    @field_validator("alert_thresholds")
    @classmethod
    def _thresholds_are_shares(cls, value: list[float]) -> list[float]:
        if any(not 0 < share <= 1 for share in value):
            raise ValueError("each threshold is a share of the budget, above 0 and at most 1 (e.g. 0.8)")
        return sorted(value)

    @field_validator("notify_email_to", mode="before")
    @classmethod
    def _split_addresses(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("notify_email_to", "notify_email_from")
    @classmethod
    def _addresses(cls, value: Any) -> Any:
        for address in value if isinstance(value, list) else [value] if value else []:
            if "@" not in address or any(c.isspace() for c in address):
                raise ValueError(f"{address!r} is not an e-mail address")
        return value

    @field_validator("notify_webhook_url")
    @classmethod
    def _webhook_url(cls, value: SecretStr | None) -> SecretStr | None:
        # The message never repeats the value: the URL's path is the webhook's token.
        if value is not None:
            parts = urlsplit(value.get_secret_value())
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("the notice webhook must be an http(s) URL")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, *_file_sources(settings_cls, resolve_paths(), env_settings))

    @property
    def paths(self) -> Paths:
        return resolve_paths()

    @classmethod
    def secret_fields(cls) -> list[str]:
        return [name for name, info in cls.model_fields.items() if _is_secret(info.json_schema_extra)]


def _is_secret(extra: Any) -> bool:
    return isinstance(extra, dict) and bool(extra.get("secret"))


class RunPodConfigSource(PydanticBaseSettingsSource):
    """The RunPod API key from ``~/.runpod/config.toml``, as the runpod CLI and SDK write it."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None = None) -> None:
        super().__init__(settings_cls)
        self.path = (path or RUNPOD_CONFIG).expanduser()

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        try:
            data = tomllib.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError):
            return {}
        profile = data.get("default", data)
        key = profile.get("api_key") or profile.get("apikey") if isinstance(profile, dict) else None
        return {"runpod_api_key": key} if isinstance(key, str) and key else {}


def _file_sources(
    settings_cls: type[BaseSettings], paths: Paths, env: PydanticBaseSettingsSource
) -> list[PydanticBaseSettingsSource]:
    return [
        env,
        TomlConfigSettingsSource(settings_cls, toml_file=paths.config_file),
        RunPodConfigSource(settings_cls),
    ]


def load_settings() -> Settings:
    """Settings from the environment and config files; SettingsError naming the bad setting otherwise."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None
    except (tomllib.TOMLDecodeError, OSError) as exc:
        raise SettingsError(f"{resolve_paths().config_file}: {exc}") from None


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        name = ".".join(str(part) for part in error["loc"]) or "settings"
        lines.append(f"setting {name}: {error['msg']}")
    return "\n".join(lines)


@dataclass(frozen=True)
class SettingView:
    """One setting as ``lorapod config show`` prints it: value redacted when secret, and its source."""

    name: str
    value: Any
    source: str
    secret: bool
    description: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "source": self.source, "secret": self.secret}


REDACTED = "<set, redacted>"


def describe_settings(settings: Settings) -> list[SettingView]:
    """Every setting with the place its value came from; secrets appear only as set / not set."""
    paths = resolve_paths()
    env_source = EnvSettingsSource(Settings, env_prefix=ENV_PREFIX)
    origins: list[tuple[str, dict[str, Any]]] = [
        ("env", env_source()),
        (f"config {paths.config_file}", TomlConfigSettingsSource(Settings, toml_file=paths.config_file)()),
        (f"runpod config {RUNPOD_CONFIG}", RunPodConfigSource(Settings)()),
    ]
    views = []
    for name, info in Settings.model_fields.items():
        secret = _is_secret(info.json_schema_extra)
        keys = {name}
        if isinstance(info.validation_alias, AliasChoices):
            keys |= {str(choice) for choice in info.validation_alias.choices}
        source = "default"
        for label, provided in origins:
            if keys & provided.keys():
                source = _env_label(name, info, label)
                break
        raw = getattr(settings, name)
        if secret:
            value: Any = REDACTED if raw is not None else None
        else:
            value = raw.value if isinstance(raw, Provider) else raw
        views.append(SettingView(name, value, source, secret, info.description or ""))
    return views


def _env_label(name: str, info: Any, label: str) -> str:
    if label != "env":
        return label
    extra = info.json_schema_extra
    env_name = extra["env"] if _is_secret(extra) else f"{ENV_PREFIX}{name.upper()}"
    return f"env {env_name}"


def describe_paths() -> list[SettingView]:
    """The installation's folders, with whether they come from LORAPOD_HOME or the XDG defaults."""
    paths = resolve_paths()
    source = f"env {HOME_VARIABLE}" if paths.origin == HOME_VARIABLE else "XDG default"
    entries = {
        "config_file": paths.config_file,
        "data_dir": paths.data_dir,
        "ledger": paths.ledger,
        "jobs_dir": paths.jobs_dir,
        "cache_dir": paths.cache_dir,
    }
    return [SettingView(name, str(path), source, False, "") for name, path in entries.items()]


def write_setting(name: str, raw_value: str) -> Path:
    """Set one setting in config.toml (validated first), keeping the file's comments; the file is 0600."""
    import tomlkit

    if name not in Settings.model_fields:
        raise SettingsError(f"unknown setting {name!r}; see `lorapod config show`")
    path = resolve_paths().config_file
    try:
        document = tomlkit.parse(path.read_text(encoding="utf-8")) if path.exists() else tomlkit.document()
    except (OSError, tomlkit.exceptions.TOMLKitError) as exc:
        raise SettingsError(f"{path}: {exc}") from None
    value = _parse_setting_value(name, raw_value)
    try:
        Settings.model_validate({**{k: v for k, v in document.unwrap().items()}, name: value})
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None
    document[name] = value
    write_private(path, tomlkit.dumps(document))
    return path


def _parse_setting_value(name: str, raw: str) -> Any:
    """A command-line value as TOML would have it: numbers, booleans and lists parse; the rest is text."""
    info = Settings.model_fields[name]
    if _is_secret(info.json_schema_extra):
        return raw
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (0600), replacing it atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    tmp.chmod(0o600)
    tmp.replace(path)
