"""One trial = one frozen, typed config (this package: :mod:`.schema` the dataclasses,
:mod:`.landscape` the landscape section, :mod:`.validate` building them from dicts with every
rule, :mod:`.docs` the field documentation behind ``--help``).

Configs are plain frozen dataclasses grouped by concern. They cross process boundaries (Ray,
files, the command line) as nested dicts and are rebuilt with :func:`from_dict`, which checks
every key and value and raises one :class:`ConfigError` listing *every* problem, with a
"did you mean" hint for misspelt keys. Training code only ever sees a validated
:class:`TrialConfig`, never a raw dict.

The docstring under each field is the documentation: ``python -m harness run --help`` prints it.
Method names and their settings (``replay.settings``, ``interventions``, ``cl``) come from the
method registries (:mod:`.replay_methods`, :mod:`.interventions`, :mod:`.cl_methods`), which
document each setting under its field in the method's settings dataclass.
"""

from harness.config.docs import (
    field_docs,
    field_help,
    iter_fields,
    iter_intervention_settings,
    iter_method_settings,
    option_types,
    read_override,
    type_label,
)
from harness.config.errors import ConfigError
from harness.config.landscape import LandscapeConfig, grid_points
from harness.config.schema import (
    LEGACY_REPLAY_SETTINGS,
    RESOURCE_ONLY,
    Choices,
    DataConfig,
    EvalConfig,
    ModelConfig,
    ReplayConfig,
    ScaleConfig,
    TrainConfig,
    TrialConfig,
    computed_settings,
    method_settings,
)
from harness.config.validate import (
    from_dict,
    load_file,
    merge,
    parse_override,
    parse_typed,
    to_dict,
)

__all__ = [
    "LEGACY_REPLAY_SETTINGS",
    "RESOURCE_ONLY",
    "Choices",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "LandscapeConfig",
    "ModelConfig",
    "ReplayConfig",
    "ScaleConfig",
    "TrainConfig",
    "TrialConfig",
    "computed_settings",
    "field_docs",
    "field_help",
    "from_dict",
    "grid_points",
    "iter_fields",
    "iter_intervention_settings",
    "iter_method_settings",
    "load_file",
    "merge",
    "method_settings",
    "parse_override",
    "parse_typed",
    "option_types",
    "read_override",
    "to_dict",
    "type_label",
]
