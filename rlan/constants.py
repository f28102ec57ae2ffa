"""Token and class ids shared by the data pipeline, the model, the losses and the config (a module of its own,
outside rlan.data, so that loading a config imports no torch: `rlan` answers bad input in a fraction of a second).

Inputs: colours 0-9 plus PAD (10) for canvas cells that belong to no grid, so input embeddings have 11 rows.
Targets: colours 0-9 inside the expected output grid plus OUTSIDE (10) for canvas cells beyond it, so the
model predicts the output's size along with its colours; the output head therefore has 11 classes.

A collated batch (rlan.data.collate.collate_samples) is a dict of tensors on a square canvas of side L
(the batch's largest sample canvas; grids sit top-left):
    support_inputs   (B, N, L, L) long  demo inputs, PAD outside each grid and in empty slots
    support_outputs  (B, N, L, L) long  demo outputs, same padding
    support_mask     (B, N)       bool  True for real demo pairs, False for padding slots
    query_inputs     (B, L, L)    long  the query input, PAD outside the grid
    query_targets    (B, L, L)    long  0-9 inside the target grid, OUTSIDE elsewhere
    target_mask      (B, L, L)    bool  the sample's own S x S canvas: the cells the loss counts
    canvas_sizes     (B,)         long  S per sample
    target_sizes     (B, 2)       long  (height, width) of each target grid
plus the python lists task_ids, query_indices and augmentations (rlan.data.augment.Augmentation).
"""

NUM_COLORS = 10
PAD = 10  # input token for canvas cells outside a grid
OUTSIDE = 10  # target class for canvas cells outside the expected output grid
NUM_INPUT_TOKENS = NUM_COLORS + 1
NUM_CLASSES = NUM_COLORS + 1
MAX_GRID_SIDE = 30
