"""rlm-local: Recursive Language Models on self-hosted open-weight models."""

from rlm_local.config import Budgets, EngineConfig, RLMConfig
from rlm_local.errors import RLMError
from rlm_local.rlm import RLM
from rlm_local.runtime.usage import RLMResult, Usage

__all__ = ["RLM", "Budgets", "EngineConfig", "RLMConfig", "RLMError", "RLMResult", "Usage"]
__version__ = "0.1.0"
