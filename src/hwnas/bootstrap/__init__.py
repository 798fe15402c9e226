"""Bootstrap: a weight-sharing supernet from any torch.fx-traceable ``nn.Module``.

``convert(model, example_input)`` traces the model, finds channel groups that can shrink
together (width), residual blocks that can be skipped (depth) and, with ``kernel=True``,
convolutions whose kernel can shrink to a centre crop (kernel), and returns a
:class:`BootstrapModel`: an :class:`~hwnas.elastic.base.ElasticModel` whose largest arch
reproduces the original model.

In the pipeline: ``python -m hwnas model=bootstrap model.source=torchvision:<name>
model.weights=PATH`` (see ``conf/model/bootstrap.yaml`` and
:mod:`hwnas.bootstrap.source`), or from Python :func:`hwnas.app.api.run_pipeline` with a module.
"""

from hwnas.bootstrap.build import build_bootstrap
from hwnas.bootstrap.convert import convert
from hwnas.bootstrap.model import BootstrapModel, WidthGroup, width_choices
from hwnas.bootstrap.source import register_module
from hwnas.elastic import register_model

register_model("bootstrap", build_bootstrap)

__all__ = [
    "BootstrapModel",
    "WidthGroup",
    "build_bootstrap",
    "convert",
    "register_module",
    "width_choices",
]
