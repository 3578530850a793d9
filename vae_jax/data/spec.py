"""What a model needs to know about its dataset, without the data."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """The dataset facts that shape a model.

  Attributes:
    image_shape: (H, W, C) of one image.
    num_classes: label classes; 0 for an unlabelled dataset.
    num_train_examples: size of the training split (of the factor grid for ground-truth data):
      the N of estimates over the aggregate posterior (e.g. beta-TCVAE).
  """

  image_shape: tuple[int, int, int]
  num_classes: int
  num_train_examples: int
