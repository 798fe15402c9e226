"""Where a model to bootstrap comes from, and how it is fitted to the data.

``model=bootstrap`` (``conf/model/bootstrap.yaml``) names a *source*:

- ``torchvision:<name>``: a torchvision classification builder, always called with
  ``weights=None`` (nothing is downloaded; give pretrained weights as a local file);
- ``module:<package.module>:<callable>``: a user's own builder (a function or class
  returning an ``nn.Module``), imported from the Python path;
- ``python:<name>``: a module handed over in Python (:func:`register_module`, used by
  :func:`hwnas.bootstrap.run_pipeline`).

``weights`` is a local ``state_dict`` file (``torch.load(..., weights_only=True)``; a
checkpoint dict holding it under ``state_dict`` or ``model`` works too). It may fit the
source as built (e.g. torchvision's ImageNet weights: 3 channels, 1000 classes) or the
model already fitted to the data (e.g. a baseline fine-tuned on FashionMNIST).

Fitting to the data (:func:`fit_to_data`):

- classes: the head (``head``, default the last ``nn.Linear`` registered: resnet and
  regnet ``fc``, mobilenet and efficientnet ``classifier[-1]``) is replaced by a freshly
  initialised ``nn.Linear`` when its output count differs from the data's;
- input channels: the stem (``stem``, default the first ``nn.Conv*d`` registered:
  resnet ``conv1``, mobilenet/efficientnet ``features[0][0]``, regnet ``stem[0]``) gets
  the data's channel count. For 1 channel its kernels are summed over the input
  channels, so a grey image gives what the pretrained model gave for that image
  repeated as RGB; for other counts the kernels repeat cyclically, scaled by
  ``source / data`` channels so activations keep their size.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hwnas.core.imports import DEBUG_HINT, first_line, import_object

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_SCHEMES = "torchvision:<name>, module:<package.module>:<callable> or python:<name>"
_REGISTERED: dict[str, nn.Module] = {}


def register_module(name: str, model: nn.Module) -> str:
    """Make ``model`` available as source ``python:<name>`` in this process (each build
    deep-copies it); returns the source string."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"register_module needs an nn.Module, got {type(model).__name__}")
    _REGISTERED[name] = model
    return f"python:{name}"


def load_source(source: str, kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    """The plain model named by ``source`` (see the module docstring), built with
    ``kwargs``; one-line ``ValueError`` for anything that does not name a model."""
    kwargs = dict(kwargs or {})
    scheme, _, rest = str(source).partition(":")
    if scheme == "torchvision" and rest:
        model = _torchvision(rest, kwargs)
    elif scheme == "module" and rest:
        model = _user_builder(rest, kwargs)
    elif scheme == "python" and rest:
        if rest not in _REGISTERED:
            raise ValueError(
                f"model.source={source!r}: no module registered as {rest!r} in this process "
                f"(hwnas.bootstrap.register_module); registered: {sorted(_REGISTERED)}"
            )
        import copy

        model = copy.deepcopy(_REGISTERED[rest])
    else:
        raise ValueError(f"model.source={source!r}: use {_SCHEMES}")
    if not isinstance(model, nn.Module):
        raise ValueError(
            f"model.source={source!r} returned a {type(model).__name__}, not an nn.Module"
        )
    return model


def _torchvision(name: str, kwargs: dict[str, Any]) -> nn.Module:
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"did you mean {close}?" if close else "see torchvision.models.list_models()"
        raise ValueError(
            f"model.source='torchvision:{name}': not a torchvision classification model; {hint}"
        )
    if kwargs.get("weights") is not None:
        raise ValueError(
            "model.kwargs.weights: torchvision weights are never downloaded here; save a "
            "state_dict and pass model.weights=PATH"
        )
    kwargs["weights"] = None
    try:
        return torchvision.models.get_model_builder(name)(**kwargs)
    except (TypeError, ValueError) as err:
        raise ValueError(f"model.source='torchvision:{name}' with model.kwargs: {err}") from None


def _user_builder(spec: str, kwargs: dict[str, Any]) -> nn.Module:
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise ValueError(f"model.source='module:{spec}': use module:<package.module>:<callable>")
    builder = import_object(f"{mod_name}:{attr}", "model.source", shown=f"module:{spec}")
    if not callable(builder):
        raise ValueError(f"model.source='module:{spec}': {attr!r} is not callable")
    try:
        return builder(**kwargs)
    except TypeError as err:
        raise ValueError(f"model.source='module:{spec}' with model.kwargs: {err}") from None
    except Exception as err:  # the user's builder fails: one line, its cause chained
        raise ValueError(
            f"model.source='module:{spec}': the builder raised {type(err).__name__}: "
            f"{first_line(err)}; fix the builder ({DEBUG_HINT})"
        ) from err


# --------------------------------------------------------------------- weights
def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a local file (``weights_only``); one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"model.weights={str(path)!r}: no such file (resolved to {path.resolve()}); "
            "give a local state_dict file, or null for random init"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is one clear line
        reason = " ".join(str(err).split())[:160]
        raise ValueError(
            f"model.weights={str(path)!r}: not a readable state_dict: {reason}"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(
            f"model.weights={str(path)!r}: expected a state_dict (names -> tensors), "
            f"got {type(obj).__name__}"
        )
    return dict(obj)


def mismatch(model: nn.Module, state: Mapping[str, torch.Tensor]) -> str | None:
    """Why ``state`` does not load strictly into ``model`` (one line), or None."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    parts = []
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches (file vs model), first {shapes[:2]}")
    if missing:
        parts.append(f"{len(missing)} missing keys, first {missing[:3]}")
    if extra:
        parts.append(f"{len(extra)} unexpected keys, first {extra[:3]}")
    return "; ".join(parts) or None


# ------------------------------------------------------------- fit to the data
def _find(model: nn.Module, path: str | None, kinds: tuple[type, ...], last: bool, key: str):
    if path is not None:
        try:
            m = model.get_submodule(path)
        except AttributeError:
            raise ValueError(f"model.{key}={path!r}: no such submodule") from None
        if not isinstance(m, kinds):
            raise ValueError(
                f"model.{key}={path!r} is a {type(m).__name__}, not {kinds[0].__name__}"
            )
        return path, m
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, kinds)]
    if not found:
        names = "/".join(k.__name__ for k in kinds)
        raise ValueError(
            f"model.{key}: the model has no {names} to adapt; name it with model.{key}"
        )
    return found[-1] if last else found[0]


def _replace(model: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, new)


def head_and_stem(
    model: nn.Module, head: str | None = None, stem: str | None = None
) -> tuple[tuple[str, nn.Linear], tuple[str, nn.Module]]:
    """The classifier head (last ``nn.Linear``) and stem (first convolution), or the
    submodules named by ``head`` / ``stem``."""
    return _find(model, head, (nn.Linear,), True, "head"), _find(model, stem, _CONV, False, "stem")


def fit_to_data(
    model: nn.Module,
    in_channels: int,
    num_classes: int,
    head: str | None = None,
    stem: str | None = None,
) -> nn.Module:
    """Replace the head when its class count differs from ``num_classes`` and adapt the
    stem's input channels to ``in_channels`` (in place; see the module docstring)."""
    (hname, hmod), (sname, smod) = head_and_stem(model, head, stem)
    if hmod.out_features != num_classes:
        new = nn.Linear(hmod.in_features, num_classes, hmod.bias is not None)
        _replace(model, hname, new.to(hmod.weight.device, hmod.weight.dtype))
    src = smod.in_channels
    if src != in_channels:
        if smod.groups != 1:
            raise ValueError(f"model.stem={sname!r} is a grouped convolution; name a plain one")
        with torch.no_grad():
            w = smod.weight  # (out, src, *k)
            if in_channels == 1:
                w = w.sum(1, keepdim=True)
            else:
                idx = torch.arange(in_channels) % src
                w = w[:, idx] * (src / in_channels)
            smod.weight = nn.Parameter(w.clone())
        smod.in_channels = in_channels
    return model


def load_and_fit(
    model: nn.Module,
    weights: str | Path | None,
    in_channels: int,
    num_classes: int,
    head: str | None = None,
    stem: str | None = None,
) -> nn.Module:
    """Load ``weights`` into ``model`` as built (then fit it to the data) or, if they do
    not fit it, into the model fitted to the data; one-line ``ValueError`` naming the
    first mismatches when they fit neither."""
    if weights is None:
        return fit_to_data(model, in_channels, num_classes, head, stem)
    state = read_state_dict(weights)
    why = mismatch(model, state)
    if why is None:
        model.load_state_dict(state)
        return fit_to_data(model, in_channels, num_classes, head, stem)
    fit_to_data(model, in_channels, num_classes, head, stem)
    why_fitted = mismatch(model, state)
    if why_fitted is None:
        model.load_state_dict(state)
        return model
    fitted = f"fitted to the data ({in_channels} input channels, {num_classes} classes)"
    closer = min((_count(why_fitted), fitted, why_fitted), (_count(why), "as built", why))
    raise ValueError(
        f"model.weights={str(weights)!r} fits model.source neither as built nor {fitted}; "
        f"{closer[1]}: {closer[2]}"
    )


def _count(why: str) -> int:
    """The number of problems in a :func:`mismatch` line."""
    return sum(int(part.split()[0]) for part in why.split("; "))
