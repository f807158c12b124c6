"""The training loop and what it needs: batching, optimizer, checkpoints, PEFT, losses.

Nothing here knows about any one task: the loop sees a model, batches and a loss function.
"""
