"""config: typed, validated settings (schema), YAML + --set loading (loading), sweep spaces (space)."""
from lorabench.config.loading import (
                                      apply_overrides,
                                      dump_yaml,
                                      field_help,
                                      from_dict,
                                      load_config,
                                      read_yaml,
                                      resolve_paths,
                                      to_dict,
)
from lorabench.config.schema import (
                                      CompareConfig,
                                      DataConfig,
                                      ExperimentConfig,
                                      LoraConfig,
                                      ModelConfig,
                                      ModelEntry,
                                      SweepConfig,
                                      SweepMetric,
                                      SweepSection,
                                      TrainConfig,
)
from lorabench.errors import ConfigError

__all__ = ["CompareConfig", "ConfigError", "DataConfig", "ExperimentConfig", "LoraConfig", "ModelConfig", "ModelEntry",
           "SweepConfig", "SweepMetric", "SweepSection", "TrainConfig", "apply_overrides", "dump_yaml", "field_help",
           "from_dict", "load_config", "read_yaml", "resolve_paths", "to_dict"]
