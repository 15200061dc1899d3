"""Training of the refinement GAN on Ray Train: config, per-worker loop, checkpoints, TorchTrainer assembly."""
from refine_ray.training.config import TrainConfig, load_train_config
from refine_ray.training.trainer import train

__all__ = ["TrainConfig", "load_train_config", "train"]
