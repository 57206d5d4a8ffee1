"""Settings: a YAML file and OmegaConf dotlist overrides (``key=value``) merged onto a typed dataclass.

The one loader of the project: the ingest and restore jobs, training and the on-demand service load their
config here. Unknown keys and wrong types are errors (OmegaConf structured merge), and a credential given as
a setting is refused before anything is logged or Ray starts.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from irn_batch.storage import SECRET_HELP, secret_setting


class SecretSettingError(ValueError):
    """A credential given as a setting (dotlist override or YAML key); the message never holds its value."""


def refuse_secrets(overrides: list[str] | None, yaml_cfg: Any = None) -> None:
    """Raise SecretSettingError when an override or a YAML setting carries a credential.

    Checked before anything is logged or Ray starts: a job's command line is recorded by Ray (``ray job
    list``, the driver log), so a secret there is already exposed; the message says where to put it instead.
    """
    settings: list[Any] = list(overrides or [])
    trees = [yaml_cfg] if yaml_cfg is not None else []
    if overrides:
        try:  # also look inside values that are mappings: storage={key: ...}
            trees.append(OmegaConf.from_dotlist(list(overrides)))
        except Exception:  # a malformed override is reported by load_config without its value
            pass
    for tree in trees:
        stack = [("", OmegaConf.to_container(tree, resolve=False))]
        while stack:
            prefix, node = stack.pop()
            if isinstance(node, dict):
                stack.extend((f"{prefix}{k}.", v) for k, v in node.items())
            elif isinstance(node, list):
                stack.extend((prefix, v) for v in node)
            else:
                settings.append((prefix[:-1], node))
    name = secret_setting(settings)
    if name is not None:
        raise SecretSettingError(f"{name}: {SECRET_HELP}")


def load_config(schema: type, yaml_path: str | Path | None, overrides: list[str] | None = None, *,
                require_file: bool = False) -> Any:
    """Schema <- YAML file <- dotlist overrides, as an instance of ``schema``.

    A ``yaml_path`` that is not a file is skipped (the jobs' default config files are optional), or, with
    ``require_file``, a FileNotFoundError naming it. Raises SecretSettingError, before anything else, when a
    setting carries a credential; ValueError naming the missing settings; OmegaConf's errors (ValueErrors
    too) for unknown keys and wrong types.
    """
    refuse_secrets(overrides)
    cfg = OmegaConf.structured(schema)
    if require_file and yaml_path is not None and not Path(yaml_path).is_file():
        raise FileNotFoundError(f"{yaml_path}: no such config file")
    if yaml_path is not None and Path(yaml_path).is_file():
        loaded = OmegaConf.load(yaml_path)
        refuse_secrets(None, loaded)
        cfg = OmegaConf.merge(cfg, loaded)
    if overrides:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ValueError(f"missing required settings: {', '.join(missing)} (pass e.g. {missing[0]}=...)")
    return OmegaConf.to_object(cfg)
