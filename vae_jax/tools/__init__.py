"""Tools for a trained run: `python -m vae_jax.tools <command> --workdir=RUN [options]`.

Each command is a library function `run_<command>(run, **options) -> dict` on a run from
`open_run(workdir, checkpoint, dataset=...)`; it writes its files to `RUN/tools/` (images also to
TensorBoard there) and returns their paths under `files`. `COMMANDS` maps CLI names to
`(common.Command, run function)`.
"""

from vae_jax.tools import anomaly, generation, latent_map, reconstruction
from vae_jax.tools.common import ToolError, open_run, restore_run

__all__ = ["COMMANDS", "ToolError", "open_run", "restore_run"]

COMMANDS = {
  command.name: (command, run)
  for command, run in (
    (generation.SAMPLE, generation.run_sample),
    (reconstruction.RECONSTRUCT, reconstruction.run_reconstruct),
    (generation.INTERPOLATE, generation.run_interpolate),
    (generation.TRAVERSE, generation.run_traverse),
    (generation.ARITHMETIC, generation.run_arithmetic),
    (anomaly.ANOMALY, anomaly.run_anomaly),
    (reconstruction.DENOISE, reconstruction.run_denoise),
    (reconstruction.AUGMENT, reconstruction.run_augment),
    (latent_map.LATENT_MAP, latent_map.run_latent_map),
  )
}
