"""One model served by several processes or hosts through `mx.distributed`.

The process a client spawns with `--hostfile` is rank 0: it starts the other ranks
(launcher.py), speaks the protocol alone and decides everything; the other ranks
(peer.py, follower.py) replay its decisions (ops.py) so that every rank runs the same
batch step. docs/DISTRIBUTED.md shows how to run it.

Nothing is imported here: a peer must load its BLAS bridge before anything imports
`mlx.core`, and importing this package comes first.
"""
