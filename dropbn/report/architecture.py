"""How a report names a run's network and the settings of its training recipe (torch-free).

A run's config, flattened ('model.depth' -> value, the report's `cfg.` columns without the prefix),
in; text out: `model_name` for the report's title ("ResNet-20 (pre-act)", "WRN-28-10",
"plain-56 (no skip)", "residual MLP 256x16"), `setup_parts` for the keys of the model families,
activations and optimizer recipe in the setup line, `compact` for equal-width lists in labels.
Runs recorded before these keys existed lack them and are named as before.
"""
from __future__ import annotations

import math


def _get(row, key: str, default=None):
    v = row.get(key, default)
    return default if v is None or (isinstance(v, float) and math.isnan(v)) else v


def _on(v) -> bool:
    return str(v).lower() == "true"


def resnet_name(row) -> str:
    """"ResNet-20", "ResNet-56 (pre-act)", "WRN-28-10", "plain-20 (no skip)", "ResNet-20 (projection
    shortcuts)", from a run's `cfg.model.*` columns."""
    get = (lambda k: _get(row, f"cfg.model.{k}"))
    depth, width = get("depth"), str(get("width") or 1)
    skip = get("skip") is None or _on(get("skip"))
    base = f"ResNet-{depth}" if width == "1" else f"WRN-{depth}-{width}"
    if not skip:
        base = f"plain-{depth}" + ("" if width == "1" else f" x{width}") + " (no skip)"
    notes = [n for n, on in (("pre-act", _on(get("preact"))),
                             ("projection shortcuts", skip and get("shortcut") == "projection")) if on]
    return base + (f" ({', '.join(notes)})" if notes else "")


def compact(v) -> str:
    """"[256,256,256,256]" -> "256x4" (a list of equal widths); anything else as it is."""
    text = str(v)
    if text.startswith("[") and text.endswith("]") and "," in text:
        items = text[1:-1].split(",")
        if len(set(items)) == 1:
            return f"{items[0]}x{len(items)}"
    return text


def mlp_name(row) -> str:
    hidden = str(_get(row, "cfg.model.hidden", "")).strip("[]").replace(",", "-")
    if _on(_get(row, "cfg.model.skip")):
        return "residual MLP " + compact(_get(row, "cfg.model.hidden", ""))
    return "MLP " + hidden


# setup-line keys of the new families and recipe: (key, text, its default: not shown when every run has it)
SETUP_KEYS = (("model.act", "activation", "relu"), ("model.init", "init", "auto"),
              ("reg.dropout_kind", "dropout kind", "standard"), ("optim.nesterov", "Nesterov momentum", "false"),
              ("train.warmup_epochs", "lr warm-up epochs", "0"))


def setup_parts(runs, varying: set) -> list[str]:
    """What the setup line adds for these keys: each one every run shares and that differs from its
    default; and, when weight decay is on, which parameters it applies to."""
    parts = []
    for key, text, default in SETUP_KEYS:
        vals = _shared(runs, key, varying)
        if vals is not None and vals != default:
            parts.append(f"{text} {vals}")
    decay, scope = _shared(runs, "optim.weight_decay", varying), _shared(runs, "optim.decay_norm_and_bias", varying)
    if decay not in (None, "0", "0.0") and scope is not None:
        parts.append("weight decay on every parameter" if _on(scope)
                     else "weight decay on the weights only (not on biases and norm parameters)")
    return parts


def _shared(runs, key: str, varying: set):
    """The one value of `key` (as text) that every run has, or None (varying, missing, several)."""
    col = f"cfg.{key}"
    if key in varying or col not in runs:
        return None
    vals = {str(v) for v in runs[col] if not (isinstance(v, float) and math.isnan(v))}
    return vals.pop() if len(vals) == 1 else None
