"""The CAM engine: models and their layers, hooks, one forward + backward, the registered methods, map fusion.

Importing this package registers every method: :mod:`.registry` holds the registry, :mod:`.engine`
the built-in Grad-CAM / LayerCAM / hybrid, and :mod:`.methods` adds the further ones with
``@register`` (it imports the engine, so the built-ins come first in :data:`METHODS`), as do
:mod:`.projection_methods`, :mod:`.ablation`, :mod:`.tail_gradient_methods` and :mod:`.fullgrad`.
Method options are objects (:mod:`.options`), what is explained a target (:mod:`.targets`).
Nothing here imports the data, evaluation or teaching packages.
"""
from . import ablation as _ablation  # noqa: F401  (Ablation-CAM)
from . import fullgrad as _fullgrad  # noqa: F401  (FullGrad)
from . import methods as _methods  # noqa: F401  (registers CAM, Grad-CAM++, XGrad-CAM, ..., Recipro-CAM)
from . import projection_methods as _projection  # noqa: F401  (Eigen-CAM, KPCA-CAM)
from . import tail_gradient_methods as _tail  # noqa: F401  (Shapley-CAM, Finer-CAM)
from .bundle import ModelBundle
from .engine import METHODS, CamMaps, compute_cams, forward_backward, register
from .inference import predict_topk
from .maps import fuse_layers, geometric_fusion, normalise_max, upsample
from .models import as_bundle, load_model
from .options import Hybrid, LayerFusion, ReciproCAM, ScoreCAM, Smooth
from .split import split_at
from .targets import ClassLogit, ClassLogProbability, ClassProbability, class_target

__all__ = ["METHODS", "CamMaps", "ClassLogProbability", "ClassLogit", "ClassProbability", "Hybrid", "LayerFusion",
           "ModelBundle", "ReciproCAM", "ScoreCAM", "Smooth", "as_bundle", "class_target", "compute_cams",
           "forward_backward", "fuse_layers", "geometric_fusion", "load_model", "normalise_max", "predict_topk",
           "register", "split_at", "upsample"]
