"""VAE on CelebA at 64x64x3 (8-bit) with residual conv bodies and a discretized logistic mixture.

Data: TFDS `celeb_a` (aligned faces, 218x178; 162,770 train / 19,962 test), centre-cropped to
148x148 and resized to 64x64 (antialiased bilinear) by tf.data before the images are held in
memory (2 GB for the training split). The 148-pixel crop is the common one in VAE code for
CelebA 64 (e.g. the torchvision pipelines of PyTorch-VAE and the RAE paper, Ghosh et al. 2020);
WAE (Tolstikhin et al. 2018) used 140. Neither was checked against the papers here; set
`--config.data.center_crop=140` for the other. Offline, put TFDS's five CelebA files
(`img_align_celeba.zip`, `list_eval_partition.txt`, `list_attr_celeba.txt`,
`list_landmarks_align_celeba.txt`, `identity_CelebA.txt`) in a folder and pass
`--config.data.manual_dir=<folder>`.

Model: as `cifar10_vae.py` with a fourth stage (64, 128, 256, 256 channels, down to 4x4) and a
256-d latent; p(x|z) a mixture of 10 discretized logistics with RGB coupling.

Literature: NVAE reports 2.03 bits/dim on CelebA 64 (Vahdat & Kautz 2020; not verified here,
and its crop may differ, which changes the figure). No figure of this config was measured on this
repository's CPU machine: the CelebA files are not on it; the full run needs a GPU for hours.

`--config=configs/celeba64_vae.py:quick`: small and short (2,000 steps), a pipeline check.
"""

import ml_collections

from configs import cifar10_vae


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  if variant not in ("", "quick"):
    raise ValueError(f"Unknown celeba64_vae variant {variant!r}; use '' or 'quick'.")
  config = cifar10_vae.get_config(variant)
  config.data.name = "celeb_a"
  config.data.center_crop = 148
  config.data.resize = 64
  if variant == "quick":
    config.model.conv_features = (32, 64, 128, 128)
  else:
    config.model.conv_features = (64, 128, 256, 256)
    config.model.latent_dim = 256
  return config
