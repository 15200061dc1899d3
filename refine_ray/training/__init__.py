"""Training of the refinement GAN on Ray Train: config, per-worker loop, checkpoints, TorchTrainer assembly."""
from refine_ray.training.config import TrainConfig, load_train_config

__all__ = ["TrainConfig", "load_train_config", "train"]


def train(*args, **kwargs):
    """See `refine_ray.training.trainer.train` (imported lazily: Ray is heavy)."""
    from refine_ray.training.trainer import train as _train

    return _train(*args, **kwargs)
