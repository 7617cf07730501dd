"""Plan before you rent a GPU: parameters, memory per GPU, FLOPs and training time of a config's models,
from config.json alone (`lorabench plan`)."""
from lorabench.planning.gpus import GPU, GPUS
from lorabench.planning.plan import Hardware, Memory, ModelPlan, Plan, format_plan, load_plan_config, plan

__all__ = ["GPU", "GPUS", "Hardware", "Memory", "ModelPlan", "Plan", "format_plan", "load_plan_config", "plan"]
