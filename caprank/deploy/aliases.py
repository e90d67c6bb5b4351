"""The MLflow registry side of a rollout: which version is `production`, where a version's
files are stored, and moving the `production` alias (only ever after a promotion).

Serving resolves the same aliases (``caprank.online.runtime.default_model_ref``), so
setting `production` here is what makes the next `caprank serve` load the new version.
"""

from __future__ import annotations

from urllib.parse import urlparse

from caprank.config import CaprankConfig
from caprank.errors import CaprankError

PRODUCTION = "production"
CHALLENGER = "challenger"


class RegistryError(CaprankError):
    """The MLflow registry cannot answer what a rollout needs."""


def _client(cfg: CaprankConfig):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=cfg.mlflow_tracking_uri())


def alias_version(cfg: CaprankConfig, alias: str) -> str | None:
    """The version ``alias`` points at, or None when the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        found = _client(cfg).get_model_version_by_alias(cfg.services.model_name, alias)
    except MlflowException:
        return None
    return str(found.version)


def check_version(cfg: CaprankConfig, version: str) -> None:
    """Raise ``RegistryError`` unless ``version`` of the registered model exists."""
    from mlflow.exceptions import MlflowException

    name = cfg.services.model_name
    if not str(version).isdigit():
        raise RegistryError(f"registered model version must be a number, got '{version}'")
    try:
        _client(cfg).get_model_version(name, str(version))
    except MlflowException as exc:
        raise RegistryError(
            f"registered model '{name}' has no version {version} in "
            f"{cfg.mlflow_tracking_uri()}: {exc.message}"
        ) from exc


def version_storage_uri(cfg: CaprankConfig, version: str) -> str:
    """Where the files of ``version`` live (s3://, gs://, a path): what KServe's storage
    initializer downloads into ``/mnt/models``."""
    from mlflow.exceptions import MlflowException

    name = cfg.services.model_name
    try:
        uri = _client(cfg).get_model_version_download_uri(name, str(version))
    except MlflowException as exc:
        raise RegistryError(f"no storage URI for '{name}' version {version}: {exc}") from exc
    return storage_location(uri, cfg.services.mlflow_artifacts_destination)


def storage_location(uri: str, artifacts_destination: str) -> str:
    """``uri`` as KServe can read it: an MLflow server that proxies artifacts answers
    ``mlflow-artifacts:/<path>``, stored at ``<artifacts_destination>/<path>``."""
    parsed = urlparse(uri)
    if parsed.scheme != "mlflow-artifacts":
        return uri
    path = parsed.path.lstrip("/")  # mlflow-artifacts://host:port/<path>: host is the server
    if not artifacts_destination:
        raise RegistryError(
            f"{uri} is proxied by the MLflow server; set "
            "services.mlflow_artifacts_destination to its --artifacts-destination"
        )
    return f"{artifacts_destination.rstrip('/')}/{path}"


def set_production(cfg: CaprankConfig, version: str) -> None:
    """Point `production` at ``version`` (idempotent: setting it again changes nothing)."""
    _client(cfg).set_registered_model_alias(cfg.services.model_name, PRODUCTION, str(version))
