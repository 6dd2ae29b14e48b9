"""The engine: a config built into an experiment, the one train step, the train loop, checkpoints
and the work directory a run lives in."""
