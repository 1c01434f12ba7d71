"""The run application: the LightningModule, Trainer wiring, evaluation during training, loggers, run
artifacts, checkpoints and the evaluation of a finished run. It builds on the library (model/, data/, inference/,
evaluation/) below it."""
