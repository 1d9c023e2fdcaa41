"""The three training stages, each a thin recipe around a TRL trainer.

mt   stage 1, mid-training (`SFTTrainer`, full next-token loss): `standard_mt` or `wm_amt` text
sft  stage 2, SFT (`SFTTrainer`, assistant-only loss): `sft`, `fe_sft` or `state_sft` episodes
rl   stage 3, RL (`GRPOTrainer` on multi-turn episodes): plain `rl` or `fc_rl` (span-level credit)

Every stage writes `runs/<run>/<stage>/` (see `common.py`) and resumes after an interruption.
"""

from .common import STAGES, StageMissing, stage_dir
from .midtrain import train_midtraining
from .rl import train_rl
from .sft import train_sft

__all__ = ["STAGES", "StageMissing", "stage_dir", "train_midtraining", "train_rl", "train_sft"]
