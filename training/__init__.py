"""colord.training: everything around the model but serving it, one subpackage per job.

`prepare` (colord data) -> `samples` (read and augment) -> `train` (colord train) and
`evaluation` (colord eval, colord ablate); the `cli*` modules turn each command's flags into one
call. Nothing here imports colord.daemon: evaluation takes the colorizer its caller supplies.
"""
