"""Model kinds: one protocol (``models.base.Model``), one registry, five built-in kinds.

    kind         class          built as          trained by                 module
    deepwiener   DeepWiener     deepwiener        gradient steps             models.deepwiener
    lfr          LFRModel       lfr               gradient steps             models.lfr
    rnn          RNNModel       lstm, gru         gradient steps             models.rnn
    linear       LinearModel    linear            N4SID (identification)     models.linear
    ensemble     Ensemble       (of trained models)                          models.ensemble

``build_model(kind, n_u=..., n_y=..., seed=0, **options)`` builds an untrained model of any name in
``MODEL_KINDS`` (a live view of the registry); ``register_kind(cls)`` adds a kind of your own, after which ``fit``,
``evaluate``, model files, ensembles, run configurations and the command line take it.
"""

from deepwiener.models.base import Model, SequenceStepper
from deepwiener.models.deepwiener import DeepWiener, ModelConfig
from deepwiener.models.ensemble import Ensemble
from deepwiener.models.lfr import LFRConfig, LFRModel
from deepwiener.models.linear import LinearConfig, LinearModel
from deepwiener.models.registry import (
    FILE_KINDS,
    MODEL_KINDS,
    build_model,
    kind_class,
    register_kind,
    resolve_name,
)
from deepwiener.models.rnn import RNNConfig, RNNModel
from deepwiener.models.streamers import Streamer

for _kind in (DeepWiener, LFRModel, RNNModel, LinearModel, Ensemble):
    register_kind(_kind)

__all__ = [
    "FILE_KINDS",
    "MODEL_KINDS",
    "DeepWiener",
    "Ensemble",
    "LFRConfig",
    "LFRModel",
    "LinearConfig",
    "LinearModel",
    "Model",
    "ModelConfig",
    "RNNConfig",
    "RNNModel",
    "SequenceStepper",
    "Streamer",
    "build_model",
    "kind_class",
    "register_kind",
    "resolve_name",
]
