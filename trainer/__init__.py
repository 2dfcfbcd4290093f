"""The child: builds the network an architecture describes, trains it, writes its result.

Its public surface, the only names code outside ``trainer/`` imports (``.importlinter``:
rooms-used-through-their-surface), each loaded on first use (``kubenas.surface``), so
importing this package loads nothing heavy; torch comes in with the names below:

    train_child(trial_id, experiment, architecture, trainer_config, store,
                cache_dir=None) -> ResultRecord              the child
    TrainerConfig.from_dict(d, where="trainer"), validate_trainer_config(d, space=, where=),
    require_image_dataset(...)                               its configuration
    load_dataset(name, path=None, validation_size=0.1, seed=0, split="search", store=None,
                 cache_dir=None)                             the data
    build_supernet, Batches, cosine_lr, path_accuracy, train_epoch_part, make_optimizer,
    resolve_device                                           what the one-process ENAS search
                                                             (kubenas.enas) trains with; on
    build_lm_supernet, TokenWindows, lm_path_reward,         the recurrent space (enas_rnn)
    train_lm_part, load_ptb, LMConfig                        and Penn Treebank
"""

from kubenas.surface import lazy_surface

SURFACE = {
    "train_child": "child:train_child",
    "TrainerConfig": "config:TrainerConfig",
    "validate_trainer_config": "config:validate_trainer_config",
    "require_image_dataset": "config:require_image_dataset",
    "load_dataset": "data:load_dataset",
    "build_supernet": "enas.networks:build_supernet",
    "Batches": "enas.shared:Batches",
    "cosine_lr": "enas.shared:cosine_lr",
    "path_accuracy": "enas.shared:path_accuracy",
    "train_epoch_part": "enas.shared:train_epoch_part",
    "build_lm_supernet": "builders.language_model:build_lm_supernet",
    "TokenWindows": "enas.language:TokenWindows",
    "lm_path_reward": "enas.language:lm_path_reward",
    "train_lm_part": "enas.language:train_lm_part",
    "load_ptb": "data.ptb:load_ptb",
    "LMConfig": "lm_config:LMConfig",
    "make_optimizer": "train:make_optimizer",
    "resolve_device": "train:resolve_device",
}
__all__ = sorted(SURFACE)
__getattr__ = lazy_surface(globals(), SURFACE)
