"""What a CAM explains: a class's logit, probability or log-probability, or any score of the logits.

``compute_cams(..., target=...)`` takes None (each image's top-1 class), a class index or one per
image, a ready-made class target (:class:`ClassLogit`, :class:`ClassProbability`,
:class:`ClassLogProbability`), or a callable ``logits (N, C) -> scores (N,)``, e.g.
``lambda y: y[:, 3] + y[:, 7]`` or a regression model's ``lambda y: y[:, 0]``. The gradient of the
score's sum is taken once for the batch. A class target records the explained classes with the
maps; a callable has none, so the methods that need a class (CAM, Score-CAM, Recipro-CAM) refuse it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Sequence, Union

import torch

from .checks import check_class_idx

ClassIndex = Union[int, Sequence[int], torch.Tensor, None]


@dataclass(frozen=True)
class ClassTarget:
    """Explain a class score of each image: ``class_idx`` an int (every image), exactly one per image, or None
    (the top-1 class); checked by :func:`helpers.cam.checks.check_class_idx` when made."""

    class_idx: ClassIndex = None
    score: ClassVar[str] = "logit"

    def __post_init__(self) -> None:
        if self.class_idx is not None:
            check_class_idx(self.class_idx)

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """(N, C) scores whose entry of the explained class is differentiated: here the logits."""
        return logits

    def select(self, logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """(N,) score of each row's class ``classes`` (N,)."""
        return self.scores(logits).gather(1, classes[:, None])


@dataclass(frozen=True)
class ClassLogit(ClassTarget):
    """The pre-softmax class score y^c (the CAM papers' choice; the default)."""


@dataclass(frozen=True)
class ClassProbability(ClassTarget):
    """The softmax probability p^c = softmax(y)_c."""

    score: ClassVar[str] = "probability"

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.softmax(dim=1)


@dataclass(frozen=True)
class ClassLogProbability(ClassTarget):
    """The log-probability log softmax(y)_c = y^c - logsumexp(y)."""

    score: ClassVar[str] = "log-probability"

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.log_softmax(dim=1)


#: Class targets by the name of their score (the command line's ``--score``).
SCORES: dict[str, type[ClassTarget]] = {t.score: t for t in (ClassLogit, ClassProbability, ClassLogProbability)}
Target = Union[ClassIndex, ClassTarget, Callable[[torch.Tensor], torch.Tensor]]


def class_target(class_idx: ClassIndex = None, score: str = "logit") -> ClassTarget:
    """The class target of ``score`` (:data:`SCORES`: "logit", "probability", "log-probability")."""
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}; use one of {', '.join(repr(s) for s in SCORES)}")
    return SCORES[score](class_idx)


def as_target(target: Target, score: str = "logit") -> ClassTarget | Callable[[torch.Tensor], torch.Tensor]:
    """A class target or a callable as given; None or class indices become the class target of ``score``."""
    if isinstance(target, ClassTarget) or (callable(target) and not isinstance(target, torch.Tensor)):
        return target
    return class_target(target, score)
