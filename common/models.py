"""Where model versions live: models/<version>/{model.onnx,card.json} and a CURRENT pointer."""

from __future__ import annotations

import os
from pathlib import Path

from common.settings import Settings


def current_version(settings: Settings) -> str | None:
    try:
        return settings.current_model_pointer.read_text().strip() or None
    except FileNotFoundError:
        return None


def resolve_model_dir(settings: Settings, model_dir: Path | None = None) -> Path:
    """The model folder to score with: the one given, else the CURRENT version."""
    if model_dir is None:
        version = current_version(settings)
        if version is None:
            raise FileNotFoundError(
                f"no current model ({settings.current_model_pointer} is missing): "
                "train one with `make train`"
            )
        model_dir = settings.models_dir / version
    model_dir = Path(model_dir).resolve()
    if not (model_dir / "model.onnx").is_file():
        raise FileNotFoundError(f"{model_dir} holds no model.onnx: train one with `make train`")
    return model_dir


def set_current(settings: Settings, version: str) -> None:
    """Point CURRENT at ``version`` atomically (rename), so readers never see half a write."""
    if not (settings.models_dir / version / "model.onnx").is_file():
        raise FileNotFoundError(f"model version {version} not found in {settings.models_dir}")
    tmp = settings.current_model_pointer.with_suffix(".tmp")
    tmp.write_text(version + "\n")
    os.replace(tmp, settings.current_model_pointer)
