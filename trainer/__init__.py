"""The child: builds the network an architecture describes, trains it, writes its result.

    kubenas.trainer.child.train_child(trial_id, experiment, architecture, trainer_config,
                                      store, cache_dir=None) -> ResultRecord
    kubenas.trainer.config.TrainerConfig.from_dict(d, where="trainer")
    kubenas.trainer.data.load_dataset(name, path=None, validation_size=0.1, seed=0,
                                      split="search", store=None, cache_dir=None)
    kubenas.trainer.builders.cnn.build_cnn(architecture, input_shape, num_classes, ...)
    kubenas.trainer.export.export_torchscript(model, example_input, path)

Importing this package loads nothing heavy; torch comes in with the modules above.
"""
