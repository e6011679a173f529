"""Amended-DARTS (Bi et al., 2019): DARTS with the amended architecture gradient (Eq. 7).

``g = d_alpha L_val - eta * d2_{alpha,w} L_train . H . d_w L_val`` (one Hessian-vector
product and one mixed second-derivative product at the current weights,
:func:`jaxdarts.hypergrad.amended`). The method fixes the estimator; ``eta`` is its option
(``cfg.estimator_options.eta``, 0.1 in the paper). Everything else is DARTS's engine
defaults (Adam, softmax mixing, alternating order); the paper's search settings are in
``configs/amended.py``.
"""

from jaxdarts.contract import ConfigError, Method


def defaults(cfg) -> None:
    cfg.estimator = "amended"
    cfg.estimator_options.eta = 0.1


def validate(cfg) -> None:
    if cfg.estimator != "amended":
        raise ConfigError(f"config.estimator={cfg.estimator!r} is not accepted by method 'amended'; accepted: "
                          "amended (use method=darts for the other estimators)")


METHOD = Method(name="amended", defaults=defaults, validate=validate)
