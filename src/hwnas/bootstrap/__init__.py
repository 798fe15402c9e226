"""Bootstrap: a weight-sharing supernet from any torch.fx-traceable ``nn.Module``.

``convert(model, example_input)`` traces the model, finds channel groups that can shrink
together (width) and residual blocks that can be skipped (depth), and returns a
:class:`BootstrapModel`: an :class:`~hwnas.elastic.base.ElasticModel` whose largest arch
reproduces the original model.
"""

from hwnas.bootstrap.convert import convert
from hwnas.bootstrap.model import BootstrapModel, WidthGroup, width_choices

__all__ = ["BootstrapModel", "WidthGroup", "convert", "width_choices"]
